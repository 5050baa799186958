/* SPDX-License-Identifier: MIT */
/*
 * turbokv status codes, shared by the host API and the plugin ABI.
 *
 * Every call returns 0 (TKV_OK) or one of these negative codes; the values
 * never change (new codes are appended). The human-readable detail of the last
 * failure on the calling thread is available from tkv_last_error().
 */
#ifndef TURBOKV_STATUS_H
#define TURBOKV_STATUS_H

enum tkv_status {
    TKV_OK = 0,
    TKV_EINVAL = -1,       /* an argument is invalid (NULL, zero size, bad value) */
    TKV_ENOMEM = -2,       /* host or device memory exhausted */
    TKV_ERANGE = -3,       /* index out of range or capacity exceeded */
    TKV_EUNSUPPORTED = -4, /* type, head_dim or feature not supported */
    TKV_ENODEV = -5,       /* no usable device */
    TKV_EDEVICE = -6,      /* the device or its driver failed */
    TKV_EIO = -7,          /* a file could not be read or written */
    TKV_EFORMAT = -8,      /* a file is truncated, corrupted or does not match */
    TKV_ECONFIG = -9,      /* a configuration value or environment variable is wrong */
    TKV_EABI = -10,        /* plugin ABI version not supported by this core */
    TKV_EPLUGIN = -11,     /* a plugin failed to load or is malformed */
    TKV_ENOTFOUND = -12,   /* no such plugin, backend or file */
    TKV_EBUSY = -13,       /* the context is in use by another thread right now */
};

/* The level of a log line: what a host's log_fn receives, and what a
 * plugin passes to tkv_services.log. */
enum tkv_log_level { TKV_LOG_ERROR = 0, TKV_LOG_WARN = 1, TKV_LOG_INFO = 2, TKV_LOG_DEBUG = 3 };

#endif
