#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes the seed corpora under fuzz/corpus/ (checked in; run again only to
change them): small valid and near-valid inputs of each format, so the
fuzzers start from inputs that get past the first checks."""
import os
import struct
import sys

root = os.path.dirname(os.path.abspath(__file__))
src = os.path.dirname(root)


def put(kind, name, data):
    d = os.path.join(root, "corpus", kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# --- YAML config
put("config", "shipped.yaml", open(os.path.join(src, "etc", "turbokv.yaml"), "rb").read())
put("config", "every-key.yaml",
    "backend: Vulkan\ndevice: 3\nplugin_path: \"/opt/a:/opt/b\"\nscheme: k8v4\nk_type: q8_0\n"
    "v_type: 'turbo3'\nsparse_v: off\nsparse_v_threshold: 0.001\nlayer_adaptive: 7\n"
    "layers: \"0:q8_0/q8_0,2-3:/turbo4\"\nauto_asymmetric: No\nnorm_correction: 0\n"
    "rotation: DENSE\nthreads: 16\nlog: debug\n")
put("config", "layers-seq.yaml",
    "layers:\n  - {layer: 0, k_type: q8_0, v_type: q8_0}\n  - layer: 1-3\n    v_type: turbo4\n"
    "  - {layer: 4095, k_type: turbo3_qjl}\n")
put("config", "flow.yaml", "{backend: my-plugin_2, device: auto, threads: 1024, sparse_v_threshold: 1e-30}\n")
put("config", "doc.yaml", "%YAML 1.1\n---\n# comment\nscheme: turbo2  # trailing\nlog: !!str warn\n...\n")
put("config", "anchors.yaml", "backend: &b cpu\nrotation: *b\n")
put("config", "empty.yaml", "")

# --- TURBO_* environment: [key byte][value]\0 ...
KEYS = ["backend", "device", "plugin_path", "scheme", "k_type", "v_type", "sparse_v", "sparse_v_threshold",
        "layer_adaptive", "layers", "auto_asymmetric", "norm_correction", "rotation", "threads", "log"]


def env(pairs):
    return b"".join(bytes([KEYS.index(k)]) + v.encode() + b"\0" for k, v in pairs)


put("env", "every-key", env([("backend", "OPENCL"), ("device", "255"), ("plugin_path", "/x:/y"),
                             ("scheme", "K16V3"), ("k_type", "turbo4_qjl"), ("v_type", "F16"),
                             ("sparse_v", "Yes"), ("sparse_v_threshold", "0.5"), ("layer_adaptive", "5"),
                             ("layers", "0:q8_0/q8_0,1-3:/turbo4,7:f32/"), ("auto_asymmetric", "0"),
                             ("norm_correction", "on"), ("rotation", "none"), ("threads", "8"),
                             ("log", "Info")]))
put("env", "layers", env([("layers", "0-4095:turbo2/turbo2")]))
put("env", "bad", env([("threads", "99999999999999999999"), ("device", " 1")]))
put("env", "empty-values", env([("backend", ""), ("scheme", "auto")]))


# --- .npy
def npy(major, dict_text, data):
    pre = 10 if major == 1 else 12
    header = len(dict_text) + 1
    header += (64 - (pre + header) % 64) % 64
    body = dict_text.encode() + b" " * (header - len(dict_text) - 1) + b"\n"
    size = struct.pack("<H", header) if major == 1 else struct.pack("<I", header)
    return b"\x93NUMPY" + bytes([major, 0]) + size + body + data


put("npy", "tokens.npy", open(os.path.join(src, "models", "s260k_tokens.npy"), "rb").read())
put("npy", "nll.npy", open(os.path.join(src, "models", "s260k_nll.npy"), "rb").read())
put("npy", "v2-2d.npy", npy(2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                            struct.pack("<6f", 1, 2, 3, 4, 5, 6)))
put("npy", "v3-scalar.npy", npy(3, "{'descr': '<i4', 'fortran_order': False, 'shape': (), }",
                                struct.pack("<i", 7)))
put("npy", "empty.npy", npy(1, "{'shape': (0, 5), 'fortran_order': False, 'descr': '<i4'}", b""))
put("npy", "long.npy", npy(1, "{\"descr\": \"<i4\", \"fortran_order\": False, \"shape\": (1L, 2L,), }",
                           struct.pack("<2i", 1, 2)))


# --- llama2.c models, weights w[i] = i / n
def model(dim, hidden, layers, heads, kv_heads, vocab, seq_len, freq):
    hd = dim // heads
    kv = kv_heads * hd
    v = abs(vocab)
    n = v * dim + layers * (2 * dim + 2 * dim * dim + 2 * kv * dim + 3 * hidden * dim) + dim
    if freq:
        n += seq_len * hd
    if vocab < 0:
        n += v * dim
    head = struct.pack("<7i", dim, hidden, layers, heads, kv_heads, vocab, seq_len)
    return head + struct.pack("<%df" % n, *[i / n for i in range(n)])


put("llama2", "tiny.bin", model(8, 16, 1, 1, 1, 4, 4, False))
put("llama2", "tiny-freq.bin", model(8, 16, 1, 1, 1, 4, 4, True))
put("llama2", "gqa-cls.bin", model(16, 8, 2, 2, 1, -3, 2, True))

# --- tokenizer: uint16 vocab, uint16 text length, text, file
tok = open(os.path.join(src, "models", "tok512.bin"), "rb").read()
for name, text in [("story", "Once upon a time, there was a little girl."), ("bytes", "caf\u00e9 \u4e16\u754c \x01"),
                   ("empty", "")]:
    t = text.encode()
    put("tokenizer", name, struct.pack("<HH", 512, len(t)) + t + tok)
