#!/usr/bin/env python3
"""Checks a GGUF written by `patchllm convert --to gguf` against gguf-py's own conventions (an independent reference).

    python3 tools/gguf_export_check.py HF_DIR FILE.gguf [--orig ORIGINAL.gguf]

From HF_DIR alone, with gguf-py (pip package `gguf`) and numpy, it rebuilds what llama.cpp's convert_hf_to_gguf.py
would write: tensor names via gguf.get_tensor_name_map (TensorNameMap), the tensor set allowed by
gguf.MODEL_TENSORS[arch], hyper-parameter keys with the value types GGUFWriter.add_* gives them (written with a real
GGUFWriter and read back), Q/K rows permuted with LlamaModel.permute (transcribed), Gemma norms + 1, special tokens
and merges from gguf.SpecialVocab. Then it compares FILE.gguf field by field and every tensor's data. With --orig,
tokenizer keys are also compared with a GGUF that llama.cpp's converter produced for the same model.
Exit status 0 when everything matches; each mismatch is printed.
"""
import argparse
import json
import os
import struct
import sys
import tempfile

import numpy as np
import gguf

errors = []


def err(msg):
    errors.append(msg)
    print("MISMATCH:", msg)


def read_safetensors(d):
    files = [os.path.join(d, "model.safetensors")]
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        files = sorted({os.path.join(d, f) for f in json.load(open(idx))["weight_map"].values()})
    out = {}
    for f in files:
        raw = open(f, "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        hdr = json.loads(raw[8:8 + n])
        for name, e in hdr.items():
            if name == "__metadata__":
                continue
            b, en = e["data_offsets"]
            buf = raw[8 + n + b:8 + n + en]
            if e["dtype"] == "BF16":
                a = (np.frombuffer(buf, np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif e["dtype"] == "F16":
                a = np.frombuffer(buf, np.float16).astype(np.float32)
            elif e["dtype"] == "F32":
                a = np.frombuffer(buf, np.float32)
            else:
                sys.exit(f"{f}: tensor {name} has dtype {e['dtype']}")
            out[name] = a.reshape(e["shape"])
    return out


def permute(w, n_head, n_head_kv):  # convert_hf_to_gguf.py LlamaModel.permute
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def field_value(f):
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        return list(f.contents())
    return f.contents()


def reference_kv(arch, c, file_type, tmp):
    """Hyper-parameters as convert_hf_to_gguf.py's TextModel/LlamaModel/Gemma3Model write them, via GGUFWriter."""
    w = gguf.GGUFWriter(tmp, arch)
    gemma = arch == "gemma3"
    w.add_block_count(c["num_hidden_layers"])
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"])
    w.add_head_count_kv(c.get("num_key_value_heads", c["num_attention_heads"]))
    w.add_rope_freq_base(c.get("rope_theta", 1e6 if gemma else 1e4))
    w.add_layer_norm_rms_eps(c.get("rms_norm_eps", 1e-6 if gemma else 1e-5))
    hd = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    if gemma or hd != c["hidden_size"] // c["num_attention_heads"]:
        w.add_key_length(hd)
        w.add_value_length(hd)
    w.add_file_type(file_type)
    if arch == "llama":
        w.add_vocab_size(c["vocab_size"])
        w.add_rope_dimension_count(hd)
    if c.get("sliding_window") and arch in ("llama", "gemma3"):
        w.add_sliding_window(c["sliding_window"])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    r = gguf.GGUFReader(tmp)
    return {k: (f.types, field_value(f)) for k, f in r.fields.items() if not k.startswith("GGUF.")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("hf_dir")
    ap.add_argument("gguf_file")
    ap.add_argument("--orig", help="a GGUF of the same model made by llama.cpp's convert_hf_to_gguf.py")
    a = ap.parse_args()

    c = json.load(open(os.path.join(a.hf_dir, "config.json")))
    arch = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
            "Gemma3ForCausalLM": "gemma3"}[c["architectures"][0]]
    r = gguf.GGUFReader(a.gguf_file)
    fields = {k: f for k, f in r.fields.items() if not k.startswith("GGUF.")}
    got_arch = fields["general.architecture"].contents()
    if got_arch != arch:
        err(f"general.architecture {got_arch} != {arch}")
    ft = fields["general.file_type"].contents()

    # 1. Hyper-parameters: same keys, same GGUF value types, same values as gguf-py's writer produces.
    with tempfile.TemporaryDirectory() as td:
        ref = reference_kv(arch, c, ft, os.path.join(td, "ref.gguf"))
    for k, (types, val) in ref.items():
        if k not in fields:
            err(f"missing key {k}")
            continue
        f = fields[k]
        if list(f.types) != list(types):
            err(f"{k}: type {f.types} != gguf-py's {types}")
        v = field_value(f)
        if isinstance(val, float) and not np.isclose(v, val, rtol=0, atol=0) or (not isinstance(val, float) and v != val):
            err(f"{k}: {v!r} != {val!r}")
    print(f"hyper-parameters: {len(ref)} keys compared")

    # 2. Tensors: names from gguf-py's TensorNameMap, allowed by MODEL_TENSORS[arch], shapes/types/data.
    hf = read_safetensors(a.hf_dir)
    n_blocks = c["num_hidden_layers"]
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], n_blocks)
    allowed = {gguf.TENSOR_NAMES[t].format(bid=b) for t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH[arch.upper()]]
               for b in range(n_blocks)}
    tied = c.get("tie_word_embeddings", arch == "gemma3") or "lm_head.weight" not in hf
    ours = {t.name: t for t in r.tensors}
    expected = set()
    nh, nkv = c["num_attention_heads"], c.get("num_key_value_heads")
    for name, w in hf.items():
        if name == "lm_head.weight" and tied:
            continue
        g = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if g is None:
            err(f"gguf-py has no name for {name}")
            continue
        expected.add(g)
        if g.rsplit(".", 1)[0] not in allowed:
            err(f"{g} is not a tensor of gguf arch {arch}")
        if g not in ours:
            err(f"missing tensor {g} (from {name})")
            continue
        t = ours[g]
        want_type = "F32" if w.ndim == 1 or ft == 0 else {1: "F16", 32: "BF16"}[ft]
        if t.tensor_type.name != want_type:
            err(f"{g}: type {t.tensor_type.name} != {want_type}")
        if list(t.shape) != list(reversed(w.shape)):
            err(f"{g}: ne {list(t.shape)} != {list(reversed(w.shape))}")
        w = w.astype(np.float32)
        if arch == "llama" and name.endswith(("q_proj.weight", "q_proj.bias")):
            w = permute(w, nh, nh)
        if arch == "llama" and name.endswith(("k_proj.weight", "k_proj.bias")):
            w = permute(w, nh, nkv)
        if arch == "gemma3" and name.endswith("norm.weight"):
            w = w + 1
        data = np.array(t.data)
        if t.tensor_type.name == "BF16":
            data = (data.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
            w = (w.view(np.uint32) + 0x7FFF + ((w.view(np.uint32) >> 16) & 1) >> 16 << 16).view(np.float32)
        elif t.tensor_type.name == "F16":
            data = data.astype(np.float32)
            w = w.astype(np.float16).astype(np.float32)
        data = data.reshape(w.shape)
        if not np.array_equal(data.view(np.uint32), w.view(np.uint32)):
            err(f"{g}: data differs from the HF tensor ({np.abs(data - w).max()} max abs)")
        if w.ndim == 2 and int((w == 0).sum()) != int((data == 0).sum()):
            err(f"{g}: {int((data == 0).sum())} zeros, HF has {int((w == 0).sum())}")
    extra = set(ours) - expected - {"rope_freqs.weight"}
    if extra:
        err(f"unexpected tensors {sorted(extra)[:5]}")
    print(f"tensors: {len(expected)} compared (names, ne, types, data bit-exact, zeros)")

    # 3. Tokenizer: gguf-py's SpecialVocab on the HF dir, token list against tokenizer.json.
    n_vocab = hf["model.embed_tokens.weight"].shape[0]
    sv = gguf.SpecialVocab(a.hf_dir, load_merges=True, n_vocab=n_vocab)
    keys = {"bos": "bos", "eos": "eos", "unk": "unknown", "sep": "seperator", "pad": "padding", "cls": "cls",
            "mask": "mask"}
    for typ, tid in sv.special_token_ids.items():
        k = f"tokenizer.ggml.{keys[typ]}_token_id"
        if k not in fields or fields[k].contents() != tid:
            err(f"{k}: {fields[k].contents() if k in fields else None} != SpecialVocab's {tid}")
    for typ, v in sv.add_special_token.items():
        k = f"tokenizer.ggml.add_{typ}_token"
        if typ in ("bos", "eos") and (k not in fields or fields[k].contents() != v):
            err(f"{k}: {fields[k].contents() if k in fields else None} != SpecialVocab's {v}")
    model = fields["tokenizer.ggml.model"].contents()
    if model == "gpt2" and field_value(fields["tokenizer.ggml.merges"]) != sv.merges:
        err("tokenizer.ggml.merges differ from SpecialVocab's")
    tj = json.load(open(os.path.join(a.hf_dir, "tokenizer.json")))
    toks = field_value(fields["tokenizer.ggml.tokens"])
    if len(toks) != n_vocab:
        err(f"{len(toks)} tokens for {n_vocab} embedding rows")
    vocab = dict(tj["model"]["vocab"])
    vocab.update({t["content"]: t["id"] for t in tj.get("added_tokens", [])})
    bad = [t for t, i in vocab.items() if toks[i] != t]
    if bad:
        err(f"{len(bad)} tokens differ from tokenizer.json, e.g. {bad[:3]}")
    for k in ("tokenizer.ggml.token_type",):
        if list(fields[k].types) != [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32]:
            err(f"{k}: type {fields[k].types}")
    if model == "llama" and list(fields["tokenizer.ggml.scores"].types) != [gguf.GGUFValueType.ARRAY,
                                                                           gguf.GGUFValueType.FLOAT32]:
        err("tokenizer.ggml.scores is not an array of float32")
    print(f"tokenizer: model {model}, {len(toks)} tokens, specials {sv.special_token_ids}")

    if a.orig:
        o = gguf.GGUFReader(a.orig)
        of = {k: f for k, f in o.fields.items()}
        n = 0
        for k, f in of.items():
            if not k.startswith("tokenizer.") or k == "tokenizer.chat_template":
                continue
            n += 1
            if k not in fields:
                err(f"{k} in the llama.cpp-made file, not in ours")
            elif field_value(fields[k]) != field_value(f):
                err(f"{k} differs from the llama.cpp-made file")
        print(f"--orig: {n} tokenizer keys compared with {a.orig}")

    print("OK" if not errors else f"{len(errors)} mismatches")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
