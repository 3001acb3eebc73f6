#!/usr/bin/env python3
"""Builds the small GGUF golden files under tests/data/gguf/ with the reference implementation (gguf-py).

    pip install gguf==0.19.0 numpy
    python3 tools/gguf_make_testdata.py [--out tests/data/gguf]

Files:
  quants.gguf       one tensor per tensor type, named after the type. Types gguf-py can quantize are quantized from
                    seeded random floats with gguf.quants.quantize; K-quants (no quantizer in gguf-py) are random
                    valid blocks crafted bytewise (random bits, finite fp16 scales).
  quants_ref.gguf   the same names as F32: gguf.quants.dequantize of each tensor (the expected output).
  meta.gguf         every metadata value type, nested arrays, a non-default general.alignment (64) and two tensors.
  writer_ref.gguf   what gguf-py's GGUFWriter writes for a fixed model-like content; test_gguf rebuilds the same
                    content with patchllm's GgufWriter and compares bytes.
Everything is deterministic (seeded); rerunning reproduces the committed bytes.
"""
import argparse
import importlib.metadata
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V

SEED = 20240605
ROWS, COLS = 2, 512  # every tensor in quants.gguf: shape [2, 512] (ne = [512, 2])


def f16_specials():
    # Exercise fp16 edge cases: zeros, subnormals, max, inf, a quiet NaN.
    return np.array([0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00, 0x3C00,
                     0x3555], dtype=np.uint16)


def bf16_specials():
    return np.array([0x0000, 0x8000, 0x0001, 0x007F, 0x0080, 0x7F7F, 0xFF7F, 0x7F80, 0xFF80, 0x7FC0, 0x3F80,
                     0x3EAB], dtype=np.uint16)


def random_fp16(rng, n, lo, hi):
    mag = np.exp(rng.uniform(np.log(lo), np.log(hi), n)).astype(np.float16)
    sign = rng.choice([-1, 1], n).astype(np.float16)
    return (mag * sign).view(np.uint16)


def kquant_blocks(rng, qtype, n_blocks):
    """Random K-quant super-blocks: random bytes everywhere, then finite, sensibly scaled fp16 d (and dmin)."""
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    b = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    def put_f16(col, lo, hi, positive=False):
        h = random_fp16(rng, n_blocks, lo, hi)
        if positive:
            h = h & np.uint16(0x7FFF)
        b[:, col:col + 2] = h.view(np.uint8).reshape(n_blocks, 2)
    if qtype == T.Q2_K:    # scales[16] qs[64] d dmin
        put_f16(80, 1e-3, 1e-1); put_f16(82, 1e-3, 1e-1)
    elif qtype == T.Q3_K:  # hmask[32] qs[64] scales[12] d
        put_f16(108, 1e-3, 1e-1)
    elif qtype in (T.Q4_K, T.Q5_K):  # d dmin scales[12] ...
        put_f16(0, 1e-3, 1e-1); put_f16(2, 1e-3, 1e-1)
    elif qtype == T.Q6_K:  # ql[128] qh[64] scales[16] d
        put_f16(208, 1e-3, 1e-1)
    else:
        raise ValueError(qtype)
    return b


def build_quants(out):
    rng = np.random.default_rng(SEED)
    w = gguf.GGUFWriter(os.path.join(out, "quants.gguf"), "test")
    ref = gguf.GGUFWriter(os.path.join(out, "quants_ref.gguf"), "test")
    entries = []  # (name, raw bytes [ROWS, bytes_per_row], qtype)

    x = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    x[0, :4] = [0.0, -0.0, 1e-30, -3.3e38]
    entries.append(("F32", x.view(np.uint8), T.F32))

    h = random_fp16(rng, ROWS * COLS, 1e-6, 6e4).reshape(ROWS, COLS)
    h[0, :12] = f16_specials()
    entries.append(("F16", h.view(np.uint8), T.F16))

    bf = gguf.quants.quantize(rng.standard_normal((ROWS, COLS)).astype(np.float32) * 3, T.BF16).view(np.uint16)
    bf[0, :12] = bf16_specials()
    entries.append(("BF16", bf.view(np.uint8), T.BF16))

    for qt in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0):
        data = (rng.standard_normal((ROWS, COLS)) * rng.uniform(0.01, 2.0, (ROWS, 1))).astype(np.float32)
        entries.append((qt.name, gguf.quants.quantize(data, qt), qt))

    for qt in (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K):
        n_blocks = ROWS * COLS // 256
        entries.append((qt.name, kquant_blocks(rng, qt, n_blocks).reshape(ROWS, -1), qt))

    for name, raw, qt in entries:
        raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(ROWS, -1)
        w.add_tensor(name, raw, raw_shape=None, raw_dtype=qt)
        deq = gguf.quants.dequantize(raw, qt).astype(np.float32)
        assert deq.shape == (ROWS, COLS), (name, deq.shape)
        ref.add_tensor(name, deq)

    # A 3-D tensor: row-major shape [2, 3, 4] is ne = [4, 3, 2] in the file.
    cube = np.arange(24, dtype=np.float32).reshape(2, 3, 4) * 0.5 - 3.0
    w.add_tensor("cube", cube)
    ref.add_tensor("cube", cube)

    for wr in (w, ref):
        wr.write_header_to_file()
        wr.write_kv_data_to_file()
        wr.write_tensors_to_file()
        wr.close()


def build_meta(out):
    path = os.path.join(out, "meta.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_custom_alignment(64)
    w.add_uint8("t.u8", 250)
    w.add_int8("t.i8", -120)
    w.add_uint16("t.u16", 65000)
    w.add_int16("t.i16", -32000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 0.1)
    w.add_bool("t.bool_true", True)
    w.add_bool("t.bool_false", False)
    w.add_string("t.str", "h\u00e9llo \u4e16\u754c \U0001F600")
    w.add_uint64("t.u64", 18000000000000000000)
    w.add_int64("t.i64", -9000000000000000000)
    w.add_float64("t.f64", 2.718281828459045)
    w.add_key_value("t.arr_u8", [0, 1, 255], V.ARRAY, sub_type=V.UINT8)
    w.add_key_value("t.arr_i8", [-128, 0, 127], V.ARRAY, sub_type=V.INT8)
    w.add_key_value("t.arr_u16", [0, 65535], V.ARRAY, sub_type=V.UINT16)
    w.add_key_value("t.arr_i16", [-32768, 32767], V.ARRAY, sub_type=V.INT16)
    w.add_key_value("t.arr_u32", [1, 4294967295], V.ARRAY, sub_type=V.UINT32)
    w.add_key_value("t.arr_i32", [-5, 6, -7], V.ARRAY, sub_type=V.INT32)
    w.add_key_value("t.arr_u64", [2**63 + 5], V.ARRAY, sub_type=V.UINT64)
    w.add_key_value("t.arr_i64", [-(2**62), 2**62], V.ARRAY, sub_type=V.INT64)
    w.add_key_value("t.arr_f32", [1.5, -0.25, 3.0e38], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("t.arr_f64", [1e-300, -2.5], V.ARRAY, sub_type=V.FLOAT64)
    w.add_key_value("t.arr_bool", [True, False, True], V.ARRAY, sub_type=V.BOOL)
    w.add_key_value("t.arr_str", ["a", "", "\u00fc\u00df"], V.ARRAY, sub_type=V.STRING)
    # Nested: array of arrays of int32, and array of arrays of arrays of strings.
    w.add_key_value("t.arr_nested", [[1, 2], [3], [4, 5, 6]], V.ARRAY, sub_type=V.ARRAY)
    w.add_key_value("t.arr_nested2", [[["x"], ["y", "z"]], [["w"]]], V.ARRAY, sub_type=V.ARRAY)
    w.add_tensor("a", np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32))
    w.add_tensor("b", np.array([7, 8], dtype=np.int32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # Read back with gguf-py's reader as a sanity check of what was written.
    r = gguf.GGUFReader(path)
    assert r.fields["t.u64"].parts[-1][0] == 18000000000000000000
    assert r.alignment == 64


def writer_ref_tensors():
    """Deterministic content the C++ test rebuilds: must stay in sync with tests/test_gguf.cc (WriterMatchesGgufPy)."""
    n = np.arange(4 * 64, dtype=np.float32).reshape(4, 64)
    f32 = n * 0.125 - 7.0
    f16 = (n * 0.01 - 1.0).astype(np.float16)
    bf16 = gguf.quants.quantize(n * -0.3 + 2.0, T.BF16).view(np.uint16)
    return f32, f16, bf16


def build_writer_ref(out):
    path = os.path.join(out, "writer_ref.gguf")
    w = gguf.GGUFWriter(path, "llama")  # adds general.architecture first
    w.add_string("general.name", "tiny")
    w.add_uint32("llama.block_count", 2)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_bool("llama.use_parallel_residual", False)
    w.add_key_value("tokenizer.ggml.tokens", ["<s>", "</s>", "a b"], V.ARRAY, sub_type=V.STRING)
    w.add_key_value("tokenizer.ggml.scores", [0.0, -1.5, 2.25], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("tokenizer.ggml.token_type", [3, 3, 1], V.ARRAY, sub_type=V.INT32)
    f32, f16, bf16 = writer_ref_tensors()
    w.add_tensor("w.f32", f32)
    w.add_tensor("w.f16", f16)
    w.add_tensor("w.bf16", bf16, raw_dtype=T.BF16)
    w.add_tensor("v.f32", f32[0, :3].copy())  # 12 bytes: padded to the alignment
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = gguf.GGUFReader(path)
    assert [t.name for t in r.tensors] == ["w.f32", "w.f16", "w.bf16", "v.f32"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "gguf"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    build_quants(args.out)
    build_meta(args.out)
    build_writer_ref(args.out)
    total = 0
    for f in sorted(os.listdir(args.out)):
        size = os.path.getsize(os.path.join(args.out, f))
        total += size
        print(f"{f}: {size} bytes")
    print(f"total: {total} bytes (gguf-py {importlib.metadata.version('gguf')})")


if __name__ == "__main__":
    main()
