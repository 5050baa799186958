# SPDX-License-Identifier: MIT
"""The package installs offline with Debian's Python and works installed.

install_check.py: copies python/ to a temporary directory (the build writes
build/ and *.egg-info beside the sources), runs
    python3 -m pip install --no-build-isolation --no-deps --no-index --target DIR COPY
and, from another directory with only DIR on PYTHONPATH, imports turbokv and
runs a cache through it on the cpu backend (TURBOKV_LIBRARY and
TURBO_PLUGIN_PATH come from meson test). Exit 0 passed, 1 failed, 77
skipped (pip, setuptools or wheel missing; a failure with CI=true).
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

SMOKE = r"""
import importlib.metadata, os, sys
import numpy as np
import turbokv
target = sys.argv[1]
assert turbokv.__file__.startswith(target), turbokv.__file__
# one version: the installed distribution's (pyproject.toml), the module's,
# and the library's (its cpu plugin reports TKV_VERSION_STRING)
dist = importlib.metadata.version("turbokv")
assert dist == turbokv.__version__, "pyproject.toml says %s, turbokv.__version__ %s" % (dist, turbokv.__version__)
with turbokv.Context(backend="cpu", ignore_env=True, plugin_path=os.environ["TURBO_PLUGIN_PATH"]) as ctx:
    lib = [p.version for p in ctx.plugins() if p.name == "cpu"]
    assert lib == [turbokv.__version__], "the library is %s, turbokv.__version__ %s" % (lib, turbokv.__version__)
    cache = ctx.cache(n_layers=1, n_kv_heads=2, head_dim=64, capacity=64, k_type="turbo3", v_type="turbo3")
    k = np.linspace(-1, 1, 10 * 2 * 64, dtype=np.float32).reshape(10, 2, 64)
    cache.append(0, 0, k, k)
    out = cache.attention(0, [0], np.ones((1, 4, 64), np.float32))
    assert out.shape == (1, 4, 64) and np.isfinite(out).all()
    print("installed turbokv works:", turbokv.__file__, cache.length(0, 0), "tokens")
"""


def main():
    ci = os.environ.get("CI") == "true"
    for module in ("pip", "setuptools", "wheel"):
        if importlib.util.find_spec(module) is None:
            print(("FAIL (CI=true): " if ci else "SKIP: ") + "%s is not installed for %s" % (module, sys.executable))
            return 1 if ci else 77
    source = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory(prefix="tkv-py-install-") as d:
        copy, target = os.path.join(d, "src"), os.path.join(d, "site")
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        pip = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index",
               "--disable-pip-version-check", "--target", target, copy]  # fmt: skip
        env = dict(os.environ, PIP_ROOT_USER_ACTION="ignore")
        env.pop("PYTHONPATH", None)  # meson test points it at the sources
        r = subprocess.run(pip, cwd=d, env=env)
        if r.returncode != 0:
            print("pip install failed (%d)" % r.returncode)
            return 1
        env["PYTHONPATH"] = target
        r = subprocess.run([sys.executable, "-c", SMOKE, target], cwd=d, env=env)
        return 0 if r.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
