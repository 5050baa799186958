# SPDX-License-Identifier: MIT
"""The host API (abi/turbokv.h) over ctypes, with numpy arrays."""

import ctypes
import dataclasses
import enum
import operator
import os

import numpy as np

from . import _ffi
from ._errors import ERRORS, Error

# --- enums of the headers


class Type(enum.IntEnum):
    """enum tkv_type (turbokv_format.h)."""

    F32 = 0
    F16 = 1
    Q8_0 = 2
    TURBO2 = 3
    TURBO3 = 4
    TURBO4 = 5
    TURBO3_QJL = 6
    TURBO4_QJL = 7
    TURBO3_OUT = 8
    TURBO4_OUT = 9


class Rotation(enum.IntEnum):
    """enum tkv_rotation; 0 in a cache's parameters means "as configured"."""

    WHT = 1
    DENSE = 2
    NONE = 3
    ROTOR = 4


class ScaleMode(enum.IntEnum):
    """enum tkv_scale_mode; 0 in a cache's parameters means "as configured"."""

    NORM = 1
    NORM_CORRECTED = 2


class Feature(enum.IntFlag):
    """enum tkv_cap_feature (turbokv_caps.h)."""

    PAGED = 1 << 0
    MIXED_NQ = 1 << 1
    WINDOW = 1 << 2
    SOFTCAP = 1 << 3
    LSE = 1 << 4
    BUFFER_COPY = 1 << 5
    DEVICE_TENSORS = 1 << 6
    ASYNC = 1 << 7


class ConfigSource(enum.IntEnum):
    """enum tkv_config_source: where a configuration value came from."""

    DEFAULT = 0
    FILE = 1
    ENV = 2
    API = 3


class LogLevel(enum.IntEnum):
    """The levels a log callback receives (TKV_LOG_*)."""

    ERROR = 0
    WARN = 1
    INFO = 2
    DEBUG = 3


# --- results


@dataclasses.dataclass(frozen=True)
class DeviceCaps:
    """struct tkv_device_caps, its bit masks decoded into names."""

    features: Feature
    k_types: tuple  # type names ("f32", "turbo3", ...) a key row may be stored in
    v_types: tuple
    rotations: tuple  # "wht", "dense", "none"
    scale_modes: tuple  # "norm", "norm_corrected"
    head_dim_max: int
    max_block_tokens: int  # 0: no limit
    max_q_per_seq: int  # 0: no limit
    max_buffer_bytes: int  # 0: no limit


@dataclasses.dataclass(frozen=True)
class ConfigEntry:
    """struct tkv_config_entry: one effective configuration value."""

    key: str
    env: str  # the TURBO_* variable that overrides it, "" if none
    value: str
    source: ConfigSource
    origin: str  # "default", "FILE:LINE", "TURBO_X"


@dataclasses.dataclass(frozen=True)
class PluginReport:
    """struct tkv_plugin_report: one plugin file found."""

    path: str
    name: str
    version: str
    abi_major: int
    abi_minor: int
    status: int  # 0 if accepted, else the negative status why it was refused
    status_name: str
    message: str
    n_devices: int
    devices: tuple  # "name (driver, score N)" of the first (at most 4) devices
    in_use: bool

    @property
    def ok(self):
        return self.status == 0


@dataclasses.dataclass(frozen=True)
class CacheShape:
    """struct tkv_cache_shape."""

    n_layers: int
    n_kv_heads: int
    head_dim: int
    capacity: int
    n_seqs: int
    rotation: Rotation
    scale_mode: ScaleMode
    block_tokens: int


@dataclasses.dataclass(frozen=True)
class CacheBytes:
    """struct tkv_cache_bytes."""

    used: int
    capacity: int
    used_f16: int
    used_f32: int
    blocks_bytes: int
    limit: int
    blocks_used: int
    blocks_allocated: int
    blocks_max: int
    block_tokens: int


@dataclasses.dataclass(frozen=True)
class AttentionStats:
    """struct tkv_attention_stats."""

    rows_total: int
    rows_skipped: int


# --- helpers


def _check(rc, function):
    if rc != 0:
        lib = _ffi.lib()
        raise ERRORS.get(rc, Error)(rc, _ffi.text(lib.tkv_status_name(rc)), _ffi.text(lib.tkv_last_error()), function)


def _u32(value, what):
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError("%s must be an integer, got %s" % (what, type(value).__name__)) from None
    if not 0 <= v <= _ffi.U32_MAX:
        raise ValueError("%s must be in 0 .. %d, got %d" % (what, _ffi.U32_MAX, v))
    return v


def _u32_list(values, what):
    if isinstance(values, (str, bytes)):
        raise TypeError("%s must be an integer or a sequence of integers, got %s" % (what, type(values).__name__))
    try:
        items = list(values)
    except TypeError:
        return [_u32(values, what)]
    return [_u32(v, "%s[%d]" % (what, i)) for i, v in enumerate(items)]


def _u32_array(values):
    return (ctypes.c_uint32 * len(values))(*values)


def _path(path, what="path"):
    try:
        p = os.fsencode(path)
    except TypeError:
        raise TypeError("%s must be a str, bytes or os.PathLike, got %s" % (what, type(path).__name__)) from None
    if b"\0" in p:
        raise ValueError("%s contains a NUL byte" % what)
    return p


def _f32_ptr(a):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


def _tensor(a):
    """A struct tkv_tensor for a float32 or float16 ndarray (host memory)."""
    t = _ffi.tkv_tensor()
    t.struct_size = ctypes.sizeof(t)
    t.elem = _ffi.ELEM_F16 if a.dtype == np.float16 else _ffi.ELEM_F32
    t.data = a.ctypes.data
    return t


def _options(scale, window, softcap):
    """A struct tkv_attention_options with the attention's keyword arguments."""
    o = _ffi.tkv_attention_options()
    o.struct_size = ctypes.sizeof(o)
    o.window = _u32(window, "window")
    o.scale = 0.0 if scale is None else float(scale)
    o.softcap = float(softcap)
    if scale is not None and o.scale == 0.0:
        raise ValueError("scale %r is 0 (pass None for 1/sqrt(head_dim))" % (scale,))
    return o


def _out_array(out, q, **inputs):
    """The attention's output array: a new one like q, or the caller's,
    which must have q's shape, be writeable and overlap neither q nor the
    other inputs named (k=..., v=...)."""
    if out is None:
        return np.empty_like(q)
    _check_array(out, "out", q.shape, "q's shape", writeable=True, half=True)
    for name, a in [("q", q)] + sorted(inputs.items()):
        if np.may_share_memory(out, a):
            raise ValueError("out overlaps " + name)
    return out


def _check_array(a, what, shape, layout, writeable=False, half=False):
    """a must be a C-contiguous, aligned float32 ndarray of shape (or float16
    where half); None in shape matches any size."""
    kinds = "float32 or float16" if half else "float32"
    if not isinstance(a, np.ndarray):
        raise TypeError("%s must be a numpy.ndarray of %s %s, got %s" % (what, kinds, layout, type(a).__name__))
    if a.dtype != np.float32 and not (half and a.dtype == np.float16):
        raise TypeError(
            "%s has dtype %s, expected %s (convert it with %s.astype(numpy.float32))" % (what, a.dtype, kinds, what)
        )
    if a.ndim != len(shape) or any(want is not None and got != want for got, want in zip(a.shape, shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError("%s has shape %s, expected %s = %s" % (what, a.shape, want, layout))
    if not a.flags.c_contiguous or not a.flags.aligned:
        raise ValueError(
            "%s is not a C-contiguous aligned array (pass numpy.ascontiguousarray(%s))" % (what, what)
        )
    if writeable and not a.flags.writeable:
        raise ValueError("%s is read-only" % what)


def _type_value(t, what):
    """A type given as a name, an int (enum tkv_type) or None (from the configuration)."""
    if t is None:
        return _ffi.TYPE_FROM_CONFIG
    if isinstance(t, str):
        return int(type_from_name(t))
    return _u32(t, what)


def _enum_value(value, enum_cls, what):
    """0 for None, else an enum member given by name or number."""
    if value is None:
        return 0
    if isinstance(value, str):
        try:
            return int(enum_cls[value.upper()])
        except KeyError:
            names = ", ".join(m.name.lower() for m in enum_cls)
            raise ValueError("%s %r unknown (one of %s)" % (what, value, names)) from None
    return _u32(value, what)


def _names(mask, name_of, first=0):
    return tuple(name_of(i) for i in range(first, 32) if mask & (1 << i))


def _type_label(t):
    raw = _ffi.lib().tkv_type_name(t)
    return _ffi.text(raw) if raw is not None else "type %d" % t


def _enum_label(enum_cls, i):
    try:
        return enum_cls(i).name.lower()
    except ValueError:
        return "%s %d" % (enum_cls.__name__.lower(), i)


def _enum_or_int(enum_cls, i):
    try:
        return enum_cls(i)
    except ValueError:
        return i


# --- names and numbers


def last_error():
    """tkv_last_error(): the detail of this thread's last failure ("" if none)."""
    return _ffi.text(_ffi.lib().tkv_last_error())


def status_name(status):
    """tkv_status_name(): "TKV_OK", "TKV_EINVAL", ..."""
    return _ffi.text(_ffi.lib().tkv_status_name(int(status)))


def type_name(t):
    """tkv_type_name(): "f32", "turbo3", ...; None for an unknown type."""
    raw = _ffi.lib().tkv_type_name(_u32(t, "type"))
    return None if raw is None else _ffi.text(raw)


def type_from_name(name):
    """tkv_type_from_name(): the Type of a name; InvalidArgumentError listing the names if unknown."""
    if not isinstance(name, str):
        raise TypeError("type name must be a str, got %s" % type(name).__name__)
    t = ctypes.c_uint32()
    _check(_ffi.lib().tkv_type_from_name(name.encode(), ctypes.byref(t)), "tkv_type_from_name")
    return _enum_or_int(Type, t.value)


def type_bits_per_value(t, head_dim):
    """tkv_type_bits_per_value(): stored bits per value at head_dim, scales included (0 for unknown input)."""
    return _ffi.lib().tkv_type_bits_per_value(_type_value(t, "type"), _u32(head_dim, "head_dim"))


def optimal_mse(t, head_dim):
    """tkv_optimal_mse(): the per-vector MSE a turbo type should reach on random unit vectors."""
    mse = ctypes.c_double()
    _check(
        _ffi.lib().tkv_optimal_mse(_type_value(t, "type"), _u32(head_dim, "head_dim"), ctypes.byref(mse)),
        "tkv_optimal_mse",
    )
    return mse.value


def _cache_params(
    n_layers,
    n_kv_heads,
    head_dim,
    capacity,
    n_seqs=1,
    k_type=None,
    v_type=None,
    n_q_heads=0,
    block_tokens=0,
    layer_k_types=None,
    layer_v_types=None,
    rotation=None,
    scale_mode=None,
    pool_blocks=0,
    pool_max_blocks=0,
    pool_fixed=False,
    pool_max_bytes=0,
):
    """A struct tkv_cache_params and the arrays it points to (keep both alive)."""
    p = _ffi.tkv_cache_params()
    p.struct_size = ctypes.sizeof(p)
    p.n_layers = _u32(n_layers, "n_layers")
    p.n_kv_heads = _u32(n_kv_heads, "n_kv_heads")
    p.head_dim = _u32(head_dim, "head_dim")
    p.capacity = _u32(capacity, "capacity")
    p.n_seqs = _u32(n_seqs, "n_seqs")
    p.k_type = _type_value(k_type, "k_type")
    p.v_type = _type_value(v_type, "v_type")
    p.n_q_heads = _u32(n_q_heads, "n_q_heads")
    p.block_tokens = _u32(block_tokens, "block_tokens")
    p.rotation = _enum_value(rotation, Rotation, "rotation")
    p.scale_mode = _enum_value(scale_mode, ScaleMode, "scale_mode")
    p.pool_blocks = _u32(pool_blocks, "pool_blocks")
    p.pool_max_blocks = _u32(pool_max_blocks, "pool_max_blocks")
    p.pool_flags = _ffi.POOL_FIXED if pool_fixed else 0
    if not isinstance(pool_max_bytes, int) or not 0 <= pool_max_bytes < 1 << 64:
        raise ValueError("pool_max_bytes must be an integer in [0, 2**64), got %r" % (pool_max_bytes,))
    p.pool_max_bytes = pool_max_bytes
    keep = []
    for member, types in (("layer_k_types", layer_k_types), ("layer_v_types", layer_v_types)):
        if types is None:
            continue
        if isinstance(types, (str, bytes)) or len(types) != p.n_layers:
            raise ValueError("%s must hold one type per layer (%d), got %r" % (member, p.n_layers, types))
        arr = _u32_array([_type_value(t, "%s[%d]" % (member, i)) for i, t in enumerate(types)])
        keep.append(arr)
        setattr(p, member, ctypes.cast(arr, ctypes.POINTER(ctypes.c_uint32)))
    return p, keep


# --- context


class Context:
    """A turbokv context: the configuration, the plugins and one open device.

    Context(backend=None, config_path=None, plugin_path=None, ignore_env=False,
    log=None, require=None, probe_all=False)

    backend: a plugin name ("cpu", "vulkan", "opencl") or "auto"; None: from
    the configuration. config_path: a YAML file (None: TURBO_CONFIG, else the
    installed default). plugin_path: a directory or a list of directories
    searched first. ignore_env: do not read TURBO_* variables. log: a
    callable(level: LogLevel, message: str) receiving this context's log
    lines instead of stderr. require: a dict of Context.cache() arguments;
    backend auto then picks only a device that can hold such a cache.
    probe_all: load and probe every plugin found even when one is named.

    A context and its caches may be used from one thread at a time (another
    thread's call raises BusyError). close() destroys the caches still open.
    """

    def __init__(
        self,
        backend=None,
        config_path=None,
        plugin_path=None,
        ignore_env=False,
        log=None,
        require=None,
        probe_all=False,
    ):
        self._lib = _ffi.lib()
        self._handle = None
        self._caches = set()  # _CacheHandle of every cache still open
        self._caps = None
        o = _ffi.tkv_context_options()
        o.struct_size = ctypes.sizeof(o)
        o.ignore_env = 1 if ignore_env else 0
        o.probe_all = 1 if probe_all else 0
        if config_path is not None:
            o.config_path = _path(config_path, "config_path")
        if plugin_path is not None:
            if isinstance(plugin_path, (list, tuple)):
                plugin_path = b":".join(_path(p, "plugin_path") for p in plugin_path)
            o.plugin_path = _path(plugin_path, "plugin_path")
        if backend is not None:
            if not isinstance(backend, str):
                raise TypeError("backend must be a str, got %s" % type(backend).__name__)
            o.backend = backend.encode()
        self._log_fn = None
        if log is not None:
            if not callable(log):
                raise TypeError("log must be callable(level, message), got %s" % type(log).__name__)

            def trampoline(user, level, message, log=log):
                # An exception here cannot cross the C library: ctypes
                # reports it through sys.unraisablehook and goes on.
                log(_enum_or_int(LogLevel, level), _ffi.text(message))

            # The library keeps the pointer until tkv_context_close: so do we.
            self._log_fn = _ffi.LOG_FN(trampoline)
            o.log_fn = self._log_fn
        if require is not None:
            if not isinstance(require, dict):
                raise TypeError("require must be a dict of Context.cache() arguments")
            req, req_keep = _cache_params(**require)
            o.require = ctypes.pointer(req)
        handle = ctypes.c_void_p()
        _check(self._lib.tkv_context_open(ctypes.byref(o), ctypes.byref(handle)), "tkv_context_open")
        self._handle = handle

    def _h(self):
        if self._handle is None:
            raise ValueError("the turbokv context is closed")
        return self._handle

    @property
    def closed(self):
        return self._handle is None

    def close(self):
        """Destroys the caches still open, then closes the device and unloads the plugins."""
        if self._handle is None:
            return
        for c in list(self._caches):
            c.destroy(self._lib)
        self._caches.clear()
        self._lib.tkv_context_close(self._handle)
        self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_handle", None) is not None:
            self.close()

    def __repr__(self):
        if self._handle is None:
            return "<turbokv.Context closed>"
        return "<turbokv.Context backend=%r device=%r>" % (self.backend, self.device)

    @property
    def backend(self):
        """The name of the backend plugin in use."""
        return _ffi.text(self._lib.tkv_context_backend(self._h()))

    @property
    def device(self):
        """The name of the device in use."""
        return _ffi.text(self._lib.tkv_context_device(self._h()))

    @property
    def caps(self):
        """What the open device supports (DeviceCaps)."""
        h = self._h()
        if self._caps is None:
            c = _ffi.tkv_device_caps()
            c.struct_size = ctypes.sizeof(c)
            _check(self._lib.tkv_context_caps(h, ctypes.byref(c)), "tkv_context_caps")
            self._caps = DeviceCaps(
                features=Feature(c.features),
                k_types=_names(c.k_types, _type_label),
                v_types=_names(c.v_types, _type_label),
                # bit 0 is never a rotation or scale mode (0 means "as
                # configured"), whatever a plugin sets there
                rotations=_names(c.rotations, lambda i: _enum_label(Rotation, i), 1),
                scale_modes=_names(c.scale_modes, lambda i: _enum_label(ScaleMode, i), 1),
                head_dim_max=c.head_dim_max,
                max_block_tokens=c.max_block_tokens,
                max_q_per_seq=c.max_q_per_seq,
                max_buffer_bytes=c.max_buffer_bytes,
            )
        return self._caps

    def config(self):
        """Every effective configuration value with its source (list of ConfigEntry)."""
        h = self._h()
        out = []
        for i in range(self._lib.tkv_config_count(h)):
            e = _ffi.tkv_config_entry()
            _check(self._lib.tkv_config_get(h, i, ctypes.byref(e)), "tkv_config_get")
            out.append(
                ConfigEntry(
                    key=_ffi.text(e.key),
                    env=_ffi.text(e.env),
                    value=_ffi.text(e.value),
                    source=_enum_or_int(ConfigSource, e.source),
                    origin=_ffi.text(e.origin),
                )
            )
        return out

    def plugins(self):
        """Every plugin file found, accepted or why refused (list of PluginReport)."""
        h = self._h()
        out = []
        for i in range(self._lib.tkv_plugin_count(h)):
            r = _ffi.tkv_plugin_report()
            _check(self._lib.tkv_plugin_get(h, i, ctypes.byref(r)), "tkv_plugin_get")
            out.append(
                PluginReport(
                    path=_ffi.text(r.path),
                    name=_ffi.text(r.name),
                    version=_ffi.text(r.version),
                    abi_major=r.abi_major,
                    abi_minor=r.abi_minor,
                    status=r.status,
                    status_name=status_name(r.status),
                    message=_ffi.text(r.message),
                    n_devices=r.n_devices,
                    devices=tuple(_ffi.text(r.devices[d].value) for d in range(min(r.n_devices, 4))),
                    in_use=bool(r.in_use),
                )
            )
        return out

    def cache(
        self,
        n_layers,
        n_kv_heads,
        head_dim,
        capacity,
        n_seqs=1,
        k_type=None,
        v_type=None,
        n_q_heads=0,
        block_tokens=0,
        layer_k_types=None,
        layer_v_types=None,
        rotation=None,
        scale_mode=None,
        pool_blocks=0,
        pool_max_blocks=0,
        pool_fixed=False,
        pool_max_bytes=0,
    ):
        """Creates a cache on this context's device (tkv_cache_create).

        k_type, v_type: a type name ("turbo3", "q8_0", ...), a Type, or None
        for the configuration's choice. layer_k_types, layer_v_types: one type
        per layer, overriding them. rotation ("wht", "dense", "none") and
        scale_mode ("norm", "norm_corrected"): None as configured.
        block_tokens: rows per kv head per block (0: 256; >= capacity: one
        block per sequence). pool_blocks: blocks reserved now; pool_max_blocks:
        the pool's limit (0: n_seqs full sequences); pool_max_bytes: the limit
        in bytes, all layers, K and V (0: none); pool_fixed: never grow past
        pool_blocks.
        """
        h = self._h()
        p, keep = _cache_params(
            n_layers, n_kv_heads, head_dim, capacity, n_seqs, k_type, v_type, n_q_heads, block_tokens,
            layer_k_types, layer_v_types, rotation, scale_mode, pool_blocks, pool_max_blocks, pool_fixed,
            pool_max_bytes,
        )  # fmt: skip
        out = ctypes.c_void_p()
        _check(self._lib.tkv_cache_create(h, ctypes.byref(p), ctypes.byref(out)), "tkv_cache_create")
        del keep
        return Cache._adopt(self, out)

    def load(self, path):
        """Creates a cache from a file written by Cache.save (tkv_cache_load)."""
        h = self._h()
        out = ctypes.c_void_p()
        _check(self._lib.tkv_cache_load(h, _path(path), ctypes.byref(out)), "tkv_cache_load")
        return Cache._adopt(self, out)


class _CacheHandle:
    """The tkv_cache pointer, shared by a Cache and its Context: whichever
    closes first destroys it, so the context never outlives a cache's device
    memory and a cache is never destroyed twice, in any finalization order."""

    __slots__ = ("ptr",)

    def __init__(self, ptr):
        self.ptr = ptr

    def destroy(self, lib):
        if self.ptr is not None:
            lib.tkv_cache_destroy(self.ptr)
            self.ptr = None


def _which(which):
    if isinstance(which, str):
        w = which.lower()
        if w in ("k", "key", "keys"):
            return 0
        if w in ("v", "value", "values"):
            return 1
    elif not isinstance(which, bool) and which in (0, 1):
        return int(which)
    raise ValueError("which must be 0 / 'k' (keys) or 1 / 'v' (values), got %r" % (which,))


class Cache:
    """A compressed K/V cache on a context's device (create it with
    Context.cache or Context.load). Arrays in and out are numpy float32,
    C-contiguous; rows are [n_tokens][n_kv_heads][head_dim]."""

    def __init__(self):
        raise TypeError("create a cache with Context.cache() or Context.load()")

    @classmethod
    def _adopt(cls, ctx, ptr):
        self = object.__new__(cls)
        self._ctx = ctx
        self._lib = ctx._lib
        self._handle = _CacheHandle(ptr)
        ctx._caches.add(self._handle)
        s = _ffi.tkv_cache_shape()
        _check(self._lib.tkv_cache_get_shape(ptr, ctypes.byref(s)), "tkv_cache_get_shape")
        self._shape = CacheShape(
            n_layers=s.n_layers,
            n_kv_heads=s.n_kv_heads,
            head_dim=s.head_dim,
            capacity=s.capacity,
            n_seqs=s.n_seqs,
            rotation=_enum_or_int(Rotation, s.rotation),
            scale_mode=_enum_or_int(ScaleMode, s.scale_mode),
            block_tokens=s.block_tokens,
        )
        return self

    def _h(self):
        h = self._handle.ptr
        if h is None:
            raise ValueError("the turbokv cache is closed" + (" (its context was closed)" if self._ctx.closed else ""))
        return h

    @property
    def closed(self):
        return self._handle.ptr is None

    @property
    def context(self):
        return self._ctx

    def close(self):
        """Frees the cache's device memory (tkv_cache_destroy)."""
        self._handle.destroy(self._lib)
        self._ctx._caches.discard(self._handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.ptr is not None:
            self.close()

    def __repr__(self):
        if self.closed:
            return "<turbokv.Cache closed>"
        return "<turbokv.Cache %s>" % (self._shape,)

    @property
    def shape(self):
        """The geometry (CacheShape); fixed for the cache's life."""
        self._h()
        return self._shape

    def _rows_layout(self):
        s = self._shape
        return (None, s.n_kv_heads, s.head_dim), "[n_tokens][n_kv_heads=%d][head_dim=%d]" % (
            s.n_kv_heads,
            s.head_dim,
        )

    def append(self, seq, layer, k, v):
        """Quantizes and stores the K and V rows of new tokens of one layer of
        one sequence after those already there: k and v are float32 or
        float16 [n_tokens][n_kv_heads][head_dim], keys after RoPE (float16
        is widened exactly: the bytes stored are those of k.astype(float32))."""
        h = self._h()
        seq, layer = _u32(seq, "seq"), _u32(layer, "layer")
        shape, layout = self._rows_layout()
        _check_array(k, "k", shape, layout, half=True)
        _check_array(v, "v", (k.shape[0],) + shape[1:], layout + " like k", half=True)
        if k.dtype == np.float32 and v.dtype == np.float32:
            rc = self._lib.tkv_cache_append(h, seq, layer, k.shape[0], _f32_ptr(k), _f32_ptr(v))
            _check(rc, "tkv_cache_append")
        else:
            kt, vt = _tensor(k), _tensor(v)
            rc = self._lib.tkv_cache_append_tensors(h, seq, layer, k.shape[0], ctypes.byref(kt), ctypes.byref(vt))
            _check(rc, "tkv_cache_append_tensors")

    def attention(
        self,
        layer,
        seq_ids,
        q,
        n_q=None,
        scale=None,
        window=0,
        softcap=0.0,
        return_lse=False,
        return_stats=False,
        out=None,
    ):
        """Decode attention for one layer over one or several sequences.

        The queries of sequence seq_ids[s] are its last n_q[s] stored tokens,
        causal among themselves. q is float32 or float16, either
          [n_seqs][n_q][n_q_heads][head_dim] (n_q the same for every sequence), or
          [n_q_total][n_q_heads][head_dim], the rows of seq_ids[0] first, with
          n_q an int (every sequence), a list (one count per sequence), or
          None (n_q_total / n_seqs each).
        n_q_heads must be a multiple of n_kv_heads (GQA).
        scale: None for 1/sqrt(head_dim); window: only the last window
        positions visible (0: all); softcap: c * tanh(x / c) on the scores
        (0: off). Returns out (q's shape), and, when asked, lse (q's shape
        without head_dim: natural-log sum-exp of the scores of each output
        row) and the AttentionStats, in that order. out= takes a float32
        or float16 array of q's shape to write into (default: q's dtype; a
        float16 out is the float32 result rounded to nearest even).
        """
        h = self._h()
        layer = _u32(layer, "layer")
        scalar_seq = not isinstance(seq_ids, (list, tuple, np.ndarray, range))
        ids = _u32_list(seq_ids, "seq_ids")
        n_seqs = len(ids)
        if n_seqs == 0:
            raise ValueError("seq_ids is empty")
        d = self._shape.head_dim
        if not isinstance(q, np.ndarray) or q.ndim not in (3, 4):
            _check_array(q, "q", (None, None, d), "[n_q_total][n_q_heads][head_dim=%d]" % d, half=True)
        if q.ndim == 4:
            if scalar_seq:
                raise ValueError("q is 4-D [n_seqs][n_q][n_q_heads][head_dim]: seq_ids must be a list")
            _check_array(
                q, "q", (n_seqs, None, None, d), "[n_seqs=%d][n_q][n_q_heads][head_dim=%d]" % (n_seqs, d), half=True
            )
            if n_q is not None and _u32(n_q, "n_q (with a 4-D q)") != q.shape[1]:
                raise ValueError("n_q = %r disagrees with q's shape %s (n_q is q.shape[1])" % (n_q, q.shape))
            counts = [q.shape[1]] * n_seqs
        else:
            _check_array(q, "q", (None, None, d), "[n_q_total][n_q_heads][head_dim=%d]" % d, half=True)
            if n_q is None:
                if q.shape[0] % n_seqs:
                    raise ValueError(
                        "q has %d query rows, not a multiple of the %d sequences (pass n_q)" % (q.shape[0], n_seqs)
                    )
                counts = [q.shape[0] // n_seqs] * n_seqs
            elif isinstance(n_q, (list, tuple, np.ndarray)):
                counts = _u32_list(n_q, "n_q")
                if len(counts) != n_seqs:
                    raise ValueError("n_q has %d counts for %d sequences" % (len(counts), n_seqs))
            else:
                counts = [_u32(n_q, "n_q")] * n_seqs
            if sum(counts) != q.shape[0]:
                raise ValueError("q has %d query rows, n_q adds up to %d" % (q.shape[0], sum(counts)))
        n_q_heads = q.shape[-2]
        out = _out_array(out, q)
        lse = np.empty(q.shape[:-1], dtype=np.float32) if return_lse else None
        stats = _ffi.tkv_attention_stats()
        stats_p = ctypes.pointer(stats) if return_stats else None
        ids_a = _u32_array(ids)
        uniform = all(c == counts[0] for c in counts)
        typed = q.dtype != np.float32 or out.dtype != np.float32
        if uniform and scale is None and not window and not softcap and not return_lse and not typed:
            rc = self._lib.tkv_attention(
                h, layer, n_seqs, ids_a, counts[0], n_q_heads, _f32_ptr(q), _f32_ptr(out), stats_p
            )
            _check(rc, "tkv_attention")
        else:
            o = _options(scale, window, softcap)
            if lse is not None:
                o.lse = _f32_ptr(lse)
            o.stats = stats_p
            nq_a = _u32_array(counts)
            if typed:
                qt, ot = _tensor(q), _tensor(out)
                rc = self._lib.tkv_attention_tensors(
                    h, layer, n_seqs, ids_a, nq_a, n_q_heads, ctypes.byref(qt), ctypes.byref(ot), ctypes.byref(o)
                )
                _check(rc, "tkv_attention_tensors")
            else:
                rc = self._lib.tkv_attention_ex(
                    h, layer, n_seqs, ids_a, nq_a, n_q_heads, _f32_ptr(q), _f32_ptr(out), ctypes.byref(o)
                )
                _check(rc, "tkv_attention_ex")
        result = [out]
        if return_lse:
            result.append(lse)
        if return_stats:
            result.append(AttentionStats(stats.rows_total, stats.rows_skipped))
        return result[0] if len(result) == 1 else tuple(result)

    def append_attention(self, seq, layer, k, v, q, scale=None, window=0, softcap=0.0, return_stats=False, out=None):
        """A decode step of one layer of one sequence in one call: append(seq,
        layer, k, v), then attention(layer, seq, q) of the new tokens' queries
        (each sees the sequence up to its own position). k, v: float32 or
        float16 [n_tokens][n_kv_heads][head_dim]; q: [n_tokens][n_q_heads]
        [head_dim]. Returns out (q's shape), and the AttentionStats when
        asked. A backend with the fused op quantizes the new rows inside the
        attention (one launch); the result is the two calls'. On an error
        nothing is stored."""
        h = self._h()
        seq, layer = _u32(seq, "seq"), _u32(layer, "layer")
        shape, layout = self._rows_layout()
        _check_array(k, "k", shape, layout, half=True)
        _check_array(v, "v", (k.shape[0],) + shape[1:], layout + " like k", half=True)
        d = self._shape.head_dim
        _check_array(
            q, "q", (k.shape[0], None, d), "[n_tokens=%d][n_q_heads][head_dim=%d]" % (k.shape[0], d), half=True
        )
        out = _out_array(out, q, k=k, v=v)
        stats = _ffi.tkv_attention_stats()
        o = _options(scale, window, softcap)
        o.stats = ctypes.pointer(stats)
        kt, vt, qt, ot = _tensor(k), _tensor(v), _tensor(q), _tensor(out)
        rc = self._lib.tkv_cache_append_attention(
            h, seq, layer, k.shape[0], ctypes.byref(kt), ctypes.byref(vt), q.shape[1], ctypes.byref(qt),
            ctypes.byref(ot), ctypes.byref(o)
        )
        _check(rc, "tkv_cache_append_attention")
        if return_stats:
            return out, AttentionStats(stats.rows_total, stats.rows_skipped)
        return out

    def length(self, seq, layer):
        """Tokens stored for a sequence in a layer."""
        n = ctypes.c_uint32()
        rc = self._lib.tkv_cache_length(self._h(), _u32(seq, "seq"), _u32(layer, "layer"), ctypes.byref(n))
        _check(rc, "tkv_cache_length")
        return n.value

    def dequantize(self, seq, layer, which, first=0, n=None):
        """Stored rows read back as float32 [n][n_kv_heads][head_dim] in the
        original domain; which: 0 or "k" (keys), 1 or "v" (values); n None:
        from first to the end."""
        h = self._h()
        seq, layer, w, first = _u32(seq, "seq"), _u32(layer, "layer"), _which(which), _u32(first, "first")
        if n is None:
            n = self.length(seq, layer) - first
            if n < 0:
                raise ValueError("first = %d is past the %d tokens stored" % (first, n + first))
        n = _u32(n, "n")
        s = self._shape
        dst = np.empty((n, s.n_kv_heads, s.head_dim), dtype=np.float32)
        if n == 0 and first <= self.length(seq, layer):
            return dst  # nothing to read: the library refuses a count of 0
        _check(self._lib.tkv_cache_dequantize(h, seq, layer, w, first, n, _f32_ptr(dst)), "tkv_cache_dequantize")
        return dst

    def bytes(self):
        """Memory in use and allocated (CacheBytes)."""
        b = _ffi.tkv_cache_bytes()
        _check(self._lib.tkv_cache_bytes(self._h(), ctypes.byref(b)), "tkv_cache_bytes")
        return CacheBytes(**{name: getattr(b, name) for name, _ in b._fields_})

    def stats(self):
        """Values the format could not hold since creation: a dict with
        nonfinite_values (NaN/Inf stored as 0) and saturated_rows (scales
        clamped to the fp16 range)."""
        st = _ffi.tkv_cache_stats(struct_size=ctypes.sizeof(_ffi.tkv_cache_stats))
        _check(self._lib.tkv_cache_stats(self._h(), ctypes.byref(st)), "tkv_cache_stats")
        return {"nonfinite_values": st.nonfinite_values, "saturated_rows": st.saturated_rows}

    def layer_types(self, layer):
        """The (key, value) type names of a layer."""
        k, v = ctypes.c_uint32(), ctypes.c_uint32()
        rc = self._lib.tkv_cache_layer_types(self._h(), _u32(layer, "layer"), ctypes.byref(k), ctypes.byref(v))
        _check(rc, "tkv_cache_layer_types")
        return _type_label(k.value), _type_label(v.value)

    # --- sequence operations: bookkeeping on block tables, all-or-nothing

    def truncate(self, seq, n):
        """Keeps the first n tokens of seq in every layer."""
        _check(self._lib.tkv_seq_truncate(self._h(), _u32(seq, "seq"), _u32(n, "n")), "tkv_seq_truncate")

    def copy(self, src, dst, n=None):
        """Makes dst hold the first n tokens of src (None: all of them),
        sharing blocks copy-on-write; dst's old tokens are dropped."""
        n = _ffi.U32_MAX if n is None else _u32(n, "n")
        _check(self._lib.tkv_seq_copy(self._h(), _u32(src, "src"), _u32(dst, "dst"), n), "tkv_seq_copy")

    def remove(self, seq):
        """Drops every token of seq."""
        _check(self._lib.tkv_seq_remove(self._h(), _u32(seq, "seq")), "tkv_seq_remove")

    def clear(self, seq):
        """Drops every token of seq (tkv_cache_clear, the same as remove)."""
        _check(self._lib.tkv_cache_clear(self._h(), _u32(seq, "seq")), "tkv_cache_clear")

    def keep(self, seq):
        """Drops every sequence but seq."""
        _check(self._lib.tkv_seq_keep(self._h(), _u32(seq, "seq")), "tkv_seq_keep")

    def state(self, seq):
        """One sequence's rows as a self-contained, checksummed image (bytes)."""
        h, seq = self._h(), _u32(seq, "seq")
        size = ctypes.c_size_t()
        _check(self._lib.tkv_seq_state_size(h, seq, ctypes.byref(size)), "tkv_seq_state_size")
        buf = ctypes.create_string_buffer(size.value)
        written = ctypes.c_size_t()
        rc = self._lib.tkv_seq_state_get(h, seq, buf, size.value, ctypes.byref(written))
        _check(rc, "tkv_seq_state_get")
        return buf.raw[: written.value]

    def set_state(self, seq, data):
        """Replaces seq's tokens with an image from state(); the image must
        match the cache (shape, types, rotation, scale mode, codebooks), or
        FormatError is raised and seq keeps what it held."""
        h, seq = self._h(), _u32(seq, "seq")
        try:
            raw = bytes(memoryview(data).cast("B"))
        except TypeError:
            raise TypeError("data must be bytes-like, got %s" % type(data).__name__) from None
        _check(self._lib.tkv_seq_state_set(h, seq, raw, len(raw)), "tkv_seq_state_set")

    def save_seq(self, seq, path):
        """Writes one sequence's image to a file (atomically)."""
        _check(self._lib.tkv_seq_save(self._h(), _u32(seq, "seq"), _path(path)), "tkv_seq_save")

    def restore_seq(self, seq, path):
        """Replaces seq's tokens with a file written by save_seq."""
        _check(self._lib.tkv_seq_restore(self._h(), _u32(seq, "seq"), _path(path)), "tkv_seq_restore")

    # --- files

    def save(self, path):
        """Writes every sequence to a file (atomically: a temporary file renamed over path)."""
        _check(self._lib.tkv_cache_save(self._h(), _path(path)), "tkv_cache_save")

    def restore(self, path):
        """Replaces the whole cache's contents with a file's; on any failure the cache is untouched."""
        _check(self._lib.tkv_cache_restore(self._h(), _path(path)), "tkv_cache_restore")
