# SPDX-License-Identifier: MIT
"""Caches: create, append, attention against float64, sequence operations,
state images, files, errors as exceptions; on the backend under test."""

import os
import unittest

import numpy as np

from helpers import DIM, HEADS, QHEADS, assert_close, open_context, put, queries, reference, rows, temp_path

import turbokv

LAYERS, CAP, SEQS = 3, 300, 4


def setUpModule():
    global ctx
    ctx = open_context()


def tearDownModule():
    ctx.close()


def make(k_type="turbo3", v_type="turbo4", block_tokens=16, **kw):
    args = dict(n_seqs=SEQS, k_type=k_type, v_type=v_type, block_tokens=block_tokens)
    args.update(kw)
    return ctx.cache(LAYERS, HEADS, DIM, CAP, **args)


class Create(unittest.TestCase):
    def test_shape_types_bytes(self):
        c = make(block_tokens=8, rotation="dense", scale_mode="norm")
        self.assertEqual(
            c.shape,
            turbokv.CacheShape(LAYERS, HEADS, DIM, CAP, SEQS, turbokv.Rotation.DENSE, turbokv.ScaleMode.NORM, 8),
        )
        for layer in range(LAYERS):
            self.assertEqual(c.layer_types(layer), ("turbo3", "turbo4"))
        b = c.bytes()
        self.assertEqual((b.used, b.blocks_used, b.block_tokens), (0, 0, 8))
        put(c, 0, 0, 20, 1)  # 3 blocks of 8
        b = c.bytes()
        self.assertEqual(b.blocks_used, 3)
        self.assertEqual(b.used_f32, LAYERS * 2 * 20 * HEADS * DIM * 4)  # K and V
        self.assertEqual(b.used_f16, b.used_f32 // 2)
        self.assertLess(b.used, b.used_f16 // 3)  # ~3.5 bits per value
        self.assertGreaterEqual(b.capacity, b.blocks_bytes)
        self.assertEqual(c.stats(), {"nonfinite_values": 0, "saturated_rows": 0})
        k = np.zeros((1, HEADS, DIM), np.float32)
        k[0, 0, 0] = np.nan
        k[0, 1, :] = 1e4  # one group norm of 8e4: beyond fp16
        c.append(1, 0, k, np.zeros((1, HEADS, DIM), np.float32))
        self.assertEqual(c.stats(), {"nonfinite_values": 1, "saturated_rows": 1})
        c.close()
        c.close()  # twice is harmless
        with self.assertRaisesRegex(ValueError, "cache is closed"):
            c.bytes()

    def test_per_layer_types_and_enums(self):
        c = make(layer_k_types=["q8_0", turbokv.Type.TURBO4, "f16"], layer_v_types=[3, "turbo3", "f32"])
        self.assertEqual(c.layer_types(0), ("q8_0", "turbo2"))
        self.assertEqual(c.layer_types(1), ("turbo4", "turbo3"))
        self.assertEqual(c.layer_types(2), ("f16", "f32"))
        c.close()
        with self.assertRaisesRegex(ValueError, r"layer_k_types must hold one type per layer \(3\)"):
            make(layer_k_types=["q8_0"])
        with self.assertRaisesRegex(ValueError, "rotation 'hadamard' unknown"):
            make(rotation="hadamard")

    def test_errors_name_the_bad_member(self):
        with self.assertRaises(turbokv.InvalidArgumentError) as e:
            ctx.cache(LAYERS, HEADS, DIM, CAP, n_q_heads=3)
        self.assertIn("n_q_heads 3 is not a multiple of n_kv_heads 2", e.exception.message)
        self.assertEqual(e.exception.function, "tkv_cache_create")
        with self.assertRaises(turbokv.InvalidArgumentError) as e:
            make(v_type="turbo3_qjl")
        self.assertIn("value type turbo3_qjl of layer 0: QJL types are for keys only", e.exception.message)
        self.assertEqual(str(e.exception), e.exception.message + " (TKV_EINVAL)")
        with self.assertRaises(turbokv.InvalidArgumentError) as e:
            make(k_type="turbo9")
        self.assertIn("unknown type 'turbo9'", e.exception.message)
        with self.assertRaisesRegex(TypeError, "create a cache with Context.cache"):
            turbokv.Cache()


class Append(unittest.TestCase):
    def setUp(self):
        self.c = make()
        put(self.c, 1, 0, 5, 1)

    def tearDown(self):
        self.c.close()

    def assert_unchanged(self, image):
        self.assertEqual(self.c.length(1, 0), 5)
        self.assertEqual(self.c.state(1), image)

    def test_array_checks(self):
        image = self.c.state(1)
        k = rows(5, 3, 1)
        with self.assertRaisesRegex(TypeError, r"k has dtype float64, expected float32"):
            self.c.append(1, 0, k.astype(np.float64), k)
        with self.assertRaisesRegex(TypeError, r"v must be a numpy.ndarray of float32"):
            self.c.append(1, 0, k, k.tolist())
        with self.assertRaisesRegex(ValueError, r"k has shape \(3, 2, 32\), expected \(\*, 2, 64\)"):
            self.c.append(1, 0, np.zeros((3, 2, 32), np.float32), k)
        with self.assertRaisesRegex(ValueError, r"k has shape \(3, 128\)"):
            self.c.append(1, 0, k.reshape(3, 128), k)
        with self.assertRaisesRegex(ValueError, r"v has shape \(2, 2, 64\), expected \(3, 2, 64\)"):
            self.c.append(1, 0, k, k[:2])
        with self.assertRaisesRegex(ValueError, "k is not a C-contiguous"):
            self.c.append(1, 0, np.zeros((3, 64, 2), np.float32).transpose(0, 2, 1), k)
        with self.assertRaisesRegex(TypeError, "dtype >f4"):
            self.c.append(1, 0, k.astype(">f4"), k)
        with self.assertRaisesRegex(ValueError, r"seq must be in 0 \.\. 4294967295, got -1"):
            self.c.append(-1, 0, k, k)
        with self.assertRaisesRegex(TypeError, "layer must be an integer, got float"):
            self.c.append(1, 0.0, k, k)
        self.assert_unchanged(image)

    def test_library_checks(self):
        image = self.c.state(1)
        k = rows(5, 3, 1)
        with self.assertRaises(turbokv.RangeError) as e:
            self.c.append(SEQS, 0, k, k)
        self.assertIn("sequence 4 out of range", e.exception.message)
        with self.assertRaises(turbokv.RangeError) as e:
            self.c.append(1, LAYERS, k, k)
        self.assertIn("layer 3 out of range", e.exception.message)
        big = rows(5, CAP, 1)
        with self.assertRaises(turbokv.RangeError) as e:
            self.c.append(1, 0, big, big)
        self.assertIn("capacity exceeded", e.exception.message)
        with self.assertRaises(turbokv.InvalidArgumentError) as e:
            self.c.append(1, 0, k[:0], k[:0])
        self.assertIn("n_tokens is 0", e.exception.message)
        self.assert_unchanged(image)

    def test_f32_rows_read_back_exactly(self):
        c = make("f32", "f32")
        k, v = rows(0, 40, 7), rows(0, 40, 8)
        c.append(2, 1, k[:25], v[:25])
        c.append(2, 1, k[25:], v[25:])
        self.assertEqual(c.length(2, 1), 40)
        self.assertEqual(c.length(2, 0), 0)
        np.testing.assert_array_equal(c.dequantize(2, 1, "k"), k)
        np.testing.assert_array_equal(c.dequantize(2, 1, 1), v)
        np.testing.assert_array_equal(c.dequantize(2, 1, "values", first=30, n=4), v[30:34])
        self.assertEqual(c.dequantize(2, 0, "k").shape, (0, HEADS, DIM))
        with self.assertRaises(turbokv.RangeError) as e:
            c.dequantize(2, 1, 0, first=38, n=5)
        self.assertIn("tokens 38..42 requested, sequence 2 holds 40", e.exception.message)
        with self.assertRaisesRegex(ValueError, "which must be 0 / 'k'"):
            c.dequantize(2, 1, 2)
        c.close()

    def test_turbo_rows_are_close(self):
        # turbo4 keeps ~0.9% of the energy as error on random rows
        k = rows(0, 64, 3)
        self.c.append(0, 0, k, k)
        got = self.c.dequantize(0, 0, "v")
        err = np.sum((got - k) ** 2) / np.sum(k**2)
        self.assertLess(err, 0.02)
        self.assertGreater(err, 0.0)

    def test_float16_rows_are_the_float32_rows(self):
        # float16 k/v are widened exactly: what is stored is what k.astype(float32) stores
        k, v = rows(0, 20, 9).astype(np.float16), rows(0, 20, 10).astype(np.float16)
        for types in (("f32", "f32"), ("turbo3", "q8_0")):
            a, b = make(*types), make(*types)
            b.append(0, 2, k, v)
            a.append(0, 2, k.astype(np.float32), v.astype(np.float32))
            for which in ("k", "v"):
                np.testing.assert_array_equal(b.dequantize(0, 2, which), a.dequantize(0, 2, which))
            if types[0] == "f32":
                np.testing.assert_array_equal(b.dequantize(0, 2, "k"), k.astype(np.float32))
            a.close()
            b.close()
        with self.assertRaisesRegex(TypeError, r"k has dtype float64, expected float32 or float16"):
            self.c.append(1, 0, k.astype(np.float64), k)


class Attention(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = make("turbo4", "q8_0")
        put(cls.c, 0, 0, 90, 1)
        put(cls.c, 1, 0, 7, 2)
        put(cls.c, 3, 0, 130, 3)

    @classmethod
    def tearDownClass(cls):
        cls.c.close()

    def want(self, layer, ids, nq, q, **opts):
        """float64 attention over the stored (dequantized) rows."""
        outs, lses, at = [], [], 0
        for seq, n in zip(ids, nq):
            k, v = self.c.dequantize(seq, layer, "k"), self.c.dequantize(seq, layer, "v")
            o, l = reference(k, v, q[at : at + n], **opts)
            outs.append(o)
            lses.append(l)
            at += n
        return np.concatenate(outs), np.concatenate(lses)

    def test_options_against_reference(self):
        ids, nq = [3, 1, 0], [1, 7, 4]
        q = queries(sum(nq))
        cases = [
            dict(),
            dict(window=32),
            dict(scale=0.3),
            dict(softcap=5.0),
            dict(window=1),
            dict(window=20, scale=0.2, softcap=2.0),
        ]
        for opts in cases:
            with self.subTest(**opts):
                out, lse = self.c.attention(1, ids, q, n_q=nq, return_lse=True, **opts)
                want, want_lse = self.want(1, ids, nq, q, **opts)
                self.assertEqual(out.shape, q.shape)
                self.assertEqual(lse.shape, q.shape[:2])
                assert_close(self, out, want, 2e-4)
                assert_close(self, lse, want_lse, 2e-4)

    def test_uniform_decode(self):
        ids = [0, 3, 1]
        q = queries(3, seed=1.0)
        out = self.c.attention(2, ids, q)  # one query row per sequence
        assert_close(self, out, self.want(2, ids, [1, 1, 1], q)[0], 2e-4)
        # the same as 4-D [n_seqs][n_q][n_q_heads][head_dim]
        out4 = self.c.attention(2, ids, q.reshape(3, 1, QHEADS, DIM))
        self.assertEqual(out4.shape, (3, 1, QHEADS, DIM))
        np.testing.assert_array_equal(out4.reshape(out.shape), out)
        # n_q = 2 each, as an int and as 4-D
        q2 = queries(6, seed=2.0)
        out2 = self.c.attention(2, ids, q2, n_q=2)
        assert_close(self, out2, self.want(2, ids, [2, 2, 2], q2)[0], 2e-4)
        out2d = self.c.attention(2, ids, q2.reshape(3, 2, QHEADS, DIM), return_lse=True)[0]
        assert_close(self, out2d.reshape(out2.shape), out2, 1e-6)
        # one sequence given as a plain int: every row of q is its query
        q3 = queries(3, seed=3.0)
        out3 = self.c.attention(0, 3, q3)
        assert_close(self, out3, self.want(0, [3], [3], q3)[0], 2e-4)

    def test_append_attention_is_both_calls(self):
        a, b = make(), make()
        try:
            for c in (a, b):
                put(c, 0, 0, 30, 1)
            pos = 30
            for step, n in enumerate((1, 2, 1)):
                k, v = rows(pos, n, 7), rows(pos, n, 8)
                q = queries(n, seed=30.0 + step)
                if step == 2:  # float16 inputs
                    k, v, q = k.astype(np.float16), v.astype(np.float16), q.astype(np.float16)
                got, stats = a.append_attention(0, 2, k, v, q, return_stats=True)
                b.append(0, 2, k, v)
                want, want_stats = b.attention(2, 0, q, return_stats=True)
                np.testing.assert_array_equal(got, want)
                self.assertEqual(stats, want_stats)
                pos += n
            self.assertEqual(a.length(0, 2), 34)
            np.testing.assert_array_equal(a.dequantize(0, 2, 1), b.dequantize(0, 2, 1))
            # refused before anything is stored
            with self.assertRaisesRegex(ValueError, "q"):
                a.append_attention(0, 2, rows(34, 1, 7), rows(34, 1, 8), queries(2))
            with self.assertRaisesRegex(turbokv.Error, "multiple of n_kv_heads"):
                a.append_attention(0, 2, rows(34, 1, 7), rows(34, 1, 8), np.zeros((1, 3, DIM), np.float32))
            # out sharing memory with v: the new rows would be overwritten
            # while they are read
            shared = np.zeros((1, QHEADS, DIM), np.float32)
            shared[:, :HEADS] = rows(34, 1, 8)
            with self.assertRaisesRegex(ValueError, "out overlaps v"):
                a.append_attention(0, 2, rows(34, 1, 7), shared[:, :HEADS], queries(1), out=shared)
            self.assertEqual(a.length(0, 2), 34)
        finally:
            a.close()
            b.close()

    def test_stats_and_out(self):
        q = queries(2)
        out = np.full_like(q, np.nan)
        got, stats = self.c.attention(0, [0, 1], q, return_stats=True, out=out)
        self.assertIs(got, out)
        self.assertFalse(np.isnan(out).any())
        # every V row visible to every query head; sparse V is off
        self.assertEqual(stats, turbokv.AttentionStats(rows_total=(90 + 7) * QHEADS, rows_skipped=0))
        _, lse, stats = self.c.attention(0, [0, 1], q, window=5, return_lse=True, return_stats=True)
        self.assertEqual(stats.rows_total, (5 + 5) * QHEADS)
        with self.assertRaisesRegex(ValueError, "out overlaps q"):
            self.c.attention(0, [0, 1], q, out=q)
        with self.assertRaisesRegex(ValueError, "out is read-only"):
            ro = np.empty_like(q)
            ro.flags.writeable = False
            self.c.attention(0, [0, 1], q, out=ro)

    def test_float16_queries_and_out(self):
        ids, nq = [3, 1], [2, 3]
        q = queries(5, seed=4.0).astype(np.float16)
        want = self.c.attention(1, ids, q.astype(np.float32), n_q=nq)
        got = self.c.attention(1, ids, q, n_q=nq)  # out follows q's dtype
        self.assertEqual(got.dtype, np.float16)
        np.testing.assert_array_equal(got, want.astype(np.float16))  # rounded to nearest even
        out32 = np.empty(q.shape, np.float32)
        got32, lse = self.c.attention(1, ids, q, n_q=nq, out=out32, return_lse=True)
        np.testing.assert_array_equal(got32, want)
        self.assertEqual(lse.dtype, np.float32)

    def test_shape_checks(self):
        q = queries(12)
        with self.assertRaisesRegex(ValueError, r"n_q adds up to 11"):
            self.c.attention(1, [3, 1, 0], q, n_q=[1, 6, 4])
        with self.assertRaisesRegex(ValueError, "n_q has 2 counts for 3 sequences"):
            self.c.attention(1, [3, 1, 0], q, n_q=[1, 11])
        with self.assertRaisesRegex(ValueError, "q has 12 query rows, not a multiple of the 5 sequences"):
            self.c.attention(1, [3, 1, 0, 0, 1], q)
        with self.assertRaisesRegex(ValueError, r"q has shape \(12, 4, 32\), expected \(\*, \*, 64\)"):
            self.c.attention(1, [0], np.zeros((12, 4, 32), np.float32))
        with self.assertRaisesRegex(ValueError, r"expected \(2, \*, \*, 64\)"):
            self.c.attention(1, [0, 1], q.reshape(3, 4, QHEADS, DIM))
        with self.assertRaisesRegex(ValueError, "seq_ids must be a list"):
            self.c.attention(1, 0, q.reshape(1, 12, QHEADS, DIM))
        with self.assertRaisesRegex(TypeError, "dtype float64"):
            self.c.attention(1, [0], q.astype(np.float64))
        with self.assertRaisesRegex(ValueError, "seq_ids is empty"):
            self.c.attention(1, [], q)
        with self.assertRaisesRegex(ValueError, r"scale 0 is 0 \(pass None"):
            self.c.attention(1, [0], q[:1], scale=0)

    def test_library_checks(self):
        ids, q = [3, 1, 0], queries(12)
        with self.assertRaises(turbokv.InvalidArgumentError) as e:
            self.c.attention(1, ids, q[:2], n_q=[1, 0, 1])
        self.assertIn("n_q of sequence 1 is 0", e.exception.message)
        with self.assertRaises(turbokv.RangeError) as e:
            self.c.attention(1, ids, np.concatenate([q, q[:1]]), n_q=[1, 8, 4])
        self.assertIn("fewer than n_q = 8", e.exception.message)
        with self.assertRaises(turbokv.InvalidArgumentError) as e:
            self.c.attention(1, ids, q, n_q=[1, 7, 4], softcap=-1.0)
        self.assertIn("softcap", e.exception.message)
        self.assertEqual(e.exception.function, "tkv_attention_ex")
        with self.assertRaises(turbokv.InvalidArgumentError) as e:
            self.c.attention(1, [0], np.zeros((1, 3, DIM), np.float32))
        self.assertIn("n_q_heads 3 must be a positive multiple of n_kv_heads 2", e.exception.message)
        self.assertEqual(e.exception.function, "tkv_attention")
        with self.assertRaises(turbokv.RangeError) as e:
            self.c.attention(LAYERS, [0], q[:1])
        self.assertIn("layer 3 out of range", e.exception.message)


class Sequences(unittest.TestCase):
    def test_truncate_then_reappend(self):
        a, b = make(), make()
        put(a, 0, 0, 100, 1)
        a.truncate(0, 37)
        self.assertEqual(a.bytes().blocks_used, 3)  # ceil(37 / 16): the others went back
        self.assertEqual([a.length(0, layer) for layer in range(LAYERS)], [37] * LAYERS)
        put(a, 0, 37, 43, 2)  # other rows than the ones dropped
        put(b, 0, 0, 37, 1)
        put(b, 0, 37, 43, 2)
        self.assertEqual(a.state(0), b.state(0))
        a.truncate(0, 1000)  # past the end: nothing changes
        self.assertEqual(a.state(0), b.state(0))
        with self.assertRaises(turbokv.RangeError) as e:
            a.truncate(SEQS, 1)
        self.assertIn("sequence 4 out of range", e.exception.message)
        a.close()
        b.close()

    def test_copy_shares_blocks_then_copies_on_write(self):
        a, b = make("q8_0", "turbo3"), make("q8_0", "turbo3")
        put(a, 0, 0, 50, 1)
        a.copy(0, 1, 40)
        self.assertEqual(a.bytes().blocks_used, 4)  # the copy shares every block
        put(a, 1, 40, 5, 2)  # writes into shared block 2: copied first
        put(a, 0, 50, 3, 1)
        self.assertEqual(a.bytes().blocks_used, 5)
        put(b, 0, 0, 53, 1)
        put(b, 1, 0, 40, 1)
        put(b, 1, 40, 5, 2)
        self.assertEqual(a.state(0), b.state(0))
        self.assertEqual(a.state(1), b.state(1))
        q = queries(2)
        np.testing.assert_allclose(a.attention(2, [0, 1], q), b.attention(2, [0, 1], q), rtol=0, atol=1e-6)
        a.copy(0, 2)  # n None: all of it
        self.assertEqual(a.length(2, 0), 53)
        self.assertEqual(a.state(2), b.state(0))
        with self.assertRaises(turbokv.InvalidArgumentError) as e:
            a.copy(1, 1, 4)
        self.assertIn("both sequence 1", e.exception.message)
        with self.assertRaises(turbokv.RangeError) as e:
            a.copy(0, SEQS, 4)
        self.assertIn("destination 4 out of range", e.exception.message)
        a.close()
        b.close()

    def test_remove_keep_clear(self):
        a = make(block_tokens=8)
        put(a, 0, 0, 20, 1)  # 3 blocks
        put(a, 1, 0, 9, 2)  # 2
        a.copy(0, 2, 16)  # shares 2
        put(a, 3, 0, 1, 3)  # 1
        self.assertEqual(a.bytes().blocks_used, 6)
        a.remove(0)
        self.assertEqual(a.bytes().blocks_used, 5)  # 2 still held by sequence 2
        a.keep(2)
        self.assertEqual(a.bytes().blocks_used, 2)
        self.assertEqual([a.length(s, 0) for s in range(SEQS)], [0, 0, 16, 0])
        a.clear(2)
        self.assertEqual((a.length(2, 0), a.bytes().blocks_used), (0, 0))
        a.close()

    def test_full_pool_changes_nothing(self):
        a = make(block_tokens=4, pool_blocks=3, pool_fixed=True)
        b = a.bytes()
        self.assertEqual((b.blocks_allocated, b.blocks_max), (3, 3))
        put(a, 0, 0, 10, 1)  # 3 blocks
        before = a.state(0)
        k = rows(10, 3, 1)
        with self.assertRaises(turbokv.NoMemoryError) as e:
            a.append(0, 0, k, k)
        self.assertIn("block pool full", e.exception.message)
        self.assertEqual(a.state(0), before)
        a.append(0, 0, k[:2], k[:2])  # the last block still has room for 2
        a.close()


class State(unittest.TestCase):
    def test_round_trip_and_refusals(self):
        a = make("turbo3", "turbo4")
        put(a, 1, 0, 70, 5)
        img = a.state(1)
        self.assertIsInstance(img, bytes)
        b = make("turbo3", "turbo4", block_tokens=5)  # another block size
        put(b, 3, 0, 9, 6)
        b.set_state(3, img)
        self.assertEqual(b.state(3), img)
        b.set_state(2, bytearray(img))  # any bytes-like object
        b.set_state(1, np.frombuffer(img, np.uint8))
        self.assertEqual(b.state(1), img)
        bad = bytearray(img)
        bad[len(bad) // 2] ^= 0x10
        with self.assertRaises(turbokv.FormatError) as e:
            b.set_state(0, bad)
        self.assertIn("checksum mismatch", e.exception.message)
        with self.assertRaises(turbokv.FormatError) as e:
            b.set_state(3, img[:-3])
        self.assertIn("truncated", e.exception.message)
        self.assertEqual(b.state(3), img)  # kept what it held
        with self.assertRaisesRegex(TypeError, "data must be bytes-like, got str"):
            b.set_state(3, "image")
        c = make("turbo4", "turbo4")
        with self.assertRaises(turbokv.FormatError) as e:
            c.set_state(0, img)
        self.assertIn("layer 0 holds K turbo3", e.exception.message)
        empty = a.state(2)
        b.set_state(3, empty)  # an empty sequence's image empties the target
        self.assertEqual(b.length(3, 1), 0)
        for x in (a, b, c):
            x.close()

    def test_files(self):
        a, b = make(), make(block_tokens=5)
        put(a, 1, 0, 70, 5)
        path = temp_path("seq.tkv")
        a.save_seq(1, path)
        b.restore_seq(0, path)
        self.assertEqual(b.state(0), a.state(1))
        a.save(path)  # a whole-cache file of 4 sequences is not one sequence
        with self.assertRaises(turbokv.FormatError) as e:
            b.restore_seq(0, path)
        self.assertIn("x 4 sequences, expected", e.exception.message)
        missing = temp_path("absent.tkv")
        with self.assertRaises(turbokv.Error) as e:
            b.restore_seq(0, missing)
        self.assertIn(missing, e.exception.message)
        os.unlink(path)
        a.close()
        b.close()


class Files(unittest.TestCase):
    def test_save_load_restore(self):
        a = make("turbo3", "q8_0", block_tokens=8)
        put(a, 0, 0, 33, 1)
        put(a, 2, 0, 5, 2)
        path = temp_path("cache.tkv")
        a.save(path)
        b = ctx.load(path)
        self.assertEqual(b.shape.n_seqs, SEQS)
        self.assertEqual(b.layer_types(2), ("turbo3", "q8_0"))
        for s in range(SEQS):
            self.assertEqual(b.state(s), a.state(s))
        q = queries(2)
        np.testing.assert_array_equal(b.attention(1, [0, 2], q), a.attention(1, [0, 2], q))
        # restore over changed contents brings the file's back
        put(b, 0, 33, 4, 9)
        b.remove(2)
        b.restore(path)
        for s in range(SEQS):
            self.assertEqual(b.state(s), a.state(s))
        # a cache of other types refuses the file and keeps its contents
        c = make("turbo4", "q8_0")
        put(c, 1, 0, 3, 4)
        before = c.state(1)
        with self.assertRaises(turbokv.FormatError):
            c.restore(path)
        self.assertEqual(c.state(1), before)
        # errors name the file
        with open(path, "r+b") as f:
            f.seek(-20, os.SEEK_END)  # in the rows
            byte = f.read(1)
            f.seek(-20, os.SEEK_END)
            f.write(bytes([byte[0] ^ 1]))
        with self.assertRaises(turbokv.FormatError) as e:
            ctx.load(path)
        self.assertIn("checksum mismatch", e.exception.message)
        self.assertIn(path, e.exception.message)
        with self.assertRaises(turbokv.Error) as e:
            ctx.load(temp_path("absent.tkv"))
        self.assertIn("absent.tkv", e.exception.message)
        with self.assertRaisesRegex(TypeError, "path must be a str, bytes or os.PathLike"):
            a.save(3)
        os.unlink(path)
        for x in (a, b, c):
            x.close()


if __name__ == "__main__":
    unittest.main()
