#!/usr/bin/env python3
"""Checks a `patchllm convert --from gguf` output directory against Hugging Face transformers' own GGUF loader.

    pip install gguf transformers tokenizers accelerate torch
    python3 tools/gguf_check_transformers.py FILE.gguf HF_DIR [--no-weights] [--no-tokens]
    python3 tools/gguf_check_transformers.py --make-tiny-llama tiny.gguf     # a random LLaMA-architecture GGUF
    python3 tools/gguf_check_transformers.py FILE.gguf HF_DIR --patchllm build/patchllm [--no-weights --no-tokens]

Weights: transformers dequantises the GGUF (gguf-py) and undoes llama.cpp's conventions itself (Q/K permutation
for llama, +1 on Gemma norms); every tensor of HF_DIR/model.safetensors must equal its state_dict (convert with fp32
for a bit-exact comparison; bf16 output is compared after rounding the reference to bf16).
Tokens: the tokenizer transformers builds from the GGUF metadata vs HF_DIR/tokenizer.json loaded by `tokenizers`, on
a mixed text (English, code, Unicode, whitespace runs, special tokens); ids and decoded text must match.
Known reference quirk: for SentencePiece ("llama") vocabularies transformers' GGUF converter uses Metaspace with
prepend_scheme "first", which adds no "\u2581" to a text that already starts with a space; SentencePiece and llama.cpp
always add it (LLaMA-2's tokenizer.model: "   leading" -> ['\u2581\u2581\u2581', '\u2581leading']), as patchllm does.
--patchllm BIN: the model itself: transformers runs HF_DIR (AutoModelForCausalLM, fp32, on --device: cpu or cuda,
TF32 off) and `BIN eval logits` the same ids on the same device (each prompt alone, then all in one left-padded batch
with position_ids = cumsum(mask) - 1, as generate() does); max |ours - HF| / max |HF| per prompt over real positions must be <= 1e-4. Then greedy generation
(`BIN generate --temp 0` vs HF generate(do_sample=False)) of --gen-tokens tokens per prompt: texts must be equal.
--make-tiny-llama writes a small random llama GGUF with Q/K permuted as convert_hf_to_gguf.py does, since none of
the real models on PyPI is LLaMA-architecture. Exit status 1 on any mismatch.
"""
import argparse
import os
import sys

import numpy as np

TEXTS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "def f(x):\n    return x**2  # square\n\n\tprint(f(3))",
    "Unicode: na\u00efve caf\u00e9, Stra\u00dfe, \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8, \U0001F680\U0001F525, "
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac, \u0440\u0443\u0441\u0441\u043a\u0438\u0439",
    "   leading spaces and    runs of     whitespace\n\n\n  and newlines  ",
    "numbers 1234567890 3.14159 1e-6 and symbols <>&%$#@!~`",
    "<start_of_turn>user\nhi<end_of_turn> <|im_start|>assistant\n<|im_end|>",
]


def load_ref_model(gguf_path):
    import torch
    from transformers import AutoModelForCausalLM
    d, f = os.path.split(os.path.abspath(gguf_path))
    return AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)


def check_weights(gguf_path, hf_dir):
    import torch
    from safetensors.torch import load_file
    ref = load_ref_model(gguf_path).state_dict()
    ours = load_file(os.path.join(hf_dir, "model.safetensors"))
    bad = 0
    for k in ref:
        if k not in ours and k != "lm_head.weight":
            print(f"missing in ours: {k}")
            bad += 1
    exact, worst = 0, 0.0
    for k, v in ours.items():
        if k not in ref:
            print(f"extra in ours: {k}")
            bad += 1
            continue
        r = ref[k].to(v.dtype)
        if r.shape != v.shape:
            print(f"{k}: shape {tuple(v.shape)} vs reference {tuple(r.shape)}")
            bad += 1
            continue
        if torch.equal(r, v):
            exact += 1
        else:
            d = ((r.float() - v.float()).abs().max() / r.float().abs().max().clamp_min(1e-30)).item()
            worst = max(worst, d)
            print(f"{k}: differs, max relative diff {d:.3g}")
            bad += 1
    print(f"weights: {len(ours)} tensors, {exact} bit-identical to transformers' GGUF loader, max rel diff {worst:.3g}")
    return bad


def check_tokens(gguf_path, hf_dir):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
    d, f = os.path.split(os.path.abspath(gguf_path))
    ref = AutoTokenizer.from_pretrained(d, gguf_file=f)
    ours = Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json"))
    bad = 0
    for t in TEXTS:
        a = ref(t, add_special_tokens=True)["input_ids"]
        b = ours.encode(t, add_special_tokens=True).ids
        da, db = ref.decode(a, skip_special_tokens=True), ours.decode(b, skip_special_tokens=True)
        ok = a == b and da == db
        bad += not ok
        print(f"{'OK ' if ok else 'BAD'} {len(a):3d} ids  {t[:40]!r}")
        if not ok:
            print(f"   reference {a[:40]}\n   ours      {b[:40]}\n   decoded {da[:60]!r} vs {db[:60]!r}")
    print(f"tokens: {len(TEXTS) - bad} of {len(TEXTS)} texts identical")
    return bad


PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Once upon a time, in a small village by the sea, there lived",
    "Wikipedia is a free online encyclopedia that",
]


def check_model(hf_dir, patchllm, gen_tokens, tmp, device="cpu"):
    import subprocess
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(hf_dir)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on the GPU too
    torch.backends.cudnn.allow_tf32 = False
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).to(device).eval()
    os.makedirs(tmp, exist_ok=True)
    enc = [tok(p, add_special_tokens=True)["input_ids"] for p in PROMPTS]
    T = max(len(e) for e in enc)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    batches = [(f"prompt {i}", torch.tensor([e]), torch.ones(1, len(e), dtype=torch.long)) for i, e in enumerate(enc)]
    ids = torch.tensor([[pad] * (T - len(e)) + e for e in enc])
    mask = torch.tensor([[0] * (T - len(e)) + [1] * len(e) for e in enc])
    batches.append(("left-padded batch", ids, mask))
    bad, worst = 0, 0.0
    for name, x, m in batches:
        inp, out = os.path.join(tmp, "inputs.safetensors"), os.path.join(tmp, "logits.safetensors")
        save_file({"input_ids": x.contiguous(), "attention_mask": m.contiguous()}, inp)
        subprocess.run([patchllm, "eval", "logits", "-m", hf_dir, "-i", inp, "-o", out, "--device", device,
                        "--dtype", "fp32"], check=True)
        ours = load_file(out)["logits"]
        with torch.no_grad():
            ref = model(input_ids=x.to(device), attention_mask=m.to(device),
                        position_ids=(m.cumsum(1) - 1).clamp_min(0).to(device)).logits.float().cpu()
        real = m.bool()
        err = ((ours - ref).abs()[real].max() / ref.abs()[real].max()).item()
        agree = (ours.argmax(-1) == ref.argmax(-1))[real].float().mean().item()
        worst = max(worst, err)
        ok = err <= 1e-4
        bad += not ok
        print(f"{'OK ' if ok else 'BAD'} logits {name}: {int(real.sum())} positions, max rel err {err:.3g}, "
              f"argmax agreement {agree:.3f}")
    print(f"logits: max relative error {worst:.3g} (target 1e-4)")
    for i, p in enumerate(PROMPTS):
        x = torch.tensor([enc[i]])
        with torch.no_grad():
            g = model.generate(x.to(device), attention_mask=torch.ones_like(x).to(device), max_new_tokens=gen_tokens,
                               do_sample=False).cpu()
        ref = p + tok.decode(g[0, x.shape[1]:], skip_special_tokens=True)
        r = subprocess.run([patchllm, "generate", "-m", hf_dir, "-p", p, "-n", str(gen_tokens), "--temp", "0",
                            "--device", device, "--dtype", "fp32"], check=True, capture_output=True, text=True)
        ours = r.stdout[:-1] if r.stdout.endswith("\n") else r.stdout
        ok = ours == ref
        bad += not ok
        print(f"{'OK ' if ok else 'BAD'} greedy {gen_tokens} tokens: {ours!r}")
        if not ok:
            print(f"   transformers: {ref!r}")
    return bad


def llamacpp_permute(w, n_head, n_head_kv=None):
    # convert_hf_to_gguf.py LlamaModel.permute
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def make_tiny_llama(path, seed=0):
    import gguf
    rng = np.random.default_rng(seed)
    H, NH, NKV, F, L = 64, 4, 2, 128, 2
    HD = H // NH
    toks = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + \
           ["\u2581" + w for w in ["the", "a", "of", "and", "to", "in"]] + list("abcdefghijklmnopqrstuvwxyz")
    ttype = [2, 3, 3] + [6] * 256 + [1] * (len(toks) - 259)
    scores = [0.0] * 259 + [-float(i) for i in range(len(toks) - 259)]
    V = len(toks)
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(128)
    w.add_embedding_length(H)
    w.add_block_count(L)
    w.add_feed_forward_length(F)
    w.add_head_count(NH)
    w.add_head_count_kv(NKV)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HD)
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(ttype)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    r = lambda *s: rng.standard_normal(s).astype(np.float32) * 0.1
    w.add_tensor("token_embd.weight", r(V, H))
    w.add_tensor("output_norm.weight", 1 + r(H))
    w.add_tensor("output.weight", r(V, H))
    for i in range(L):
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", 1 + r(H))
        w.add_tensor(b + "attn_q.weight", llamacpp_permute(r(NH * HD, H), NH, NH))
        w.add_tensor(b + "attn_k.weight", llamacpp_permute(r(NKV * HD, H), NH, NKV))
        w.add_tensor(b + "attn_v.weight", r(NKV * HD, H))
        w.add_tensor(b + "attn_output.weight", r(H, NH * HD))
        w.add_tensor(b + "ffn_norm.weight", 1 + r(H))
        w.add_tensor(b + "ffn_gate.weight", r(F, H))
        w.add_tensor(b + "ffn_up.weight", r(F, H))
        w.add_tensor(b + "ffn_down.weight", r(H, F))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gguf_file", nargs="?")
    ap.add_argument("hf_dir", nargs="?")
    ap.add_argument("--no-weights", action="store_true")
    ap.add_argument("--no-tokens", action="store_true")
    ap.add_argument("--make-tiny-llama", metavar="OUT")
    ap.add_argument("--patchllm", metavar="BIN", help="also compare logits and greedy generation with transformers")
    ap.add_argument("--gen-tokens", type=int, default=24)
    ap.add_argument("--tmp", default="/tmp/gguf_check")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: where both engines run the model (fp32, no TF32)")
    a = ap.parse_args()
    if a.make_tiny_llama:
        make_tiny_llama(a.make_tiny_llama)
        return
    if not a.gguf_file or not a.hf_dir:
        ap.error("need FILE.gguf and HF_DIR")
    bad = 0
    if not a.no_tokens:
        bad += check_tokens(a.gguf_file, a.hf_dir)
    if not a.no_weights:
        bad += check_weights(a.gguf_file, a.hf_dir)
    if a.patchllm:
        bad += check_model(a.hf_dir, a.patchllm, a.gen_tokens, a.tmp, a.device)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
