# SPDX-License-Identifier: MIT
"""Contexts: open, names, capabilities, configuration, plugins, logging,
errors as exceptions, closing, threads; and the type helpers."""

import os
import threading
import unittest

from helpers import BACKEND, DIM, HEADS, open_context, put, write_config

import turbokv


class Names(unittest.TestCase):
    def test_types(self):
        self.assertEqual(turbokv.type_name(turbokv.Type.TURBO3), "turbo3")
        self.assertEqual(turbokv.type_name(4), "turbo3")
        self.assertIsNone(turbokv.type_name(99))
        self.assertIs(turbokv.type_from_name("q8_0"), turbokv.Type.Q8_0)
        with self.assertRaises(turbokv.InvalidArgumentError) as e:
            turbokv.type_from_name("turbo5")
        self.assertIn("unknown type 'turbo5'", e.exception.message)
        self.assertIn("turbo4_qjl", e.exception.message)  # it lists the names
        # 3 bits per value plus one fp16 scale per group of 128
        self.assertEqual(turbokv.type_bits_per_value("turbo3", 128), 3.0 + 16.0 / 128)
        self.assertEqual(turbokv.type_bits_per_value(turbokv.Type.F16, 128), 16.0)
        # the 3-bit Lloyd-Max optimum on the sphere, close to the Gaussian one (0.0345)
        self.assertAlmostEqual(turbokv.optimal_mse("turbo3", 128), 0.034, delta=0.002)
        with self.assertRaises(turbokv.InvalidArgumentError):
            turbokv.optimal_mse("f16", 128)

    def test_status_names(self):
        self.assertEqual(turbokv.status_name(turbokv.Status.EFORMAT), "TKV_EFORMAT")
        self.assertEqual(turbokv.status_name(0), "TKV_OK")
        for status, cls in turbokv._errors.ERRORS.items():
            self.assertTrue(issubclass(cls, turbokv.Error))
            self.assertEqual(turbokv.status_name(status), "TKV_" + status.name)

    def test_bad_arguments_are_python_errors(self):
        with self.assertRaisesRegex(TypeError, "type name must be a str"):
            turbokv.type_from_name(3)
        with self.assertRaisesRegex(ValueError, r"head_dim must be in 0 \.\. 4294967295, got -8"):
            turbokv.type_bits_per_value("turbo3", -8)


class Open(unittest.TestCase):
    def test_backend_device_caps(self):
        with open_context() as ctx:
            self.assertEqual(ctx.backend, BACKEND)
            self.assertTrue(ctx.device)
            self.assertIn(BACKEND, repr(ctx))
            caps = ctx.caps
            self.assertIsInstance(caps, turbokv.DeviceCaps)
            self.assertIn(turbokv.Feature.PAGED, caps.features)  # every ABI 2 plugin
            need = turbokv.Feature.MIXED_NQ | turbokv.Feature.WINDOW | turbokv.Feature.SOFTCAP | turbokv.Feature.LSE
            self.assertEqual(caps.features & need, need)
            self.assertIn("turbo3", caps.k_types)
            self.assertIn("turbo4", caps.v_types)
            self.assertNotIn("turbo3_qjl", caps.v_types)  # keys only
            self.assertIn("wht", caps.rotations)
            self.assertEqual(set(caps.scale_modes), {"norm", "norm_corrected"})
            self.assertGreaterEqual(caps.head_dim_max, 256)

    def test_config(self):
        cfg = write_config("config.yaml", "sparse_v: false\nrotation: dense\n")
        with open_context(config_path=cfg) as ctx:
            entries = {e.key: e for e in ctx.config()}
        e = entries["rotation"]
        self.assertEqual(e.value, "dense")
        self.assertEqual(e.source, turbokv.ConfigSource.FILE)
        self.assertTrue(e.origin.startswith(cfg + ":2"), e.origin)
        self.assertEqual(e.env, "TURBO_ROTATION")
        self.assertEqual(entries["sparse_v"].value, "false")
        self.assertEqual(entries["backend"].source, turbokv.ConfigSource.API)
        self.assertEqual(entries["backend"].value, BACKEND)
        self.assertEqual(entries["threads"].source, turbokv.ConfigSource.DEFAULT)
        self.assertEqual(entries["threads"].origin, "default")

    def test_env_read_unless_ignored(self):
        os.environ["TURBO_ROTATION"] = "none"
        try:
            with open_context(ignore_env=False) as ctx:
                e = {e.key: e for e in ctx.config()}["rotation"]
                self.assertEqual((e.value, e.source, e.origin), ("none", turbokv.ConfigSource.ENV, "TURBO_ROTATION"))
            with open_context(ignore_env=True) as ctx:
                self.assertEqual({e.key: e for e in ctx.config()}["rotation"].value, "wht")
        finally:
            del os.environ["TURBO_ROTATION"]

    def test_plugins(self):
        with open_context() as ctx:
            reports = ctx.plugins()
        used = [r for r in reports if r.in_use]
        self.assertEqual(len(used), 1)
        r = used[0]
        self.assertEqual(r.name, BACKEND)
        self.assertTrue(r.ok)
        self.assertEqual((r.status, r.status_name, r.message), (0, "TKV_OK", ""))
        self.assertEqual(r.abi_major, 2)
        self.assertTrue(r.path.endswith("turbokv-%s.so" % BACKEND), r.path)
        self.assertGreaterEqual(r.n_devices, 1)
        self.assertEqual(len(r.devices), min(r.n_devices, 4))
        self.assertIn("score", r.devices[0])

    def test_log_callback(self):
        cfg = write_config("debug.yaml", "sparse_v: false\nlog: debug\n")
        lines = []
        with open_context(config_path=cfg, log=lambda level, msg: lines.append((level, msg))) as ctx:
            c = ctx.cache(1, HEADS, DIM, 16, k_type="turbo3", v_type="turbo3")
            put(c, 0, 0, 2, 1)
        self.assertTrue(any(level == turbokv.LogLevel.DEBUG and "%s.quantize_append" % BACKEND in msg for level, msg in lines),
                        lines)
        self.assertTrue(all(isinstance(level, turbokv.LogLevel) and isinstance(msg, str) for level, msg in lines))
        # the default level (warn) lets no debug line through
        lines.clear()
        with open_context(log=lambda level, msg: lines.append((level, msg))) as ctx:
            put(ctx.cache(1, HEADS, DIM, 16, k_type="turbo3", v_type="turbo3"), 0, 0, 2, 1)
        self.assertFalse([m for level, m in lines if level > turbokv.LogLevel.WARN])

    def test_require_picks_only_a_device_that_holds_the_cache(self):
        if BACKEND != "cpu":
            self.skipTest("backend auto probes every plugin: once is enough")
        too_wide = dict(n_layers=1, n_kv_heads=1, head_dim=2048, capacity=16, k_type="turbo3", v_type="turbo3")
        with self.assertRaises(turbokv.UnsupportedError) as e:
            open_context(backend="auto", require=too_wide)
        self.assertIn("head_dim 2048", e.exception.message)
        fits = dict(too_wide, head_dim=64)
        with open_context(backend="auto", require=fits) as ctx:
            self.assertIn("turbo3", ctx.caps.k_types)


class Errors(unittest.TestCase):
    def test_unknown_backend(self):
        with self.assertRaises(turbokv.NotFoundError) as e:
            open_context(backend="nosuch")
        err = e.exception
        self.assertIsInstance(err, turbokv.Error)
        self.assertEqual(err.status, turbokv.Status.ENOTFOUND)
        self.assertEqual(err.status_name, "TKV_ENOTFOUND")
        self.assertEqual(err.function, "tkv_context_open")
        self.assertIn("turbokv-nosuch.so", err.message)
        self.assertEqual(turbokv.last_error(), err.message)
        self.assertIn(err.message, str(err))
        self.assertIn("TKV_ENOTFOUND", str(err))

    def test_bad_config(self):
        cfg = write_config("bad.yaml", "sparse_v: maybe\n")
        with self.assertRaises(turbokv.ConfigError) as e:
            open_context(config_path=cfg)
        self.assertIn("sparse_v", e.exception.message)
        self.assertIn(cfg, e.exception.message)
        missing = cfg + ".missing"
        with self.assertRaises(turbokv.Error) as e:
            open_context(config_path=missing)
        self.assertIn(missing, e.exception.message)

    def test_python_side_checks(self):
        with self.assertRaisesRegex(TypeError, "backend must be a str"):
            open_context(backend=1)
        with self.assertRaisesRegex(TypeError, "log must be callable"):
            open_context(log="stderr")
        with self.assertRaisesRegex(TypeError, "require must be a dict"):
            open_context(require=5)
        with self.assertRaisesRegex(ValueError, "config_path contains a NUL"):
            open_context(config_path="a\0b")

    def test_closed(self):
        ctx = open_context()
        c = ctx.cache(1, HEADS, DIM, 16, k_type="turbo3", v_type="turbo3")
        put(c, 0, 0, 3, 1)
        ctx.close()
        ctx.close()  # twice is harmless
        self.assertTrue(ctx.closed)
        self.assertTrue(c.closed)  # closing the context destroyed its cache first
        self.assertEqual(repr(ctx), "<turbokv.Context closed>")
        with self.assertRaisesRegex(ValueError, "context is closed"):
            ctx.backend
        with self.assertRaisesRegex(ValueError, "cache is closed \\(its context was closed\\)"):
            c.length(0, 0)
        c.close()  # after its context: harmless

    def test_busy_from_another_thread(self):
        # The log callback runs inside the library's call on this thread;
        # while it waits there, another thread's call on the same context
        # must answer BusyError at once.
        cfg = write_config("busy.yaml", "sparse_v: false\nlog: debug\n")
        inside, done = threading.Event(), threading.Event()
        armed = [False]
        result = {}

        def log(level, msg):
            if armed[0] and not inside.is_set():
                inside.set()
                done.wait(30)

        ctx = open_context(config_path=cfg, log=log)
        c = ctx.cache(1, HEADS, DIM, 16, k_type="turbo3", v_type="turbo3")

        def other():
            inside.wait(30)
            try:
                c.length(0, 0)
                result["error"] = None
            except turbokv.Error as e:
                result["error"] = e
            done.set()

        t = threading.Thread(target=other)
        t.start()
        armed[0] = True
        put(c, 0, 0, 4, 1)
        armed[0] = False
        t.join(30)
        self.assertIsInstance(result["error"], turbokv.BusyError)
        self.assertIn("in use by another thread", result["error"].message)
        self.assertEqual(c.length(0, 0), 4)  # once the call returned, it works
        ctx.close()


if __name__ == "__main__":
    unittest.main()
