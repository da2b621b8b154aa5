#!/usr/bin/env python3
"""transformers' generation speed for the generate benchmark (driven by scripts/bench_generate.ts):
the same GGUF loaded by transformers (dequantized, float32 on the CPU / bfloat16 on CUDA), greedy
generate with a static cache; prefill = one forward of the prompt, decode = the rest.

Spec (stdin): {"gguf", "device", "prompt", "new", "batches": [1, 16], "threads"}
Output (stdout): {"rows": [{"who", "batch", "prefillTokS", "decodeTokS"} | {"who", "batch", "note"}]}
"""
import json
import os
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    spec = json.load(sys.stdin)
    torch.set_num_threads(int(spec["threads"]))
    d, f = os.path.split(spec["gguf"])
    dev = torch.device(spec["device"])
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=dtype).to(dev).eval()
    P, N = int(spec["prompt"]), int(spec["new"])
    rows = []
    for B in spec["batches"]:
        ids = torch.tensor([[(7 * t + 13 * b + 1) % (model.config.vocab_size - 10) + 5 for t in range(P)] for b in range(B)], device=dev)
        try:
            def sync():
                if dev.type == "cuda":
                    torch.cuda.synchronize()
            with torch.no_grad():
                model.generate(ids, max_new_tokens=2, min_new_tokens=2, do_sample=False, cache_implementation="static")  # warm-up
                sync()
                t0 = time.perf_counter()
                model(ids)
                sync()
                t1 = time.perf_counter()
                model.generate(ids, max_new_tokens=N, min_new_tokens=N, do_sample=False, cache_implementation="static")
                sync()
                t2 = time.perf_counter()
            prefill = t1 - t0
            rows.append({"who": "transformers generate (static cache)", "batch": B,
                         "prefillTokS": B * P / prefill, "decodeTokS": B * (N - 1) / max(t2 - t1 - prefill, 1e-9)})
        except Exception as e:  # noqa: BLE001
            rows.append({"who": "transformers generate (static cache)", "batch": B, "note": "not measured: " + str(e).split("\n")[0][:160]})
        print(f"transformers batch {B}: {rows[-1]}", file=sys.stderr)
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
