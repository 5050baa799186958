# SPDX-License-Identifier: MIT
"""turbokv: TurboQuant-compressed K/V cache and decode attention, from Python.

A ctypes binding of the C host API (abi/turbokv.h) with numpy arrays. The
library is found through TURBOKV_LIBRARY, else a libturbokv.so next to this
package, else the system's (ctypes.util.find_library), else the build tree
of the checkout this package sits in (build/core/libturbokv.so).

    import numpy as np, turbokv
    with turbokv.Context(backend="cpu") as ctx:
        cache = ctx.cache(n_layers=1, n_kv_heads=2, head_dim=64, capacity=1024,
                          k_type="turbo3", v_type="turbo3")
        k = np.random.randn(10, 2, 64).astype(np.float32)
        cache.append(0, 0, k, k)
        out = cache.attention(0, [0], np.ones((1, 8, 64), np.float32))
"""

from ._api import (
    AttentionStats,
    Cache,
    CacheBytes,
    CacheShape,
    ConfigEntry,
    ConfigSource,
    Context,
    DeviceCaps,
    Feature,
    LogLevel,
    PluginReport,
    Rotation,
    ScaleMode,
    Type,
    last_error,
    optimal_mse,
    status_name,
    type_bits_per_value,
    type_from_name,
    type_name,
)
from ._errors import (
    ABIError,
    BusyError,
    ConfigError,
    DeviceError,
    Error,
    FileIOError,
    FormatError,
    InvalidArgumentError,
    NoDeviceError,
    NoMemoryError,
    NotFoundError,
    PluginError,
    RangeError,
    Status,
    UnsupportedError,
)
from ._ffi import BLOCK_TOKENS_DEFAULT, library_path

__version__ = "0.7.0"

__all__ = [
    "ABIError",
    "AttentionStats",
    "BLOCK_TOKENS_DEFAULT",
    "BusyError",
    "Cache",
    "CacheBytes",
    "CacheShape",
    "ConfigEntry",
    "ConfigError",
    "ConfigSource",
    "Context",
    "DeviceCaps",
    "DeviceError",
    "Error",
    "Feature",
    "FileIOError",
    "FormatError",
    "InvalidArgumentError",
    "LogLevel",
    "NoDeviceError",
    "NoMemoryError",
    "NotFoundError",
    "PluginError",
    "PluginReport",
    "RangeError",
    "Rotation",
    "ScaleMode",
    "Status",
    "Type",
    "UnsupportedError",
    "last_error",
    "library_path",
    "optimal_mse",
    "status_name",
    "type_bits_per_value",
    "type_from_name",
    "type_name",
]
