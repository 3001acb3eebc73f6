#!/usr/bin/env python3
"""`patchllm eval ppl`'s protocol run by Hugging Face transformers, as the reference for docs/benchmarks/real-models.md.

    python3 tools/ppl_transformers.py -m MODEL_DIR -f wiki.test.raw -c 4096 --chunks N [--json OUT]
        [--ours OURS.json] [--ours-ids IDS.bin]

Protocol (src/eval/ppl.h): the file's bytes as they are (wiki.test.raw has CRLF line ends; they are kept, no
newline translation), tokenized once with the model directory's tokenizer.json and add_special_tokens=True (BOS once
at the start where the tokenizer adds one: Gemma yes, Qwen2 no), cut into non-overlapping windows of CTX tokens, the
remainder dropped, the first N windows scored on their CTX-1 next-token predictions, PPL = exp(mean NLL).
The model runs in fp32 (CPU, or CUDA with --device and TF32 off) with eager attention; the LM head and log-softmax go 512 positions at a time (row-wise,
so the result is that of the full logits) to keep a 262k-vocabulary model's 4096-token logits out of memory.
--ours: patchllm's --json output, compared (token count, windows, sha256 of the ids as int32 LE, PPL ratio).
--ours-ids: patchllm's token ids as little-endian int32, compared id by id with the reference tokenization.
"""
import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-f", "--file", required=True)
    ap.add_argument("-c", "--ctx", type=int, default=4096)
    ap.add_argument("--chunks", type=int, default=0, help="first N windows only (0 = all)")
    ap.add_argument("--json")
    ap.add_argument("--ours")
    ap.add_argument("--ours-ids")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu | cuda[:N] (fp32 either way; TF32 off on CUDA)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with open(a.file, "rb") as f:
        text = f.read().decode("utf-8")  # bytes as they are: no universal-newline translation of the CRLFs
    tok = AutoTokenizer.from_pretrained(a.model)
    t0 = time.time()
    ids = tok(text, add_special_tokens=True)["input_ids"]
    print(f"tokenized {a.file}: {len(ids)} tokens in {time.time() - t0:.1f} s (first ids {ids[:4]})", file=sys.stderr)
    sha = hashlib.sha256(np.asarray(ids, dtype="<i4").tobytes()).hexdigest()
    ids_equal = None
    if a.ours_ids:
        ours = np.fromfile(a.ours_ids, dtype="<i4")
        ids_equal = len(ours) == len(ids) and bool((ours == np.asarray(ids)).all())
        if not ids_equal:
            n = min(len(ours), len(ids))
            first = next((i for i in range(n) if ours[i] != ids[i]), n)
            print(f"token ids DIFFER: ours {len(ours)}, reference {len(ids)}, first difference at {first}",
                  file=sys.stderr)
        else:
            print(f"token ids identical ({len(ids)})", file=sys.stderr)

    dev = torch.device(a.device)
    if dev.type == "cuda":  # the protocol is fp32: no TF32 in matmuls or convolutions
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation="eager").eval()
    model.to(dev)
    cap = getattr(model.config, "final_logit_softcapping", None)
    n_win = len(ids) // a.ctx
    if a.chunks > 0:
        n_win = min(n_win, a.chunks)
    assert n_win > 0, "fewer tokens than one window"
    x_all = torch.tensor(ids[:n_win * a.ctx]).view(n_win, a.ctx).to(dev)
    nll_sum, nll_sq, n_scored = 0.0, 0.0, 0
    t0 = time.time()
    with torch.no_grad():
        for w in range(n_win):
            x = x_all[w:w + 1]
            h = model.model(input_ids=x).last_hidden_state[0, :-1]
            tgt = x[0, 1:]
            for s in range(0, h.shape[0], 512):
                logits = model.lm_head(h[s:s + 512]).float()
                if cap:
                    logits = torch.tanh(logits / cap) * cap
                nll = -torch.log_softmax(logits, -1).gather(-1, tgt[s:s + 512, None]).squeeze(-1).double()
                nll_sum += nll.sum().item()
                nll_sq += (nll ** 2).sum().item()
                n_scored += nll.numel()
            print(f"window {w + 1}/{n_win}: running ppl {math.exp(nll_sum / n_scored):.4f} "
                  f"({time.time() - t0:.0f} s)", file=sys.stderr)
    mean = nll_sum / n_scored
    std = math.sqrt(max(0.0, nll_sq / n_scored - mean * mean))
    ppl = math.exp(mean)
    r = {"reference": "transformers", "transformers": transformers.__version__, "torch": torch.__version__,
         "device": f"{a.device} float32 eager" + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""),
         "machine": platform.processor() or platform.machine(),
         "model": a.model, "dataset": a.file, "seq_len": a.ctx, "stride": a.ctx, "n_tokens": len(ids),
         "ids_sha256_int32le": sha, "n_windows": n_win, "n_scored": n_scored, "nll_mean": mean, "ppl": ppl,
         "ppl_stderr": ppl * std / math.sqrt(n_scored), "seconds": time.time() - t0}
    if ids_equal is not None:
        r["ids_equal_ours"] = ids_equal
    bad = ids_equal is False
    if a.ours:
        with open(a.ours) as f:
            o = json.load(f)
        r["ours"] = {"ppl": o["ppl"], "n_tokens": o["n_tokens"], "n_windows": o["n_windows"]}
        r["ratio_ours_over_reference"] = o["ppl"] / ppl
        same = o["n_tokens"] == len(ids) and o["n_windows"] == n_win and o["seq_len"] == a.ctx
        if "ids_sha256_int32le" in o:  # patchllm eval ppl writes it since the chunked-head change
            r["ids_sha256_equal_ours"] = o["ids_sha256_int32le"] == sha
            same &= r["ids_sha256_equal_ours"]
            print(f"token ids sha256: ours {o['ids_sha256_int32le']}, reference {sha}", file=sys.stderr)
        bad |= not same
        print(f"ours: PPL {o['ppl']:.4f} ({o['n_tokens']} tokens, {o['n_windows']} windows); reference {ppl:.4f}; "
              f"ratio {o['ppl'] / ppl:.6f}{'' if same else '  (token count, ids or windows DIFFER)'}", file=sys.stderr)
    print(f"{ppl:.4f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)
            f.write("\n")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
