"""HF transformers twin of bench/bench_model.cc: load time, prefill tok/s, decode tok/s at batch 1 and 16 (eager,
bf16, KV cache, greedy), printed as the same JSON lines. usage: python3 tools/bench_hf.py DIR [prefill] [decode]"""
import json, statistics, sys, time, os
import torch, transformers

d = sys.argv[1]
prefill = int(sys.argv[2]) if len(sys.argv) > 2 else 2048
decode = int(sys.argv[3]) if len(sys.argv) > 3 else 64
reps = 5
nbytes = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".safetensors"))
torch.cuda.synchronize()
t = time.time()
model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16, device_map="cuda").eval()
torch.cuda.synchronize()
load = time.time() - t
print(json.dumps({"engine": "hf", "metric": "load", "seconds": load, "bytes": nbytes, "GBps": nbytes / load / 1e9}))
V = model.config.vocab_size
with torch.no_grad():
    x = torch.randint(3, V, (1, prefill), device="cuda")
    ts = []
    for r in range(reps + 1):
        torch.cuda.synchronize(); a = time.time()
        model(x, use_cache=False)
        torch.cuda.synchronize()
        if r: ts.append(time.time() - a)
    pf = statistics.median(ts)
    print(json.dumps({"engine": "hf", "metric": "prefill", "tokens": prefill, "seconds": pf, "tok_per_s": prefill / pf}))
    for B in (1, 16):
        ds = []
        for r in range(max(2, reps // 2) + 1):
            p = torch.randint(3, V, (B, 16), device="cuda")
            out = model(p, use_cache=True)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            past = out.past_key_values
            torch.cuda.synchronize(); a = time.time()
            for _ in range(decode):
                out = model(nxt, past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            torch.cuda.synchronize()
            if r: ds.append(time.time() - a)
        dd = statistics.median(ds)
        print(json.dumps({"engine": "hf", "metric": "decode", "batch": B, "tokens": decode, "seconds": dd,
                          "tok_per_s": B * decode / dd}))
