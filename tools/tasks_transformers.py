#!/usr/bin/env python3
"""`patchllm eval tasks`'s protocol run by Hugging Face transformers, as an independent reference.

    python3 tools/tasks_transformers.py -m MODEL_DIR --data-dir ../shared/data/tasks [--tasks a,b] [--limit N]
        [-b BATCH] [--json OUT] [--ours OURS.json]

Protocol (src/eval/tasks.h), written here again from SOURCE.md and lm-eval's conventions rather than shared code:
rows as in ../shared/data/tasks/SOURCE.md (multiple choice: query + delimiter, "\\nAnswer: " or " " for openbook_qa;
winogrande: each context + " " + the shared continuation; lambada: context + " " + final word). Per (context,
continuation): trailing whitespace of the context moves to the continuation (lm-eval's rstrip), whole =
tok(context + continuation), ctx = tok(context) with the tokenizer's own special tokens (add_special_tokens=True),
continuation = whole[len(ctx):], input = (ctx + continuation)[-(max_len+1):][:-1]. fp32 model, eager attention,
right-padded batches with an attention mask; log-probabilities from an fp64 log-softmax of the fp32 logits.
acc = argmax loglik (first maximum on ties, np.argmax), acc_norm = argmax loglik / len(choice) in characters,
stderr = sqrt(p(1-p)/(n-1)); lambada acc = greedy tokens reproduce the word, perplexity = exp(-mean loglik).
--ours: patchllm's `eval tasks --json F --log-samples` output, compared item by item (predicted index, acc_norm
index, lambada greedy flag) and by the largest log-likelihood difference.
"""
import argparse
import json
import math
import os
import sys
import time

import torch

TASKS = {  # name: (kind, delimiter)
    "piqa": ("mc", "\nAnswer: "),
    "arc_easy": ("mc", "\nAnswer: "),
    "arc_challenge": ("mc", "\nAnswer: "),
    "openbook_qa": ("mc", " "),
    "boolq": ("mc", "\nAnswer: "),
    "winogrande": ("wino", ""),
    "lambada_openai": ("lambada", ""),
}


def load(name, path, limit):
    kind, delim = TASKS[name]
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if limit and len(rows) >= limit:
                break
            if not line.strip():
                continue
            d = json.loads(line)
            if kind == "mc":
                reqs = [(d["query"] + delim, c) for c in d["choices"]]
                rows.append({"line": line_no, "reqs": reqs, "choices": d["choices"], "gold": d["gold"]})
            elif kind == "wino":
                reqs = [(c + " ", d["continuation"]) for c in d["context_options"]]
                rows.append({"line": line_no, "reqs": reqs, "gold": d["gold"]})
            else:
                rows.append({"line": line_no, "reqs": [(d["context"] + " ", d["continuation"])]})
    return kind, rows


def encode_pair(tok, context, continuation):
    n = len(context) - len(context.rstrip())
    if n:
        continuation = context[-n:] + continuation
        context = context[:-n]
    whole = tok(context + continuation, add_special_tokens=True)["input_ids"]
    ctx = tok(context, add_special_tokens=True)["input_ids"]
    return ctx, whole[len(ctx):]


@torch.no_grad()
def score(model, pairs, max_len, batch, desc):
    inputs = []
    for ctx, cont in pairs:
        assert cont, "empty continuation"
        inputs.append((ctx + cont)[-(max_len + 1):][:-1])
    order = sorted(range(len(pairs)), key=lambda i: -len(inputs[i]))
    out = [None] * len(pairs)
    t0, last = time.time(), 0.0
    for b0 in range(0, len(order), batch):
        idx = order[b0:b0 + batch]
        T = len(inputs[idx[0]])
        ids = torch.zeros(len(idx), T, dtype=torch.long)
        mask = torch.zeros(len(idx), T, dtype=torch.long)
        for j, i in enumerate(idx):
            ids[j, :len(inputs[i])] = torch.tensor(inputs[i])
            mask[j, :len(inputs[i])] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits  # [b, T, V] fp32
        for j, i in enumerate(idx):
            cont = pairs[i][1]
            L, nc = len(inputs[i]), len(cont)
            rows = logits[j, L - nc:L].double()
            logp = torch.log_softmax(rows, -1)
            tgt = torch.tensor(cont)
            ll = logp.gather(-1, tgt.view(-1, 1)).sum().item()
            greedy = bool((rows.argmax(-1) == tgt).all())
            out[i] = (ll, greedy)
        if time.time() - last > 5:
            last = time.time()
            print(f"{desc}: {b0 + len(idx)}/{len(pairs)} {time.time() - t0:.0f} s", file=sys.stderr)
    return out


def stderr(p, n):
    return math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else 0.0


def evaluate(model, tok, name, kind, rows, max_len, batch):
    t0 = time.time()
    pairs = [encode_pair(tok, c, x) for r in rows for (c, x) in r["reqs"]]
    ll = score(model, pairs, max_len, batch, name)
    k, acc, acc_norm, ll_sum, samples = 0, 0, 0, 0.0, []
    for r in rows:
        m = len(r["reqs"])
        s = {"line": r["line"]}
        if kind == "lambada":
            acc += ll[k][1]
            ll_sum += ll[k][0]
            s.update(loglik=ll[k][0], is_greedy=ll[k][1])
        else:
            lls = [ll[k + c][0] for c in range(m)]
            pred = max(range(m), key=lambda c: (lls[c], -c))  # first maximum, as np.argmax
            acc += pred == r["gold"]
            s.update(gold=r["gold"], pred=pred, logliks=lls)
            if kind == "mc":
                norm = [lls[c] / len(r["choices"][c]) for c in range(m)]
                pn = max(range(m), key=lambda c: (norm[c], -c))
                acc_norm += pn == r["gold"]
                s["pred_norm"] = pn
        k += m
        samples.append(s)
    n = len(rows)
    res = {"alias": name, "n": n, "acc,none": acc / n, "acc_stderr,none": stderr(acc / n, n)}
    if kind == "mc":
        res["acc_norm,none"] = acc_norm / n
        res["acc_norm_stderr,none"] = stderr(acc_norm / n, n)
    if kind == "lambada":
        res["perplexity,none"] = math.exp(-ll_sum / n)
    res["seconds"] = time.time() - t0
    return res, samples


def compare(name, ours_samples, ref_samples):
    """Item-by-item agreement; returns (items, disagreements, max |loglik difference|)."""
    assert len(ours_samples) == len(ref_samples), f"{name}: {len(ours_samples)} vs {len(ref_samples)} items"
    bad, dmax = [], 0.0
    for o, r in zip(ours_samples, ref_samples):
        assert o["line"] == r["line"], f"{name}: line {o['line']} vs {r['line']}"
        keys = [k for k in ("pred", "pred_norm", "is_greedy") if k in r]
        if any(o[k] != r[k] for k in keys):
            bad.append(r["line"])
        a = o["logliks"] if "logliks" in o else [o["loglik"]]
        b = r["logliks"] if "logliks" in r else [r["loglik"]]
        dmax = max(dmax, max(abs(x - y) for x, y in zip(a, b)))
    return len(ref_samples), bad, dmax


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("-b", "--batch-size", type=int, default=8)
    ap.add_argument("--json")
    ap.add_argument("--ours", help="patchllm eval tasks --json output written with --log-samples")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    max_len = model.config.max_position_embeddings
    ours = None
    if a.ours:
        with open(a.ours) as f:
            ours = json.load(f)
        if "samples" not in ours:
            sys.exit(f"error: {a.ours}: no per-item samples (run patchllm eval tasks with --log-samples)")
    results, samples, agree = {}, {}, {}
    for name in a.tasks.split(","):
        kind, rows = load(name, os.path.join(a.data_dir, name + ".jsonl"), a.limit)
        results[name], samples[name] = evaluate(model, tok, name, kind, rows, max_len, a.batch_size)
        if ours is not None:
            n, bad, dmax = compare(name, ours["samples"][name], samples[name])
            agree[name] = {"items": n, "disagree_lines": bad, "max_abs_loglik_diff": dmax}
    print(f"{'task':15s} {'n':>6s} {'acc':>8s} {'acc_norm':>9s} {'stderr':>8s}" +
          ("   ours acc  ours norm  items agree  max|dll|" if ours else ""))
    for name, r in results.items():
        norm = f"{r['acc_norm,none']:.4f}" if "acc_norm,none" in r else "-"
        line = f"{name:15s} {r['n']:6d} {r['acc,none']:8.4f} {norm:>9s} {r['acc_stderr,none']:8.4f}"
        if ours:
            o = ours["results"][name]
            onorm = f"{o['acc_norm,none']:.4f}" if "acc_norm,none" in o else "-"
            g = agree[name]
            line += (f"   {o['acc,none']:8.4f} {onorm:>9s}  {g['items'] - len(g['disagree_lines']):5d}/{g['items']:<5d}"
                     f"  {g['max_abs_loglik_diff']:.2e}")
        if "perplexity,none" in r:
            line += f"  ppl {r['perplexity,none']:.4g}"
        print(line)
    for name, g in agree.items():
        if g["disagree_lines"]:
            print(f"{name}: predictions differ at lines {g['disagree_lines']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"results": results, "samples": samples, "agreement": agree,
                       "config": {"model": a.model, "data_dir": a.data_dir, "limit": a.limit,
                                  "transformers": transformers.__version__, "torch": torch.__version__,
                                  "dtype": "float32", "max_length": max_len}}, f, indent=1)


if __name__ == "__main__":
    main()
