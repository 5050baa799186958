/* SPDX-License-Identifier: MIT */
/*
 * Thread-local error detail and logging, shared by every core file.
 */
#ifndef TKV_CORE_ERROR_H
#define TKV_CORE_ERROR_H

#include <stdarg.h>

/* Records the detail of a failure for this thread and returns status. */
int tkv_error(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int tkv_verror(int status, const char *fmt, va_list ap);
/* Prefixes the current detail with "prefix: " (adds context on the way out). */
void tkv_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void tkv_error_clear(void);

/* Logging: level is enum tkv_log_level (turbokv_plugin.h). Lines go to the
 * sink set by tkv_log_set_sink, else to stderr as "turbokv: LEVEL: msg". */
void tkv_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tkv_vlog(int level, const char *fmt, va_list ap);
/* The calling thread's log target (the context it is in, else stderr at
 * level warn); set returns the previous one. */
struct tkv_log_target;
const struct tkv_log_target *tkv_log_set_target(const struct tkv_log_target *t);
int tkv_log_get_level(void);

#endif
