#!/usr/bin/env python3
"""Reference dequantisation of every tensor of a real GGUF file with gguf-py, as per-tensor sha256 digests.

    pip install gguf==0.19.0 numpy
    python3 tools/gguf_reference_hashes.py models/foo.gguf    # writes models/foo.gguf.ref.json

For each tensor: {"type", "shape" (row-major), "sha256" of the float32 little-endian bytes of
gguf.quants.dequantize(...), "unsupported": true when gguf-py cannot dequantise it}. tests/test_gguf_models.cc
dequantises the same file with patchllm and compares digests tensor by tensor (bit-exact, every tensor). Runs one
tensor at a time, so memory stays near the largest tensor's float32 size times a few.
"""
import argparse
import hashlib
import json
import sys
import time

import numpy as np
import gguf


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gguf_file")
    ap.add_argument("-o", "--output", help="default: GGUF_FILE.ref.json")
    args = ap.parse_args()
    out = args.output or args.gguf_file + ".ref.json"
    t0 = time.time()
    r = gguf.GGUFReader(args.gguf_file)
    result = {"file": args.gguf_file, "gguf_py": __import__("importlib.metadata").metadata.version("gguf"),
              "tensors": {}}
    for t in r.tensors:
        shape = [int(d) for d in reversed(t.shape.tolist())]
        entry = {"type": t.tensor_type.name, "shape": shape}
        try:
            deq = gguf.quants.dequantize(t.data, t.tensor_type)
            deq = np.ascontiguousarray(deq, dtype=np.float32).reshape(-1)
            assert deq.size == int(np.prod(shape)), (t.name, deq.size, shape)
            entry["sha256"] = hashlib.sha256(deq.tobytes()).hexdigest()
        except NotImplementedError:
            entry["unsupported"] = True
        result["tensors"][t.name] = entry
    with open(out, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    print(f"{out}: {len(result['tensors'])} tensors in {time.time() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
