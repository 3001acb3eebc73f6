#!/usr/bin/env python3
"""GPU machine: what the first call of PyTorch's scaled_dot_product_attention costs for a new shape, per backend.

Two kinds of call, LLaMA-2-7B's attention (32 heads of 128, bf16) at batch 1:
  masked: n queries over `cur` keys with an additive mask, what a refill in continuous batching did before session 22
          (a new (n, cur) shape every time);
  causal: nb queries over the same nb keys, is_causal and no mask, what Model::prefill_row does since session 22 (nb a
          refill bucket: at most 4 lengths per octave, so each is new once). Session 23 ran this at 8.3K-12K tokens
          (a bug: the masked shapes' offsets): cuDNN 35 ms first / 0.9-1.1 ms repeat, flash 2.6 / 2.6, memory-efficient
          6.0 / 5.9, math 239 / 124 ms; it now runs refill lengths.
Prints, per kind and backend (the default choice and each one forced), the median first-call and repeat-call times
over 8 shapes not seen before.
"""
import statistics
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

H, D = 32, 128
SHAPES = [(37 + 23 * i, 300 + 17 * i) for i in range(8)]


def timed(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) * 1e3


def run(backend, fresh, causal):
    first, again = [], []
    for i, (n, cur) in enumerate(SHAPES):
        # shapes no earlier backend has seen; causal: refill-like lengths of 144 to 768 tokens
        n, cur = (16 * (1 + 8 * fresh + i),) * 2 if causal else (n + 1000 * fresh, cur + 1000 * fresh)
        q = torch.randn(1, H, n, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, H, cur, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        if causal:
            call = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            mask = torch.zeros(1, 1, n, cur, device="cuda", dtype=torch.bfloat16)
            mask[..., : cur - n] = float("-inf")  # the row's earlier slots (padding for the new prompt)
            mask[..., cur - n:] = torch.triu(torch.full((n, n), float("-inf"), device="cuda", dtype=torch.bfloat16), 1)
            call = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        ctx = sdpa_kernel([backend]) if backend is not None else torch.autograd.grad_mode.no_grad()
        with ctx:
            first.append(timed(call))
            again.append(statistics.median(timed(call) for _ in range(5)))
    return statistics.median(first), statistics.median(again)


print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}")
print(f"cudnn sdp enabled by default: {torch.backends.cuda.cudnn_sdp_enabled()}")
print("| call | backend | first call, median ms | repeat, median ms |")
print("|---|---|---|---|")
backends = [("default", None), ("cuDNN", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION),
            ("memory-efficient", SDPBackend.EFFICIENT_ATTENTION), ("math", SDPBackend.MATH)]
for j, kind in enumerate(["masked", "causal"]):
    for i, (name, b) in enumerate(backends):
        if kind == "masked" and b == SDPBackend.FLASH_ATTENTION:
            continue  # flash takes no mask
        try:
            f, a = run(b, i + 1, kind == "causal")
            print(f"| {kind} | {name} | {f:.2f} | {a:.3f} |")
        except RuntimeError as e:
            print(f"| {kind} | {name} | failed: {str(e).splitlines()[0][:80]} | |")
