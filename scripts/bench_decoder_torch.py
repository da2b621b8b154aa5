#!/usr/bin/env python3
"""PyTorch timings for the decoder benchmark (driven by scripts/bench_decoder.ts): the same
checkpoint loaded by transformers (LlamaForCausalLM, eager attention) with AdapterHub's seq_bn
adapter trained (adapters.init + add_adapter + train_adapter), one step = forward with labels
and backward; eager, then torch.compile where it works.

Spec (JSON on stdin): {"device", "dtype", "dir", "ids": [[...]], "labels": [[...]], "warmup", "runs", "threads"}
Output (stdout): {"version", "rows": [{"mode": "eager"|"compile", "ms", "runs"} | {"mode", "error"}]}
"""
import json
import statistics
import sys
import time

import torch


def main():
    spec = json.load(sys.stdin)
    torch.set_num_threads(int(spec["threads"]))
    try:
        import adapters
        from adapters import SeqBnConfig
        from transformers import AutoModelForCausalLM
    except ImportError as e:
        print(json.dumps({"version": torch.__version__, "rows": [], "error": f"needs transformers and adapters ({e})"}))
        return
    dev = torch.device(spec["device"])
    dtype = torch.bfloat16 if spec["dtype"] == "bfloat16" else torch.float32
    ids = torch.tensor(spec["ids"], device=dev)
    labels = torch.tensor(spec["labels"], device=dev)
    rows = []
    for mode in ["eager", "compile"]:
        try:
            model = AutoModelForCausalLM.from_pretrained(spec["dir"], attn_implementation="eager").to(dev, dtype)
            adapters.init(model)
            model.add_adapter("bench", config=SeqBnConfig())
            model.train_adapter("bench")
            model.to(dev, dtype)
            run = torch.compile(model) if mode == "compile" else model

            def step():
                model.zero_grad(set_to_none=True)
                out = run(input_ids=ids, labels=labels)
                out.loss.backward()

            def timed():
                if dev.type == "cuda":
                    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    a.record()
                    step()
                    b.record()
                    torch.cuda.synchronize()
                    return a.elapsed_time(b)
                t0 = time.perf_counter()
                step()
                return (time.perf_counter() - t0) * 1e3

            for _ in range(int(spec["warmup"])):
                timed()
            times = [timed() for _ in range(int(spec["runs"]))]
            rows.append({"mode": mode, "ms": statistics.median(times), "runs": len(times)})
        except Exception as e:  # noqa: BLE001 - a mode that fails is reported, not fatal
            rows.append({"mode": mode, "error": str(e).split("\n")[0][:200]})
        print(f"torch {mode}: {rows[-1]}", file=sys.stderr)
    print(json.dumps({"version": torch.__version__, "rows": rows}))


if __name__ == "__main__":
    main()
