# SPDX-License-Identifier: MIT
"""Shared by the tests: the backend under test, deterministic rows and the
float64 attention reference."""

import atexit
import os
import shutil
import tempfile

import numpy as np

import turbokv

# run.py sets it from its argument (meson test runs one per built backend).
BACKEND = os.environ.get("TKV_PY_BACKEND", "cpu")
PLUGIN_PATH = os.environ.get("TURBO_PLUGIN_PATH", "")
CI = os.environ.get("CI") == "true"

HEADS, QHEADS, DIM = 2, 4, 64

_tmp = tempfile.mkdtemp(prefix="tkv-py-")


atexit.register(shutil.rmtree, _tmp, ignore_errors=True)


def temp_path(name):
    return os.path.join(_tmp, name)


def write_config(name, text):
    path = temp_path(name)
    with open(path, "w") as f:
        f.write(text)
    return path


# Sparse V skips rows whose weight is tiny: off, so that attention equals the
# float64 reference over the stored rows (as tests/test_paged.c does).
CONFIG = write_config("test.yaml", "sparse_v: false\n")


def open_context(**kw):
    """A context on the backend under test, independent of TURBO_* variables."""
    args = dict(backend=BACKEND, config_path=CONFIG, plugin_path=PLUGIN_PATH, ignore_env=True)
    args.update(kw)
    return turbokv.Context(**args)


def rows(first, n, seed, heads=HEADS, dim=DIM):
    """[n][heads][dim] float32 rows that depend only on (seed, token, head,
    i): the same token appended to two caches gets the same rows."""
    t = np.arange(first, first + n, dtype=np.uint64)[:, None]
    i = np.arange(heads * dim, dtype=np.uint64)[None, :]
    m = np.uint64(0xFFFFFFFF)
    h = ((t * np.uint64(2654435761)) & m) ^ ((i * np.uint64(40503)) & m) ^ np.uint64((seed * 2246822519) & 0xFFFFFFFF)
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(2246822519)) & m
    h ^= h >> np.uint64(13)
    x = ((h >> np.uint64(8)).astype(np.float64) / 16777216.0 - 0.5) * 4.0
    return np.ascontiguousarray(x.reshape(n, heads, dim), dtype=np.float32)


def put(cache, seq, first, n, seed, layers=None):
    """Appends tokens [first, first + n) of stream seed to seq in every layer."""
    k, v = rows(first, n, seed), rows(first, n, seed + 1000)
    for layer in range(cache.shape.n_layers if layers is None else layers):
        cache.append(seq, layer, k, v)


def queries(n, seed=0.0, heads=QHEADS, dim=DIM):
    i = np.arange(n * heads * dim, dtype=np.float64)
    q = 0.6 * np.sin(0.11 * i + seed) + 0.2 * np.cos(0.7 * i)
    return q.reshape(n, heads, dim).astype(np.float32)


def reference(k, v, q, scale=None, window=0, softcap=0.0):
    """float64 attention of q [n_q][n_q_heads][dim] (the last n_q of the n
    stored tokens, causal) over k, v [n][n_kv_heads][dim]: (out, lse)."""
    k, v, q = k.astype(np.float64), v.astype(np.float64), q.astype(np.float64)
    n, n_kv, dim = k.shape
    n_q, n_qh, _ = q.shape
    scale = 1.0 / np.sqrt(dim) if scale is None else scale
    out = np.zeros((n_q, n_qh, dim))
    lse = np.zeros((n_q, n_qh))
    for i in range(n_q):
        p = n - n_q + i
        lo = p + 1 - window if window and p + 1 > window else 0
        for h in range(n_qh):
            kv = h // (n_qh // n_kv)
            x = k[lo : p + 1, kv] @ q[i, h] * scale
            if softcap > 0:
                x = softcap * np.tanh(x / softcap)
            m = x.max()
            w = np.exp(x - m)
            out[i, h] = w @ v[lo : p + 1, kv] / w.sum()
            lse[i, h] = m + np.log(w.sum())
    return out, lse


def assert_close(test, got, want, tol):
    """|got - want| <= tol (1 + |want|) element by element (tests/test_paged.c's rule)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    test.assertEqual(got.shape, want.shape)
    bad = np.abs(got - want) > tol * (1.0 + np.abs(want))
    if bad.any():
        i = np.argwhere(bad)[0]
        test.fail(
            "%d elements differ beyond %g; first at %s: %.9g vs %.9g"
            % (bad.sum(), tol, tuple(i), got[tuple(i)], want[tuple(i)])
        )
