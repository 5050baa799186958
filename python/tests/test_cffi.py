# SPDX-License-Identifier: MIT
"""The public headers are declarations a binding generator can read: with
TKV_CDEF, `cc -E` over turbokv.h (empty <stdint.h> and <stddef.h>: cffi knows
those types) gives text that cffi's cdef accepts, and the functions it
declares call into the library. Needs cc and cffi (Debian: python3-cffi);
under CI=true both must be there."""

import os
import shutil
import subprocess
import tempfile
import unittest

import turbokv

HERE = os.path.dirname(os.path.abspath(__file__))
ABI = os.path.join(HERE, "..", "..", "abi")
IN_CI = os.environ.get("CI") == "true"

try:
    import cffi
except ImportError:  # pragma: no cover - depends on the machine
    cffi = None


def declarations():
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    with tempfile.TemporaryDirectory() as inc:
        for name in ("stdint.h", "stddef.h"):
            open(os.path.join(inc, name), "w").close()
        return subprocess.run(
            [cc, "-E", "-P", "-nostdinc", "-I", inc, "-DTKV_CDEF", os.path.join(ABI, "turbokv.h")],
            check=True, capture_output=True, text=True,
        ).stdout


class Cdef(unittest.TestCase):
    def test_headers_parse_and_call(self):
        if cffi is None or not (shutil.which("cc") or shutil.which("gcc")):
            if IN_CI:
                self.fail("CI=true: cffi (python3-cffi) and cc must be installed")
            self.skipTest("cffi or cc missing")
        text = declarations()
        self.assertNotIn("inline", text)
        self.assertNotIn("__attribute__", text)
        ffi = cffi.FFI()
        ffi.cdef(text)
        lib = ffi.dlopen(turbokv.library_path())
        self.assertEqual(ffi.string(lib.tkv_status_name(lib.TKV_EBUSY)), b"TKV_EBUSY")
        self.assertEqual(ffi.string(lib.tkv_type_name(lib.TKV_TYPE_TURBO3)), b"turbo3")
        self.assertEqual(ffi.sizeof("struct tkv_cache_params"), 96)
        bits = ffi.new("uint32_t *")
        self.assertEqual(lib.tkv_type_from_name(b"q8_0", bits), lib.TKV_OK)
        self.assertEqual(bits[0], lib.TKV_TYPE_Q8_0)


if __name__ == "__main__":
    unittest.main()
