#!/usr/bin/env python3
"""Golden data for tests/test_gemma3.cc: a tiny random Gemma3ForCausalLM and transformers' own logits for it.

    python3 tools/gen_gemma3_golden.py [--out tests/data/gemma3-tiny]

Writes into --out (about 0.4 MB):
  config.json, model.safetensors   save_pretrained() of the tiny model (weights stored as F16, computed in fp32)
  golden.safetensors               input ids / masks and transformers' fp32 logits (eager attention, CPU):
    full_ids [2,T], full_logits                 plain batch
    pad_ids [2,T], pad_mask [2,T], pad_logits   left-padded batch; position_ids = cumsum(mask) - 1, as generate()
    cache_ids [1,T], cache_logits_prefix/_chunk/_step   KV cache: prefix of P, then a chunk of C, then one token
    gen_prompt [1,P], gen_ids [1,N]              greedy generate(), N new tokens
The shape exercises every Gemma 3 detail: head_dim 32 != hidden/heads 16, query_pre_attn_scalar 24 != head_dim,
sliding window 4 < T with sliding and global layers interleaved, different local/global RoPE bases and linear
scaling on the global layers, GQA (4 heads, 2 kv heads), non-trivial (1 + w) norms, tied embeddings.
The versions of transformers and torch used are stored in golden.safetensors' metadata.
"""
import argparse
import os

import torch
import transformers
from safetensors.torch import save_file
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

T, P, C = 12, 7, 4  # sequence, cache prefix, cache chunk (then one more token)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "gemma3-tiny"))
    a = ap.parse_args()
    torch.manual_seed(1234)
    cfg = Gemma3TextConfig(
        vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, query_pre_attn_scalar=24, sliding_window=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 1000.0},
                         "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 50000.0}},
        max_position_embeddings=256, rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh",
        tie_word_embeddings=True, bos_token_id=2, eos_token_id=1, pad_token_id=0,
        attn_logit_softcapping=None, final_logit_softcapping=None)
    cfg._attn_implementation = "eager"
    model = Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.randn_like(p) * 0.3)  # HF initialises (1 + w) norms at w = 0
            elif "embed" in name:
                p.copy_(torch.randn_like(p) * 0.1)
            else:
                p.copy_(torch.randn_like(p) * 0.15)
            p.copy_(p.half().float())  # stored as F16: the fp32 model computes with exactly the stored values

    g = torch.Generator().manual_seed(99)
    ids = torch.randint(3, cfg.vocab_size, (2, T), generator=g)
    out = {"full_ids": ids}
    with torch.no_grad():
        out["full_logits"] = model(ids).logits

        pad_mask = torch.ones(2, T, dtype=torch.long)
        pad_mask[0, :3] = 0
        pad_ids = ids.clone()
        pad_ids[0, :3] = 0
        pos = (pad_mask.cumsum(-1) - 1).clamp(min=0)
        out.update(pad_ids=pad_ids, pad_mask=pad_mask,
                   pad_logits=model(pad_ids, attention_mask=pad_mask, position_ids=pos).logits)

        cids = ids[1:2, :P + C + 1]
        r = model(cids[:, :P], use_cache=True)
        out["cache_logits_prefix"] = r.logits
        r2 = model(cids[:, P:P + C], past_key_values=r.past_key_values, use_cache=True)
        out["cache_logits_chunk"] = r2.logits
        r3 = model(cids[:, P + C:], past_key_values=r2.past_key_values, use_cache=True)
        out["cache_logits_step"] = r3.logits
        out["cache_ids"] = cids
        # The continuation must equal a full recompute, else the reference itself is off.
        full = model(cids).logits
        got = torch.cat([r.logits, r2.logits, r3.logits], 1)
        assert torch.allclose(full, got, atol=1e-5), (full - got).abs().max()

        prompt = ids[0:1, :5]
        gen = model.generate(prompt, max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0)
        out["gen_prompt"] = prompt
        out["gen_ids"] = gen[:, prompt.shape[1]:]
    os.makedirs(a.out, exist_ok=True)
    # Saved last: .to(float16) also rounds the RoPE inv_freq buffers, which must not touch the reference logits.
    model.to(torch.float16).save_pretrained(a.out, safe_serialization=True)
    for f in os.listdir(a.out):  # only the checkpoint and config are needed
        if f not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(a.out, f))
    out = {k: v.contiguous().clone() for k, v in out.items()}
    save_file(out, os.path.join(a.out, "golden.safetensors"),
              metadata={"transformers": transformers.__version__, "torch": torch.__version__,
                        "generator": "tools/gen_gemma3_golden.py"})
    total = sum(os.path.getsize(os.path.join(a.out, f)) for f in os.listdir(a.out))
    print(f"wrote {a.out} ({total / 1024:.0f} KB), transformers {transformers.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
