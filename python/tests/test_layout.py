# SPDX-License-Identifier: MIT
"""Every ctypes struct mirrors its C struct exactly.

Two independent checks, because each catches what the other cannot:

- against the header text, no compiler needed: each struct's members are
  parsed from abi/turbokv.h and abi/turbokv_caps.h and must match the ctypes
  members one for one (name, order, C type, array sizes); the offsets and
  size the header implies under the platform's natural alignment (what the
  SysV/AAPCS ABIs of every Linux target use for these types) must equal
  ctypes'. This catches a member added to, removed from or reordered in the
  header and not in Python, on any machine.
- against the C compiler, where one is present (always in CI): a C program
  that includes turbokv.h prints sizeof and offsetof of every member, which
  must equal ctypes' offsets and sizes. This catches what the parser's model
  of C could get wrong (padding, packing pragmas, a type it misreads).
"""

import ctypes
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from helpers import CI

from turbokv import _ffi

ABI_DIR = os.environ.get("TKV_ABI_DIR") or os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "abi")
HEADERS = ("turbokv.h", "turbokv_caps.h")

# C base types: (kind, size) with size = alignment on LP64 Linux.
C_TYPES = {
    "uint32_t": ("u32", 4),
    "uint64_t": ("u64", 8),
    "int": ("i32", 4),
    "float": ("f32", 4),
    "double": ("f64", 8),
    "size_t": ("u64", 8),
    "char": ("char", 1),
}
PTR = ("ptr", ctypes.sizeof(ctypes.c_void_p))


def header_structs():
    """{struct name: [(member, kind, size, dims)]} parsed from the headers."""
    text = ""
    for name in HEADERS:
        with open(os.path.join(ABI_DIR, name)) as f:
            text += f.read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    out = {}
    for m in re.finditer(r"struct\s+(\w+)\s*\{(.*?)\};", text, flags=re.S):
        members = []
        for decl in m.group(2).split(";"):
            decl = " ".join(decl.split())
            if not decl:
                continue
            fn = re.fullmatch(r".*\(\s*\*\s*(\w+)\s*\)\s*\(.*\)", decl)
            if fn:  # a function pointer
                members.append((fn.group(1), PTR[0], PTR[1], ()))
                continue
            base = re.match(r"(?:const\s+)?(struct\s+\w+|\w+)\s*(.*)", decl)
            type_name, declarators = base.group(1), base.group(2)
            for d in declarators.split(","):
                dm = re.fullmatch(r"\s*(\**)\s*(\w+)\s*((?:\[\s*\d+\s*\])*)\s*", d)
                if not dm:
                    raise AssertionError("cannot parse member %r of struct %s" % (d, m.group(1)))
                dims = tuple(int(x) for x in re.findall(r"\d+", dm.group(3)))
                if dm.group(1):
                    kind, size = PTR
                elif type_name in C_TYPES:
                    kind, size = C_TYPES[type_name]
                else:
                    raise AssertionError("struct %s member %s: type %s not modelled" % (m.group(1), d, type_name))
                members.append((dm.group(2), kind, size, dims))
        out[m.group(1)] = members
    return out


def ctypes_kind(t):
    """(kind, size, dims) of a ctypes member type."""
    dims = []
    while issubclass(t, ctypes.Array):
        dims.append(t._length_)
        t = t._type_
    if t in (ctypes.c_char_p, ctypes.c_void_p) or issubclass(t, (ctypes._Pointer, ctypes._CFuncPtr)):
        return PTR[0], PTR[1], tuple(dims)
    kinds = {
        ctypes.c_uint32: "u32",
        ctypes.c_uint64: "u64",
        ctypes.c_int: "i32",
        ctypes.c_float: "f32",
        ctypes.c_double: "f64",
        ctypes.c_char: "char",
    }
    return kinds[t], ctypes.sizeof(t), tuple(dims)


def layout(members):
    """Offsets and size of members under natural alignment."""
    offsets, at, align = [], 0, 1
    for _, _, size, dims in members:
        at = (at + size - 1) // size * size
        offsets.append(at)
        n = 1
        for d in dims:
            n *= d
        at += size * n
        align = max(align, size)
    return offsets, (at + align - 1) // align * align


@unittest.skipUnless(os.path.exists(os.path.join(ABI_DIR, "turbokv.h")), "abi/ headers not found (set TKV_ABI_DIR)")
class Layout(unittest.TestCase):
    def test_members_match_header(self):
        structs = header_structs()
        for name, cls in _ffi.STRUCTS.items():
            with self.subTest(struct=name):
                self.assertIn(name, structs, "struct %s is not in the headers" % name)
                want = [(m, k, s, d) for m, k, s, d in structs[name]]
                got = [(f, *ctypes_kind(t)) for f, t in cls._fields_]
                self.assertEqual(got, want)
                offsets, size = layout(want)
                self.assertEqual([getattr(cls, f).offset for f, _ in cls._fields_], offsets)
                self.assertEqual(ctypes.sizeof(cls), size)

    def test_sizes_match_compiler(self):
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if not cc:
            if CI:
                self.fail("no C compiler to check the struct layouts with (CI has gcc)")
            self.skipTest("no C compiler")
        lines = ['#include <stddef.h>', '#include <stdio.h>', '#include "turbokv.h"', "int main(void) {"]
        for name, cls in _ffi.STRUCTS.items():
            lines.append('printf("%s sizeof %%zu\\n", sizeof(struct %s));' % (name, name))
            for f, _ in cls._fields_:
                lines.append('printf("%s %s %%zu\\n", offsetof(struct %s, %s));' % (name, f, name, f))
        lines += ["return 0;", "}"]
        with tempfile.TemporaryDirectory(prefix="tkv-layout-") as d:
            src, exe = os.path.join(d, "layout.c"), os.path.join(d, "layout")
            with open(src, "w") as f:
                f.write("\n".join(lines) + "\n")
            r = subprocess.run([cc, "-std=c11", "-I", ABI_DIR, src, "-o", exe], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, "the layout program does not compile:\n" + r.stderr)
            printed = subprocess.run([exe], capture_output=True, text=True, check=True).stdout.split("\n")
        c = {}
        for line in filter(None, printed):
            struct, member, value = line.split()
            c[(struct, member)] = int(value)
        for name, cls in _ffi.STRUCTS.items():
            with self.subTest(struct=name):
                self.assertEqual(ctypes.sizeof(cls), c[(name, "sizeof")])
                for f, _ in cls._fields_:
                    self.assertEqual(getattr(cls, f).offset, c[(name, f)], "%s.%s" % (name, f))


if __name__ == "__main__":
    unittest.main()
