# SPDX-License-Identifier: MIT
"""turbokv.Error and one subclass per enum tkv_status (abi/turbokv_status.h)."""

import enum


class Status(enum.IntEnum):
    OK = 0
    EINVAL = -1
    ENOMEM = -2
    ERANGE = -3
    EUNSUPPORTED = -4
    ENODEV = -5
    EDEVICE = -6
    EIO = -7
    EFORMAT = -8
    ECONFIG = -9
    EABI = -10
    EPLUGIN = -11
    ENOTFOUND = -12
    EBUSY = -13


class Error(Exception):
    """A turbokv call failed.

    status: the negative status code (int); status_name: "TKV_EINVAL", ...;
    message: tkv_last_error() right after the failure (names what was wrong);
    function: the C function that failed.
    """

    def __init__(self, status, status_name, message, function):
        self.status = status
        self.status_name = status_name
        self.message = message
        self.function = function
        # the library's messages mostly begin with the function's name already
        text = message if message.startswith(function) else "%s: %s" % (function, message or "(no detail)")
        super().__init__("%s (%s)" % (text, status_name))


class InvalidArgumentError(Error):
    """TKV_EINVAL: an argument is invalid."""


class NoMemoryError(Error):
    """TKV_ENOMEM: host or device memory exhausted, or the block pool is full."""


class RangeError(Error):
    """TKV_ERANGE: an index out of range or a capacity exceeded."""


class UnsupportedError(Error):
    """TKV_EUNSUPPORTED: a type, head_dim or feature the device does not support."""


class NoDeviceError(Error):
    """TKV_ENODEV: no usable device."""


class DeviceError(Error):
    """TKV_EDEVICE: the device or its driver failed."""


class FileIOError(Error):
    """TKV_EIO: a file could not be read or written."""


class FormatError(Error):
    """TKV_EFORMAT: a file or image is truncated, corrupted or does not match."""


class ConfigError(Error):
    """TKV_ECONFIG: a configuration value or environment variable is wrong."""


class ABIError(Error):
    """TKV_EABI: a plugin's ABI version is not supported by this core."""


class PluginError(Error):
    """TKV_EPLUGIN: a plugin failed to load or is malformed."""


class NotFoundError(Error):
    """TKV_ENOTFOUND: no such plugin, backend or file."""


class BusyError(Error):
    """TKV_EBUSY: the context is in use by another thread right now."""


ERRORS = {
    Status.EINVAL: InvalidArgumentError,
    Status.ENOMEM: NoMemoryError,
    Status.ERANGE: RangeError,
    Status.EUNSUPPORTED: UnsupportedError,
    Status.ENODEV: NoDeviceError,
    Status.EDEVICE: DeviceError,
    Status.EIO: FileIOError,
    Status.EFORMAT: FormatError,
    Status.ECONFIG: ConfigError,
    Status.EABI: ABIError,
    Status.EPLUGIN: PluginError,
    Status.ENOTFOUND: NotFoundError,
    Status.EBUSY: BusyError,
}
