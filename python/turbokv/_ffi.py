# SPDX-License-Identifier: MIT
"""ctypes mirror of abi/turbokv.h: the library, its structs and prototypes.

Every struct here mirrors its C struct member for member, in order, with the
same C types (python/tests/test_layout.py checks each against the header and,
where a C compiler is present, against the compiler's sizeof/offsetof).
"""

import ctypes
import ctypes.util
import os
import threading

from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char,
    c_char_p,
    c_double,
    c_float,
    c_int,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)

# The library's own name for "take the type from the configuration".
TYPE_FROM_CONFIG = 0xFFFFFFFF
BLOCK_TOKENS_DEFAULT = 256
POOL_FIXED = 1
U32_MAX = 0xFFFFFFFF

# void (*log_fn)(void *user, int level, const char *message)
LOG_FN = CFUNCTYPE(None, c_void_p, c_int, c_char_p)


class tkv_attention_stats(Structure):
    _fields_ = [
        ("rows_total", c_uint64),
        ("rows_skipped", c_uint64),
    ]


class tkv_cache_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("n_layers", c_uint32),
        ("n_kv_heads", c_uint32),
        ("head_dim", c_uint32),
        ("capacity", c_uint32),
        ("n_seqs", c_uint32),
        ("k_type", c_uint32),
        ("v_type", c_uint32),
        ("n_q_heads", c_uint32),
        ("reserved", c_uint32),
        ("layer_k_types", POINTER(c_uint32)),
        ("layer_v_types", POINTER(c_uint32)),
        ("rotation", c_uint32),
        ("scale_mode", c_uint32),
        ("block_tokens", c_uint32),
        ("pool_flags", c_uint32),
        ("pool_blocks", c_uint32),
        ("pool_max_blocks", c_uint32),
        ("reserved2", c_uint32),
        ("pool_max_bytes", c_uint64),
    ]


class tkv_context_options(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("ignore_env", c_uint32),
        ("config_path", c_char_p),
        ("plugin_path", c_char_p),
        ("backend", c_char_p),
        ("log_fn", LOG_FN),
        ("log_user", c_void_p),
        ("require", POINTER(tkv_cache_params)),
        ("probe_all", c_uint32),
        ("reserved", c_uint32),
        ("host_device", c_void_p),  # 0.5: struct tkv_host_device * (turbokv_device.h)
    ]


class tkv_config_entry(Structure):
    _fields_ = [
        ("key", c_char_p),
        ("env", c_char_p),
        ("value", c_char * 256),
        ("source", c_uint32),
        ("origin", c_char * 256),
    ]


class tkv_plugin_report(Structure):
    _fields_ = [
        ("path", c_char * 1024),
        ("name", c_char * 64),
        ("version", c_char * 64),
        ("abi_major", c_uint32),
        ("abi_minor", c_uint32),
        ("status", c_int),
        ("message", c_char * 512),
        ("n_devices", c_uint32),
        ("devices", (c_char * 256) * 4),
        ("in_use", c_int),
    ]


class tkv_attention_options(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("window", c_uint32),
        ("scale", c_float),
        ("softcap", c_float),
        ("lse", POINTER(c_float)),
        ("stats", POINTER(tkv_attention_stats)),
        ("device_ns", POINTER(c_uint64)),  # 0.3
    ]


class tkv_tensor(Structure):  # 0.4
    _fields_ = [
        ("struct_size", c_uint32),
        ("elem", c_uint32),
        ("memory", c_uint32),
        ("reserved", c_uint32),
        ("data", c_void_p),
        ("handle", c_uint64),  # 0.5: device memory
        ("offset", c_uint64),
        ("size", c_uint64),
    ]


ELEM_F32, ELEM_F16, ELEM_BF16 = 0, 1, 2


class tkv_cache_bytes(Structure):
    _fields_ = [
        ("used", c_uint64),
        ("capacity", c_uint64),
        ("used_f16", c_uint64),
        ("used_f32", c_uint64),
        ("blocks_bytes", c_uint64),
        ("limit", c_uint64),
        ("blocks_used", c_uint32),
        ("blocks_allocated", c_uint32),
        ("blocks_max", c_uint32),
        ("block_tokens", c_uint32),
    ]


class tkv_cache_stats(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("reserved", c_uint32),
        ("nonfinite_values", c_uint64),
        ("saturated_rows", c_uint64),
    ]


class tkv_cache_shape(Structure):
    _fields_ = [
        ("n_layers", c_uint32),
        ("n_kv_heads", c_uint32),
        ("head_dim", c_uint32),
        ("capacity", c_uint32),
        ("n_seqs", c_uint32),
        ("rotation", c_uint32),
        ("scale_mode", c_uint32),
        ("block_tokens", c_uint32),
    ]


class tkv_device_caps(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("features", c_uint32),
        ("k_types", c_uint32),
        ("v_types", c_uint32),
        ("rotations", c_uint32),
        ("scale_modes", c_uint32),
        ("head_dim_max", c_uint32),
        ("max_block_tokens", c_uint32),
        ("max_q_per_seq", c_uint32),
        ("reserved", c_uint32),
        ("max_buffer_bytes", c_uint64),
        ("reserved2", c_uint64 * 4),
    ]


# Every mirrored struct, by its C name (the layout test walks this).
STRUCTS = {
    cls.__name__: cls
    for cls in (
        tkv_context_options,
        tkv_config_entry,
        tkv_plugin_report,
        tkv_cache_params,
        tkv_attention_stats,
        tkv_attention_options,
        tkv_tensor,
        tkv_cache_bytes,
        tkv_cache_stats,
        tkv_cache_shape,
        tkv_device_caps,
    )
}

_ctx_p = c_void_p
_cache_p = c_void_p
_u32p = POINTER(c_uint32)
_f32p = POINTER(c_float)

# name: (restype, argtypes)
PROTOTYPES = {
    "tkv_last_error": (c_char_p, []),
    "tkv_status_name": (c_char_p, [c_int]),
    "tkv_type_name": (c_char_p, [c_uint32]),
    "tkv_type_from_name": (c_int, [c_char_p, _u32p]),
    "tkv_type_bits_per_value": (c_double, [c_uint32, c_uint32]),
    "tkv_optimal_mse": (c_int, [c_uint32, c_uint32, POINTER(c_double)]),
    "tkv_context_open": (c_int, [POINTER(tkv_context_options), POINTER(_ctx_p)]),
    "tkv_context_close": (None, [_ctx_p]),
    "tkv_context_backend": (c_char_p, [_ctx_p]),
    "tkv_context_device": (c_char_p, [_ctx_p]),
    "tkv_context_caps": (c_int, [_ctx_p, POINTER(tkv_device_caps)]),
    "tkv_context_set_command_buffer": (c_int, [_ctx_p, c_void_p]),  # 0.6: a VkCommandBuffer
    "tkv_config_count": (c_uint32, [_ctx_p]),
    "tkv_config_get": (c_int, [_ctx_p, c_uint32, POINTER(tkv_config_entry)]),
    "tkv_plugin_count": (c_uint32, [_ctx_p]),
    "tkv_plugin_get": (c_int, [_ctx_p, c_uint32, POINTER(tkv_plugin_report)]),
    "tkv_cache_create": (c_int, [_ctx_p, POINTER(tkv_cache_params), POINTER(_cache_p)]),
    "tkv_cache_destroy": (None, [_cache_p]),
    "tkv_cache_append": (c_int, [_cache_p, c_uint32, c_uint32, c_uint32, _f32p, _f32p]),
    "tkv_attention": (
        c_int,
        [_cache_p, c_uint32, c_uint32, _u32p, c_uint32, c_uint32, _f32p, _f32p, POINTER(tkv_attention_stats)],
    ),
    "tkv_attention_ex": (
        c_int,
        [_cache_p, c_uint32, c_uint32, _u32p, _u32p, c_uint32, _f32p, _f32p, POINTER(tkv_attention_options)],
    ),
    "tkv_cache_append_tensors": (
        c_int,
        [_cache_p, c_uint32, c_uint32, c_uint32, POINTER(tkv_tensor), POINTER(tkv_tensor)],
    ),
    "tkv_cache_append_attention": (
        c_int,
        [
            _cache_p,
            c_uint32,
            c_uint32,
            c_uint32,
            POINTER(tkv_tensor),
            POINTER(tkv_tensor),
            c_uint32,
            POINTER(tkv_tensor),
            POINTER(tkv_tensor),
            POINTER(tkv_attention_options),
        ],
    ),
    "tkv_attention_tensors": (
        c_int,
        [
            _cache_p,
            c_uint32,
            c_uint32,
            _u32p,
            _u32p,
            c_uint32,
            POINTER(tkv_tensor),
            POINTER(tkv_tensor),
            POINTER(tkv_attention_options),
        ],
    ),
    "tkv_cache_length": (c_int, [_cache_p, c_uint32, c_uint32, _u32p]),
    "tkv_cache_clear": (c_int, [_cache_p, c_uint32]),
    "tkv_seq_truncate": (c_int, [_cache_p, c_uint32, c_uint32]),
    "tkv_seq_copy": (c_int, [_cache_p, c_uint32, c_uint32, c_uint32]),
    "tkv_seq_remove": (c_int, [_cache_p, c_uint32]),
    "tkv_seq_keep": (c_int, [_cache_p, c_uint32]),
    "tkv_seq_state_size": (c_int, [_cache_p, c_uint32, POINTER(c_size_t)]),
    "tkv_seq_state_get": (c_int, [_cache_p, c_uint32, c_void_p, c_size_t, POINTER(c_size_t)]),
    "tkv_seq_state_set": (c_int, [_cache_p, c_uint32, c_void_p, c_size_t]),
    "tkv_seq_save": (c_int, [_cache_p, c_uint32, c_char_p]),
    "tkv_seq_restore": (c_int, [_cache_p, c_uint32, c_char_p]),
    "tkv_cache_bytes": (c_int, [_cache_p, POINTER(tkv_cache_bytes)]),
    "tkv_cache_stats": (c_int, [_cache_p, POINTER(tkv_cache_stats)]),
    "tkv_cache_get_shape": (c_int, [_cache_p, POINTER(tkv_cache_shape)]),
    "tkv_cache_layer_types": (c_int, [_cache_p, c_uint32, _u32p, _u32p]),
    "tkv_cache_dequantize": (c_int, [_cache_p, c_uint32, c_uint32, c_int, c_uint32, c_uint32, _f32p]),
    "tkv_cache_save": (c_int, [_cache_p, c_char_p]),
    "tkv_cache_load": (c_int, [_ctx_p, c_char_p, POINTER(_cache_p)]),
    "tkv_cache_restore": (c_int, [_cache_p, c_char_p]),
}


def candidates():
    """The library files tried, in order, as (where, path-or-name) pairs.

    TURBOKV_LIBRARY, else a libturbokv.so* next to the package, else the
    system's (ctypes.util.find_library), else the build tree of the checkout
    the package sits in (build/core/libturbokv.so).
    """
    out = []
    env = os.environ.get("TURBOKV_LIBRARY")
    if env:
        out.append(("TURBOKV_LIBRARY", env))
        return out  # an explicit choice is never silently replaced
    here = os.path.dirname(os.path.abspath(__file__))
    for name in sorted(os.listdir(here)):
        if name.startswith("libturbokv.so"):
            out.append(("package directory", os.path.join(here, name)))
    found = ctypes.util.find_library("turbokv")
    if found:
        out.append(("find_library", found))
    tree = os.path.join(here, os.pardir, os.pardir, "build", "core", "libturbokv.so")
    out.append(("build tree", os.path.normpath(tree)))
    return out


_lock = threading.Lock()
_lib = None
_lib_path = None


def lib():
    """The loaded library with every prototype set (loaded on first use)."""
    global _lib, _lib_path
    with _lock:
        if _lib is not None:
            return _lib
        tried = []
        for where, path in candidates():
            if where == "build tree" and not os.path.exists(path):
                tried.append("%s: %s (absent)" % (where, os.path.normpath(path)))
                continue
            try:
                handle = ctypes.CDLL(path)
            except OSError as e:
                tried.append("%s: %s" % (where, e))
                continue
            missing = [name for name in PROTOTYPES if not hasattr(handle, name)]
            if missing:
                tried.append("%s: %s lacks %s (not turbokv 0.2?)" % (where, path, ", ".join(missing)))
                continue
            for name, (restype, argtypes) in PROTOTYPES.items():
                fn = getattr(handle, name)
                fn.restype = restype
                fn.argtypes = argtypes
            _lib, _lib_path = handle, path
            return _lib
        raise OSError(
            "turbokv: cannot load libturbokv (set TURBOKV_LIBRARY to its path); tried:\n  " + "\n  ".join(tried)
        )


def library_path():
    """The path or name the library was loaded from (loading it if needed)."""
    lib()
    return _lib_path


def text(raw):
    """A C string (bytes or None) as str."""
    return "" if raw is None else raw.decode("utf-8", "replace")
