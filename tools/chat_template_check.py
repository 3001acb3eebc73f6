#!/usr/bin/env python3
"""Checks patchllm's chat-template rendering and tokenization of a real model against transformers.

  python3 tools/chat_template_check.py MODEL_DIR CONVERSATIONS.jsonl [--patchllm build/patchllm] [--chat-template F]

CONVERSATIONS.jsonl: one {"messages": [...], "tools": [...]} (tools optional) or {"prompt": "..."} per line, as
`patchllm generate --chat --prompts` reads them. patchllm runs once (`-v generate --chat --prompts ... -n 1`, which
logs each rendered prompt and its ids); transformers renders the same conversations with
tokenizer.apply_chat_template(add_generation_prompt=True). Prints one line per conversation and exits 1 on any
difference. --chat-template F renders with template file F instead of the model's own, on both sides (other models'
templates through this model's tokenizer). Needs transformers (and jinja2); no torch.
"""
import argparse
import json
import re
import subprocess
import sys
import tempfile

import transformers


def render(tok, line, template_file, tokenize):
    messages = line.get("messages") or [{"role": "user", "content": line["prompt"]}]
    kw = {"tools": line["tools"]} if "tools" in line else {}
    if template_file:
        kw["chat_template"] = open(template_file).read()
    return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=tokenize, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("conversations")
    ap.add_argument("--patchllm", default="build/patchllm")
    ap.add_argument("--chat-template")
    args = ap.parse_args()
    lines = [json.loads(l) for l in open(args.conversations) if l.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([args.patchllm, "-v", "generate", "-m", args.model, "--chat", "--prompts", args.conversations,
                            "-o", f"{tmp}/out.json", "-n", "1", "--temp", "0"] +
                           (["--chat-template", args.chat_template] if args.chat_template else []),
                           capture_output=True, text=True)
    tok = transformers.AutoTokenizer.from_pretrained(args.model)
    if r.returncode != 0:  # agreement only if transformers refuses one of the conversations too
        ours = r.stderr.strip().splitlines()[-1]
        for line in lines:
            try:
                render(tok, line, args.chat_template, tokenize=False)
            except Exception as e:  # jinja2's errors, raise_exception's, transformers' own
                print(f"both fail: patchllm {ours!r}; transformers {type(e).__name__}: {e}")
                sys.exit(0)
        sys.exit(f"patchllm failed where transformers renders every conversation: {ours}")
    ours = {}
    for m in re.finditer(r": prompt (\d+): chat prompt (\".*\") -> \d+ ids \[([0-9,]*)\]", r.stderr):
        ours[int(m.group(1)) - 1] = (json.loads(m.group(2)), [int(x) for x in m.group(3).split(",") if x])
    bad = 0
    for i, line in enumerate(lines):
        try:
            text = render(tok, line, args.chat_template, tokenize=False)
            ids = render(tok, line, args.chat_template, tokenize=True)
        except Exception as e:  # patchllm rendered what transformers refuses: a difference too
            bad += 1
            print(f"conversation {i + 1}: transformers fails ({type(e).__name__}: {e}), patchllm renders it")
            continue
        if isinstance(ids, dict):
            ids = ids["input_ids"]
        got_text, got_ids = ours.get(i, (None, None))
        ok = got_text == text and got_ids == list(ids)
        bad += not ok
        print(f"conversation {i + 1}: text {'equal' if got_text == text else 'DIFFERENT'}, ids "
              f"{'equal' if got_ids == list(ids) else 'DIFFERENT'} ({len(ids)} tokens)")
    print(f"transformers {transformers.__version__}: {len(lines) - bad} of {len(lines)} conversations identical")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
