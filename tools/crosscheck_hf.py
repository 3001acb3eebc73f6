"""Cross-check patchllm against HF transformers on random-weight checkpoints of real configurations (GPU machine).

For each config (fewer layers, real widths): HF fp32 logits (CPU, the reference) vs patchllm CPU fp32 and CUDA bf16,
and HF CUDA bf16 vs patchllm CUDA bf16, on a batch with one left-padded row. Metric: max |a - b| / max |ref| over
real (non-padding) positions. Targets: fp32 <= 1e-4, bf16 <= 2e-2. Gemma-3-1B runs 6 layers (5 sliding + 1 global)
on 640 tokens, longer than its 512-token window, so both layer kinds and the window are exercised.
usage: python3 tools/crosscheck_hf.py BUILD_DIR OUT_DIR
"""
import json, os, subprocess, sys, time
import torch
from safetensors.torch import save_file, load_file
sys.path.insert(0, os.path.dirname(__file__))
from model_configs import make_model

build, out = sys.argv[1], sys.argv[2]
cases = [("llama2-7b", 2, 48), ("llama3.1-8b", 2, 48), ("qwen2.5-0.5b", 4, 48), ("mistral-7b", 2, 48),
         ("gemma3-1b", 6, 640)]  # (config, layers, tokens per row)
rows = []
for name, layers, seq in cases:
    d = os.path.join("/tmp/xcheck", name)
    model = make_model(name, layers=layers, dtype="float32")
    model.save_pretrained(d, safe_serialization=True)
    V = model.config.vocab_size
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, V, (2, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :7] = 0  # left padding
    ids[1, :7] = 0
    pos = (mask.cumsum(1) - 1).clamp_min(0)
    save_file({"input_ids": ids, "attention_mask": mask}, os.path.join(d, "inputs.safetensors"))
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
        mb = model.to("cuda", torch.bfloat16)
        hf_bf16 = mb(input_ids=ids.cuda(), attention_mask=mask.cuda(), position_ids=pos.cuda()).logits.float().cpu()
    del model, mb
    torch.cuda.empty_cache()
    real = mask.bool()
    def err(a, b):
        return ((a - b).abs()[real].max() / b.abs()[real].max()).item()
    res = {"config": name, "layers": layers}
    for dev, dt in (("cpu", "fp32"), ("cuda", "bf16")):
        o = os.path.join(d, f"logits_{dev}.safetensors")
        t = time.time()
        subprocess.run([f"{build}/patchllm", "eval", "logits", "-m", d, "-i", os.path.join(d, "inputs.safetensors"),
                        "-o", o, "--device", dev, "--dtype", dt], check=True)
        ours = load_file(o)["logits"]
        res[f"{dev}_{dt}_vs_hf_fp32"] = err(ours, ref)
        if dev == "cuda":
            res["cuda_bf16_vs_hf_bf16"] = err(ours, hf_bf16)
    res["hf_bf16_vs_hf_fp32"] = err(hf_bf16, ref)
    res["pass"] = res["cpu_fp32_vs_hf_fp32"] <= 1e-4 and res["cuda_bf16_vs_hf_fp32"] <= 2e-2
    rows.append(res)
    print(json.dumps(res), flush=True)
json.dump(rows, open(os.path.join(out, "crosscheck.json"), "w"), indent=2)
print("\n| config | layers | CPU fp32 vs HF fp32 | CUDA bf16 vs HF fp32 | CUDA bf16 vs HF bf16 | HF bf16 vs HF fp32 | pass |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['config']} | {r['layers']} | {r['cpu_fp32_vs_hf_fp32']:.2e} | {r['cuda_bf16_vs_hf_fp32']:.2e} | "
          f"{r['cuda_bf16_vs_hf_bf16']:.2e} | {r['hf_bf16_vs_hf_fp32']:.2e} | {r['pass']} |")
