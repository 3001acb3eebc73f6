#!/usr/bin/env python3
"""tools/prefill_bound.py against hand-computed values (run by ctest; standard library only).

Case: r1 = 1.5 (the kernel at f = 1), r0 = 0.9 (v8 at f = 0), v8 = 1.3 at f = 0.9, each × its block's cuBLAS row.
By hand: bound = 1 / (0.9 / 1.5 + 0.1 / 0.9) = 1 / 0.711111 = 1.406250; v8 / bound = 0.924444; bound at r0 = 1:
1 / (0.6 + 0.1) = 1.428571; the 2:4 rate for 1.4 at r0 = 0.9: 0.9 / (1 / 1.4 - 0.1 / 0.9) = 1.492105.
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "prefill_bound.py")
HEAD = "shape,N,K,M,kernel,f,us,tbps,tflops,speedup_vs_cublas,ideal,fraction_of_ideal\n"


def row(kernel, f, sp):
    return f'"s",512,1024,2048,{kernel},{f},1.0,0,0,{sp},1,1\n'


class PrefillBound(unittest.TestCase):
    def run_tool(self, text, *args):
        with tempfile.TemporaryDirectory() as d:
            csv = os.path.join(d, "b.csv")
            with open(csv, "w") as fh:
                fh.write(text)
            out = os.path.join(d, "b.json")
            p = subprocess.run([sys.executable, TOOL, "--mix", csv, "--json", out, *args], capture_output=True,
                               text=True)
            doc = json.load(open(out)) if p.returncode == 0 else None
            return p, doc

    def test_bound_matches_hand_values(self):
        text = HEAD + row("rr-cublas", 0.9, 1.0) + row("rr-hybrid-v8", 0.9, 1.3) + row("rr-hybrid-v7", 1.0, 1.5) \
            + row("rr-cusparselt", 1.0, 1.45) + row("hybrid-v8", 0.0, 0.9) + row("hybrid-v8", 0.9, 9.9)
        p, doc = self.run_tool(text)
        self.assertEqual(p.returncode, 0, p.stderr)
        r = doc["rows"][0]
        self.assertEqual((r["N"], r["K"], r["M"], r["mix_kernel"]), (512, 1024, 2048, "rr-hybrid-v8"))  # rr first
        self.assertAlmostEqual(r["bound"], 1.406250, delta=2e-4)
        self.assertAlmostEqual(r["fraction_of_bound"], 0.924444, delta=2e-4)
        self.assertAlmostEqual(r["bound_r0_1"], 1.428571, delta=2e-4)
        self.assertAlmostEqual(r["r1_needed"], 1.492105, delta=5e-4)
        self.assertEqual(len(doc["inputs"]["mix"]["sha256"]), 64)
        self.assertIn("| 512×1024 | 2048 | 1.300 | 1.500 | 1.450 | 0.900 |", p.stdout)

    def test_missing_rate_and_bad_input_fail_with_one_line(self):
        p, _ = self.run_tool(HEAD + row("rr-hybrid-v8", 0.9, 1.3))  # no f = 1 or f = 0 rows
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("no case has all three rates", p.stderr)
        p, _ = self.run_tool("a,b\n1,2\n")
        self.assertNotEqual(p.returncode, 0)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        self.assertIn("not a bench_ops CSV", p.stderr)


if __name__ == "__main__":
    unittest.main()
