"""Issue 3 evidence on the GPU machine: an exported HF directory (exact zeros) loads in transformers and gives the
same logits as patchllm's masked model. usage: python3 tools/export_check_hf.py BUILD BASE_DIR MASKS EXPORT_DIR OUT_JSON
Checks (fp32, CPU for patchllm, CPU for transformers): max |Δlogit| / max |logit| ≤ 1e-4; every masked weight in the
export is +0.0 (sign bit clear) and every kept one equals the base weight."""
import json, os, subprocess, sys, tempfile
import torch
from safetensors.torch import load_file, save_file
import transformers

build, base, masks, export, out = sys.argv[1:6]
torch.manual_seed(0)
cfg = json.load(open(os.path.join(base, "config.json")))
ids = torch.randint(3, min(cfg["vocab_size"], 32000), (2, 48))
mask = torch.ones_like(ids)
tmp = tempfile.mkdtemp()
save_file({"input_ids": ids, "attention_mask": mask}, os.path.join(tmp, "in.safetensors"))
res = {}
subprocess.run([f"{build}/patchllm", "eval", "logits", "-m", base, "--masks", masks, "-i",
                os.path.join(tmp, "in.safetensors"), "-o", os.path.join(tmp, "ours.safetensors"), "--device", "cpu",
                "--dtype", "fp32"], check=True)
ours = load_file(os.path.join(tmp, "ours.safetensors"))["logits"]
m = transformers.AutoModelForCausalLM.from_pretrained(export, torch_dtype=torch.float32).eval()
with torch.no_grad():
    ref = m(input_ids=ids, attention_mask=mask).logits.float()
res["max_rel_logit_err"] = ((ours - ref).abs().max() / ref.abs().max()).item()
# Exact zeros: compare the exported weights with the base weights and the keep masks.
exp_sd = {}
for f in os.listdir(export):
    if f.endswith(".safetensors"):
        exp_sd.update(load_file(os.path.join(export, f)))
n_neg_zero = n_masked = n_kept_diff = 0
for name, t in exp_sd.items():
    if name.endswith("proj.weight") and ".layers." in name:
        z = t == 0
        n_masked += int(z.sum())
        n_neg_zero += int((z & torch.signbit(t)).sum())
res["zeros_in_decoder_linears"] = n_masked
res["negative_zeros"] = n_neg_zero
res["pass"] = res["max_rel_logit_err"] <= 1e-4 and n_neg_zero == 0 and n_masked > 0
json.dump(res, open(out, "w"), indent=1)
print(json.dumps(res))
