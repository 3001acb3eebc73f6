"""Write a random-weight HF checkpoint of a real configuration: python3 tools/make_random_checkpoint.py NAME DIR
[--layers N] [--dtype bfloat16] (NAME in model_configs.CONFIGS: llama2-7b, llama3.1-8b, llama3.2-1b, qwen2.5-0.5b,
mistral-7b, gemma3-1b). Weights are generated on the GPU when present."""
import argparse, os, sys
import torch
sys.path.insert(0, os.path.dirname(__file__))
from model_configs import make_model

ap = argparse.ArgumentParser()
ap.add_argument("name"); ap.add_argument("dir")
ap.add_argument("--layers", type=int); ap.add_argument("--dtype", default="bfloat16")
a = ap.parse_args()
dev = "cuda" if torch.cuda.is_available() else "cpu"
m = make_model(a.name, layers=a.layers, dtype=a.dtype, device=dev)
m.save_pretrained(a.dir, safe_serialization=True, max_shard_size="5GB")
print(f"wrote {a.dir}: {sum(p.numel() for p in m.parameters())/1e9:.2f} B params")
