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
               "variant": "eager"|"compile", "ms", "runs", "backwardGraph"?, "error"?}]}

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


def measure(timer, fn, spec, prepare=None):
    """Median ms of the timed runs after the warm-up, and how many runs were timed.

    prepare (optional) runs untimed before every run and returns the argument of fn.
    """
    def once():
        arg = prepare() if prepare else None
        return timer.time_ms(lambda: fn(arg))

    warm = [once() for _ in range(spec["warmup"])]
    runs = spec["runs"]
    if not timer.cuda and warm:
        # The warm-up median estimates one run: cap the CPU cell at budgetMs.
        estimate = max(statistics.median(warm), 1e-3)
        runs = max(spec["minRuns"], min(runs, int(spec["budgetMs"] / estimate)))
    times = [once() for _ in range(runs)]
    return statistics.median(times), runs


def make_inputs(shape, dtype, device, seed):
    d, r, n = shape["d"], shape["r"], shape["N"]
    gen = torch.Generator(device=device).manual_seed(seed)

    def normal(*size, std=1.0):
        # Drawn in fp32 on the device itself (fast for the large GPU shapes), then cast.
        return (torch.randn(*size, generator=gen, device=device) * std).to(dtype)

    x = normal(n, d).requires_grad_(True)
    weights = [normal(r, d, std=d ** -0.5), normal(r, std=0.02), normal(d, r, std=r ** -0.5), normal(d, std=0.02)]
    return x, [w.requires_grad_(True) for w in weights], normal(n, d)


def adapter_fn(act, s):
    def adapter(x, wd, bd, wu, bu):
        return x + s * F.linear(act(F.linear(x, wd, bd)), wu, bu)

    return adapter


def time_forward(fn, x, weights, timer, spec):
    """The forward with grad enabled (it records the graph, as in training)."""
    return measure(timer, lambda _: fn(x, *weights), spec)


def time_backward(fn, x, weights, d_out, timer, spec):
    """Autograd of out w.r.t. x and the four weights; only the backward is timed.

    autograd.grad returns fresh gradients instead of accumulating into .grad, so nothing
    needs zeroing. One forward graph is reused with retain_graph=True; a graph that cannot
    be run twice (possible with compiled backwards) gets a fresh, untimed forward per run.
    Returns (ms, runs, mode).
    """
    inputs = [x, *weights]
    out = fn(x, *weights)
    try:
        for _ in range(2):  # probe: the second call fails if the graph cannot be reused
            torch.autograd.grad(out, inputs, d_out, retain_graph=True)
    except RuntimeError:
        del out
        ms, runs = measure(timer, lambda o: torch.autograd.grad(o, inputs, d_out), spec,
                           prepare=lambda: fn(x, *weights))
        return ms, runs, "fresh graph per run"
    ms, runs = measure(timer, lambda _: torch.autograd.grad(out, inputs, d_out, retain_graph=True), spec)
    return ms, runs, "retain_graph"


def error_text(e):
    text = str(e).strip().splitlines()
    return "%s: %s" % (type(e).__name__, text[0] if text else "")


def compile_status():
    if not hasattr(torch, "compile"):
        return {"available": False, "note": "unavailable (torch %s has no torch.compile)" % torch.__version__}
    return {"available": True, "note": "torch.compile (default mode)"}


def run_variant(variant, fn_factory, shape, dtype_name, device, timer, spec):
    """Forward and backward rows of one variant at one shape and dtype; each fails on its own."""
    base = {"d": shape["d"], "r": shape["r"], "N": shape["N"], "dtype": dtype_name, "variant": variant}
    rows = []
    try:
        x, weights, d_out = make_inputs(shape, DTYPES[dtype_name], device, spec["seed"])
        fn = fn_factory()
    except Exception as e:  # no inputs or no function: both passes fail
        msg = error_text(e)
        log("torch %s %s: %s" % (variant, base, msg))
        return [dict(base, **{"pass": p, "ms": None, "runs": 0, "error": msg}) for p in ("forward", "backward")]
    passes = [
        ("forward", lambda: time_forward(fn, x, weights, timer, spec) + (None,)),
        ("backward", lambda: time_backward(fn, x, weights, d_out, timer, spec)),
    ]
    for name, timed in passes:
        try:
            ms, runs, mode = timed()
            row = dict(base, **{"pass": name, "ms": ms, "runs": runs})
            if mode:
                row["backwardGraph"] = mode
        except Exception as e:  # one failing cell must not stop the others
            row = dict(base, **{"pass": name, "ms": None, "runs": 0, "error": error_text(e)})
            log("torch %s %s %s: %s" % (variant, name, base, row["error"]))
        rows.append(row)
    del x, weights, d_out, fn
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


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
