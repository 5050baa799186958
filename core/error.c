/* SPDX-License-Identifier: MIT */
/*
 * Thread-local error detail and the log sink.
 */
#include "error.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core.h"
#include "turbokv.h"
#include "turbokv_plugin.h"

#define TKV_ERROR_MAX 1024

static _Thread_local char last_error[TKV_ERROR_MAX];

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

int tkv_verror(int status, const char *fmt, va_list ap)
{
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    return status;
}

int tkv_error(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tkv_verror(status, fmt, ap);
    va_end(ap);
    return status;
}

void tkv_error_prefix(const char *fmt, ...)
{
    char prefix[TKV_ERROR_MAX], old[TKV_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof old);
    /* "prefix: old", cut at the buffer's end */
    size_t p = strlen(prefix), o = strlen(old);
    if (p > TKV_ERROR_MAX - 3)
        p = TKV_ERROR_MAX - 3;
    if (o > TKV_ERROR_MAX - 3 - p)
        o = TKV_ERROR_MAX - 3 - p;
    memcpy(last_error, prefix, p);
    memcpy(last_error + p, ": ", 2);
    memcpy(last_error + p + 2, old, o);
    last_error[p + 2 + o] = '\0';
}

void tkv_error_clear(void) { last_error[0] = '\0'; }

const char *tkv_last_error(void) { return last_error; }

const char *tkv_status_name(int status)
{
    switch (status) {
    case TKV_OK: return "TKV_OK";
    case TKV_EINVAL: return "TKV_EINVAL";
    case TKV_ENOMEM: return "TKV_ENOMEM";
    case TKV_ERANGE: return "TKV_ERANGE";
    case TKV_EUNSUPPORTED: return "TKV_EUNSUPPORTED";
    case TKV_ENODEV: return "TKV_ENODEV";
    case TKV_EDEVICE: return "TKV_EDEVICE";
    case TKV_EIO: return "TKV_EIO";
    case TKV_EFORMAT: return "TKV_EFORMAT";
    case TKV_ECONFIG: return "TKV_ECONFIG";
    case TKV_EABI: return "TKV_EABI";
    case TKV_EPLUGIN: return "TKV_EPLUGIN";
    case TKV_ENOTFOUND: return "TKV_ENOTFOUND";
    case TKV_EBUSY: return "TKV_EBUSY";
    default: return "TKV_E?";
    }
}

/* Each context has its own level and sink (a host's logger must never be
 * called after its context is closed, and one context's "log:" must not change
 * another's); the thread inside a context logs to that context's target. */
static const struct tkv_log_target default_target = { .level = TKV_LOG_WARN };
static _Thread_local const struct tkv_log_target *current_target;

const struct tkv_log_target *tkv_log_set_target(const struct tkv_log_target *t)
{
    const struct tkv_log_target *prev = current_target;
    current_target = t;
    return prev;
}

int tkv_log_get_level(void) { return (current_target ? current_target : &default_target)->level; }

void tkv_vlog(int level, const char *fmt, va_list ap)
{
    static const char *names[] = { "error", "warning", "info", "debug" };
    const struct tkv_log_target *t = current_target ? current_target : &default_target;
    char msg[TKV_ERROR_MAX];
    if (level > t->level)
        return;
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (t->fn) {
        t->fn(t->user, level, msg);
        return;
    }
    pthread_mutex_lock(&log_lock);
    fprintf(stderr, "turbokv: %s: %s\n", names[level < 0 ? 0 : level > 3 ? 3 : level], msg);
    pthread_mutex_unlock(&log_lock);
}

void tkv_log(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tkv_vlog(level, fmt, ap);
    va_end(ap);
}
