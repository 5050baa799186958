# SPDX-License-Identifier: MIT
"""Runs the Python package's tests on one backend: run.py [BACKEND] (cpu).

Exit status as meson reads it: 0 passed, 1 failed, 77 skipped. A skip
(numpy missing, or the backend's device cannot be opened) is a failure when
CI=true, as in tests/test_paged.c: in CI every device must be there.
"""

import os
import sys
import unittest

here = os.path.dirname(os.path.abspath(__file__))


def skip(why):
    ci = os.environ.get("CI") == "true"
    print(("FAIL (CI=true): " if ci else "SKIP: ") + why, file=sys.stderr)
    return 1 if ci else 77


def main():
    backend = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    os.environ["TKV_PY_BACKEND"] = backend
    sys.path.insert(0, here)
    try:
        import numpy  # noqa: F401
    except ImportError:
        return skip("numpy is not installed for %s (Debian: python3-numpy)" % sys.executable)
    import turbokv
    from helpers import open_context

    try:
        open_context().close()
    except turbokv.Error as e:
        return skip("cannot open backend %s: %s" % (backend, e))
    print("turbokv %s from %s, backend %s" % (turbokv.__file__, turbokv.library_path(), backend), flush=True)
    suite = unittest.defaultTestLoader.discover(here, pattern="test_*.py", top_level_dir=here)
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
