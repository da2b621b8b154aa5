#!/usr/bin/env python3
"""PyTorch reference timings for the adapter microbenchmark (driven by scripts/bench.ts).

Runs the bottleneck adapter
    out = x + s * F.linear(act(F.linear(x, Wd, bd)), Wu, bu)
in eager PyTorch (and torch.compile where it exists and works) over the shapes and
dtypes of a JSON spec, read from the first argument or from stdin:

    {"device": "cpu" | "cuda:0", "shapes": [{"d": 768, "r": 48, "N": 512}, ...],
     "dtypes": ["bfloat16", "float32"], "activation": "relu", "scaling": 1,
     "warmup": 5, "runs": 50, "minRuns": 10, "budgetMs": 1500, "threads": 2, "seed": 0}

and prints one JSON object on stdout (progress and warnings go to stderr):

    {"version", "device", "deviceName", "threads", "tf32", "compile": {"available", "note"},
     "rows": [{"d", "r", "N", "dtype", "pass": "forward"|"backward",
               "variant": "eager"|"compile", "ms", "runs", "error"?}]}

Timing matches bench.ts: each run is timed alone (CUDA events around it on CUDA,
time.perf_counter on the CPU), after a warm-up, and the median is reported.
budgetMs caps the timed runs per cell on the CPU only (never below minRuns), so slow
CPU cells (bf16 matmuls without native bf16 support) stay affordable; the actual
count is reported.
"""
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
    "silu": F.silu,
    "identity": lambda t: t,
}
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Timer:
    """Times one call: CUDA events on the current stream, else wall-clock (CPU ops are synchronous)."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.start = torch.cuda.Event(enable_timing=True)
            self.stop = torch.cuda.Event(enable_timing=True)

    def time_ms(self, fn):
        if self.cuda:
            self.start.record()
            fn()
            self.stop.record()
            self.stop.synchronize()
            return self.start.elapsed_time(self.stop)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


def measure(timer, fn, spec):
    """Median ms of the timed runs after the warm-up, and how many runs were timed."""
    warm = [timer.time_ms(fn) for _ in range(spec["warmup"])]
    runs = spec["runs"]
    if not timer.cuda and warm:
        # The warm-up median estimates one run: cap the CPU cell at budgetMs.
        estimate = max(statistics.median(warm), 1e-3)
        runs = max(spec["minRuns"], min(runs, int(spec["budgetMs"] / estimate)))
    times = [timer.time_ms(fn) for _ in range(runs)]
    return statistics.median(times), runs


def make_inputs(shape, dtype, device, seed):
    d, r, n = shape["d"], shape["r"], shape["N"]
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def rand(*size, std=1.0):
        # Drawn on the CPU (seeded the same on every device), then moved.
        t = torch.randn(*size, generator=gen) * std
        return t.to(device=device, dtype=dtype).requires_grad_(True)

    x = rand(n, d)
    weights = [rand(r, d, std=d ** -0.5), rand(r), rand(d, r, std=r ** -0.5), rand(d)]
    d_out = torch.randn(n, d, generator=gen).to(device=device, dtype=dtype)
    return x, weights, d_out


def adapter_fn(act, s):
    def adapter(x, wd, bd, wu, bu):
        return x + s * F.linear(act(F.linear(x, wd, bd)), wu, bu)

    return adapter


def bench_cell(fn, x, weights, d_out, timer, spec):
    """Forward (grad-enabled, as in training) and backward (autograd of out w.r.t. x and the weights)."""
    fwd_ms, fwd_runs = measure(timer, lambda: fn(x, *weights), spec)
    out = fn(x, *weights)
    inputs = [x, *weights]
    # autograd.grad returns fresh gradients instead of accumulating into .grad, so nothing
    # needs zeroing between runs; retain_graph keeps the one forward graph for every run.
    bwd_ms, bwd_runs = measure(
        timer, lambda: torch.autograd.grad(out, inputs, d_out, retain_graph=True), spec
    )
    return [("forward", fwd_ms, fwd_runs), ("backward", bwd_ms, bwd_runs)]


def compile_status():
    if not hasattr(torch, "compile"):
        return {"available": False, "note": "unavailable (torch %s has no torch.compile)" % torch.__version__}
    return {"available": True, "note": "torch.compile (default mode)"}


def run_variant(variant, fn_factory, shape, dtype_name, device, timer, spec):
    base = {"d": shape["d"], "r": shape["r"], "N": shape["N"], "dtype": dtype_name, "variant": variant}
    try:
        x, weights, d_out = make_inputs(shape, DTYPES[dtype_name], device, spec["seed"])
        results = bench_cell(fn_factory(), x, weights, d_out, timer, spec)
        return [dict(base, **{"pass": p, "ms": ms, "runs": n}) for p, ms, n in results]
    except Exception as e:  # one failing cell must not stop the others
        msg = "%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        log("torch %s %s: %s" % (variant, base, msg))
        return [dict(base, **{"pass": p, "ms": None, "runs": 0, "error": msg}) for p in ("forward", "backward")]
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


def main():
    spec = json.loads(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read())
    spec = dict({"activation": "relu", "scaling": 1.0, "warmup": 5, "runs": 50, "minRuns": 10,
                 "budgetMs": 1500, "threads": 0, "seed": 0}, **spec)
    device = torch.device(spec["device"])
    if device.type == "cpu" and spec["threads"] > 0:
        torch.set_num_threads(spec["threads"])  # the same thread count as the native library
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timer = Timer(device)
    act = ACTIVATIONS[spec["activation"]]
    eager = adapter_fn(act, spec["scaling"])
    compiled = compile_status()

    def compiled_factory():
        # A fresh dynamo state per cell: otherwise the per-function recompile limit is hit
        # after a few shapes and later cells silently fall back to eager.
        torch._dynamo.reset()
        return torch.compile(adapter_fn(act, spec["scaling"]))

    rows = []
    for shape in spec["shapes"]:
        for dtype_name in spec["dtypes"]:
            log("torch: d=%d r=%d N=%d %s" % (shape["d"], shape["r"], shape["N"], dtype_name))
            rows += run_variant("eager", lambda: eager, shape, dtype_name, device, timer, spec)
            if compiled["available"]:
                rows += run_variant("compile", compiled_factory, shape, dtype_name, device, timer, spec)

    print(json.dumps({
        "version": torch.__version__,
        "device": str(device),
        "deviceName": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "compile": compiled,
        "rows": rows,
    }))


if __name__ == "__main__":
    main()
