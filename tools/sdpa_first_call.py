#!/usr/bin/env python3
"""GPU machine: what the first call of PyTorch's scaled_dot_product_attention costs for a new shape, per backend.

A refill in continuous batching (generate_batch) prefills one prompt of a new length n over the cache's first `cur`
slots with a padding mask, so every refill is an SDPA call of a shape not seen before. Prints, per backend (the
default choice and each one forced), the median first-call and repeat-call times over SHAPES (n, cur) pairs, for
LLaMA-2-7B's attention (32 heads of 128, bf16) at batch 1 with an additive mask.
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


def run(backend, offset):
    first, again = [], []
    for n, cur in SHAPES:
        n, cur = n + offset, cur + offset  # shapes no earlier backend has seen
        q = torch.randn(1, H, n, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, H, cur, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        mask = torch.zeros(1, 1, n, cur, device="cuda", dtype=torch.bfloat16)
        mask[..., : cur - n] = float("-inf")  # the row's earlier slots (padding for the new prompt)
        causal = torch.triu(torch.full((n, n), float("-inf"), device="cuda", dtype=torch.bfloat16), 1)
        mask[..., cur - n:] = causal
        call = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        ctx = sdpa_kernel([backend]) if backend is not None else torch.autograd.grad_mode.no_grad()
        with ctx:
            first.append(timed(call))
            again.append(statistics.median(timed(call) for _ in range(5)))
    return statistics.median(first), statistics.median(again)


print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}")
print(f"cudnn sdp enabled by default: {torch.backends.cuda.cudnn_sdp_enabled()}")
print("| backend | first call, median ms | repeat, median ms |")
print("|---|---|---|")
for i, (name, b) in enumerate([("default", None), ("cuDNN", SDPBackend.CUDNN_ATTENTION),
                               ("memory-efficient", SDPBackend.EFFICIENT_ATTENTION), ("math", SDPBackend.MATH)]):
    try:
        f, a = run(b, 1000 * (i + 1))
        print(f"| {name} | {f:.2f} | {a:.3f} |")
    except RuntimeError as e:
        print(f"| {name} | failed: {str(e).splitlines()[0][:80]} | |")
