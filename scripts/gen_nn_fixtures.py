#!/usr/bin/python3
"""Generate float64 PyTorch reference fixtures for the transformer building blocks (lib/nn.ts).

Run from the repository root with Debian's python3 and its python3-torch (1.13, CPU),
not the pyenv python first on PATH:

    /usr/bin/python3 scripts/gen_nn_fixtures.py

It writes test/fixtures/nn.json, which test/nn.fixtures.test.ts checks against the
library's CPU ops. Every case draws its inputs as float32 from its own seeded
torch.Generator (no input is exactly zero), widens them exactly to float64 and computes
the expected outputs and gradients in float64 with torch autograd:

  layerNorm        out = F.layer_norm(x + residual, [H], weight, bias, eps) (residual
                   optional; eps 1e-12 or 1e-5), with the row mean and 1/sqrt(var + eps);
                   out.backward(dOut) gives dx (= d residual), dWeight, dBias.
  maskedSoftmax    probs = softmax(scale * scores + (1 - mask) * finfo(float64).min), the
                   Hugging Face additive key-padding mask; scores [B, NH, Tq, Tk],
                   scale = 1/sqrt(dh), mask [B, Tk] of 1/0 (optional; one batch row keeps
                   a single key). probs.backward(dProbs) gives dScores, the gradient
                   w.r.t. the unscaled scores.
  activation       y = act(x) for relu | gelu (erf) | gelu_tanh | silu | identity | tanh;
                   y.backward(dy) gives dx = dy * act'(x) (activationGrad).
  embedding        out = F.embedding(ids, table) with repeated ids; out.backward(dOut)
                   gives dTable (the dOut rows summed into their ids; unused rows 0).
  crossEntropy     loss = F.cross_entropy(logits, labels, reduction='mean',
                   ignore_index=ignoreIndex) with some labels ignored (never all);
                   loss.backward() gives dLogits.
  transpose12      x.permute(0, 2, 1, 3) of a float32 [A, B, C, D] tensor.

Dropout is Philox-based and cannot be compared with torch's RNG, so it has no case.

All arrays are flattened in row-major order. Inputs are written with the shortest text
that reads back as the same float32; expected values are the float64 results rounded to
12 significant digits (ample for the 1e-5 relative comparison, and keeps the file small).
The script is deterministic: the same torch version writes the same file.
"""

import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

OUT_PATH = os.path.join("test", "fixtures", "nn.json")
GENERATOR = "scripts/gen_nn_fixtures.py"
ACTIVATIONS = ["relu", "gelu", "gelu_tanh", "silu", "identity", "tanh"]


# ---- helpers ----

def draw(gen, shape, std=1.0, mean=0.0):
    """A float32 normal draw (exact zeros replaced), widened exactly to float64."""
    v = (torch.randn(*shape, generator=gen, dtype=torch.float32) * std + mean).to(torch.float32)
    v = torch.where(v == 0, torch.full_like(v, 0.03125), v)
    return v.to(torch.float64)


def f32(t):
    """Shortest decimal text that reads back (as a double, then rounded) as the same float32."""
    out = []
    for v in t.detach().to(torch.float32).reshape(-1).tolist():
        s = float(repr(np.float32(v)))
        if np.float32(s) != np.float32(v):  # never expected; fall back to the exact double
            s = float(v)
        out.append(s)
    return out


def f64(t):
    """float64 results, 12 significant digits."""
    return [float("%.12g" % v) for v in t.detach().to(torch.float64).reshape(-1).tolist()]


def ints(t):
    return [int(v) for v in t.reshape(-1).tolist()]


def act_fn(name, t):
    if name == "relu":
        return F.relu(t)
    if name == "gelu":
        return F.gelu(t)
    if name == "gelu_tanh":
        return F.gelu(t, approximate="tanh")
    if name == "silu":
        return F.silu(t)
    if name == "identity":
        return t * 1.0
    if name == "tanh":
        return torch.tanh(t)
    raise ValueError(name)


# ---- cases ----

def layer_norm_case(seed, shape, residual_given, eps, x_std=2.0, x_mean=0.5):
    H = shape[-1]
    gen = torch.Generator().manual_seed(seed)
    x = draw(gen, shape, x_std, x_mean).requires_grad_(True)
    residual = draw(gen, shape, 1.0).requires_grad_(True) if residual_given else None
    weight = draw(gen, (H,), 0.3, 1.0).requires_grad_(True)
    bias = draw(gen, (H,), 0.5).requires_grad_(True)
    d_out = draw(gen, shape, 1.0)

    v = x + residual if residual_given else x
    out = F.layer_norm(v, [H], weight, bias, eps)
    out.backward(d_out)
    with torch.no_grad():
        mean = v.mean(dim=-1)
        var = v.var(dim=-1, unbiased=False)
        rstd = 1.0 / torch.sqrt(var + eps)
    if residual_given:
        assert torch.allclose(x.grad, residual.grad, rtol=0, atol=0)

    dims = "x".join(str(s) for s in shape)
    case = {
        "op": "layerNorm",
        "name": f"layerNorm [{dims}] eps={eps:g} {'residual' if residual_given else 'no-residual'}",
        "shape": list(shape),
        "eps": eps,
        "x": f32(x),
    }
    if residual_given:
        case["residual"] = f32(residual)
    case.update({
        "weight": f32(weight),
        "bias": f32(bias),
        "dOut": f32(d_out),
        "out": f64(out),
        "mean": f64(mean),
        "rstd": f64(rstd),
        "dx": f64(x.grad),
        "dWeight": f64(weight.grad),
        "dBias": f64(bias.grad),
    })
    return case


def masked_softmax_case(seed, shape, dh, mask_mode):
    """mask_mode: None (no mask), or 'padding' (random padding; batch 0 keeps a single key)."""
    B, NH, Tq, Tk = shape
    gen = torch.Generator().manual_seed(seed)
    scores = draw(gen, shape, 4.0).requires_grad_(True)
    d_probs = draw(gen, shape, 1.0)
    scale = 1.0 / math.sqrt(dh)

    logits = scores * scale
    mask = None
    if mask_mode is not None:
        keep = torch.rand(B, Tk, generator=gen) >= 0.35
        mask = keep.to(torch.float64)
        mask[:, 0] = 1.0  # no batch row fully masked
        if B > 1:
            mask[0, :] = 0.0
            mask[0, Tk // 2] = 1.0  # batch 0: all keys but one masked
        additive = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float64).min
        logits = logits + additive
    probs = torch.softmax(logits, dim=-1)
    probs.backward(d_probs)
    if mask is not None:
        masked = (mask == 0)[:, None, None, :].expand(shape)
        assert bool((probs.detach()[masked] == 0).all())

    dims = "x".join(str(s) for s in shape)
    case = {
        "op": "maskedSoftmax",
        "name": f"maskedSoftmax [{dims}] dh={dh} {'key-mask' if mask is not None else 'no-mask'}",
        "shape": list(shape),
        "scale": scale,
        "scores": f32(scores),
    }
    if mask is not None:
        case["keyMask"] = ints(mask.to(torch.int64))
    case.update({
        "dProbs": f32(d_probs),
        "probs": f64(probs),
        "dScores": f64(scores.grad),
    })
    return case


def activation_case(seed, name, shape):
    gen = torch.Generator().manual_seed(seed)
    x = draw(gen, shape, 2.5).requires_grad_(True)
    dy = draw(gen, shape, 1.0)
    y = act_fn(name, x)
    y.backward(dy)
    dims = "x".join(str(s) for s in shape)
    return {
        "op": "activation",
        "name": f"activation {name} [{dims}]",
        "activation": name,
        "shape": list(shape),
        "x": f32(x),
        "dy": f32(dy),
        "y": f64(y),
        "dx": f64(x.grad),
    }


def embedding_case(seed, V, H, ids_shape, unused=2):
    gen = torch.Generator().manual_seed(seed)
    table = draw(gen, (V, H), 1.0).requires_grad_(True)
    ids = torch.randint(0, V - unused, ids_shape, generator=gen, dtype=torch.int64)
    flat_ids = ids.reshape(-1)
    n = flat_ids.numel()
    if n >= 3:  # repeated ids
        flat_ids[0] = flat_ids[n // 2] = flat_ids[n - 1] = 1
    d_out = draw(gen, tuple(ids_shape) + (H,), 1.0)
    out = F.embedding(ids, table)
    out.backward(d_out)
    # the same sum by index_add, as a cross-check of the autograd result
    ref = torch.zeros(V, H, dtype=torch.float64).index_add_(0, flat_ids, d_out.reshape(-1, H))
    assert torch.allclose(ref, table.grad, rtol=1e-12, atol=1e-12)
    dims = "x".join(str(s) for s in ids_shape)
    return {
        "op": "embedding",
        "name": f"embedding V={V} H={H} ids [{dims}]",
        "V": V,
        "H": H,
        "idsShape": list(ids_shape),
        "table": f32(table),
        "ids": ints(ids),
        "dOut": f32(d_out),
        "out": f64(out),
        "dTable": f64(table.grad),
    }


def cross_entropy_case(seed, B, C, n_ignored, ignore_index=-100, std=3.0):
    gen = torch.Generator().manual_seed(seed)
    logits = draw(gen, (B, C), std).requires_grad_(True)
    labels = torch.randint(0, C, (B,), generator=gen, dtype=torch.int64)
    if ignore_index >= 0:  # a class index used as the ignore index: keep one row counted
        labels[labels == ignore_index] = (ignore_index + 1) % C
    if n_ignored:
        perm = torch.randperm(B, generator=gen)[:n_ignored]
        labels[perm] = ignore_index
    assert int((labels != ignore_index).sum()) > 0
    loss = F.cross_entropy(logits, labels, reduction="mean", ignore_index=ignore_index)
    loss.backward()
    return {
        "op": "crossEntropy",
        "name": f"softmaxCrossEntropy B={B} C={C} ignored={n_ignored} ignoreIndex={ignore_index} std={std:g}",
        "B": B,
        "C": C,
        "ignoreIndex": ignore_index,
        "logits": f32(logits),
        "labels": ints(labels),
        "loss": f64(loss)[0],
        "dLogits": f64(logits.grad),
    }


def transpose12_case(seed, shape):
    gen = torch.Generator().manual_seed(seed)
    x = draw(gen, shape, 1.0)
    y = x.permute(0, 2, 1, 3).contiguous()
    dims = "x".join(str(s) for s in shape)
    return {
        "op": "transpose12",
        "name": f"transpose12 [{dims}]",
        "shape": list(shape),
        "x": f32(x),
        "y": f32(y),
    }


def main():
    torch.set_grad_enabled(True)
    cases = []
    seed = 5000

    def next_seed():
        nonlocal seed
        seed += 1
        return seed

    # LayerNorm: odd sizes and a single row, with / without residual, both eps values.
    for shape in [(1, 13), (4, 16), (2, 3, 33), (7, 5)]:
        for residual_given in (False, True):
            for eps in (1e-12, 1e-5):
                cases.append(layer_norm_case(next_seed(), shape, residual_given, eps))
    # a shifted input (mean 8): the variance must not be taken as E[v²] − E[v]²
    cases.append(layer_norm_case(next_seed(), (3, 24), True, 1e-5, x_std=1.0, x_mean=8.0))

    # maskedSoftmax: [B, NH, Tq, Tk] with scale 1/sqrt(dh).
    for shape, dh, mask_mode in [
        ((2, 3, 4, 9), 16, "padding"),
        ((3, 2, 5, 13), 64, "padding"),
        ((2, 1, 1, 7), 8, "padding"),      # a single query row per head
        ((1, 4, 3, 1), 4, "padding"),      # Tk = 1
        ((2, 2, 3, 11), 32, None),
        ((1, 1, 1, 17), 16, None),         # a single row
    ]:
        cases.append(masked_softmax_case(next_seed(), shape, dh, mask_mode))

    # activation / activationGrad: a single row and a 3-D odd shape each.
    for name in ACTIVATIONS:
        for shape in [(1, 7), (3, 5, 11)]:
            cases.append(activation_case(next_seed(), name, shape))

    # embedding gather / backward with repeated ids (two rows of the table unused).
    for V, H, ids_shape in [(11, 6, (2, 5)), (7, 13, (1, 9)), (30, 4, (3, 2, 4)), (5, 3, (1,))]:
        cases.append(embedding_case(next_seed(), V, H, ids_shape, unused=2 if V > 5 else 0))

    # softmaxCrossEntropy: mean over non-ignored rows.
    for B, C, n_ignored, ignore_index, std in [
        (1, 2, 0, -100, 3.0),
        (5, 7, 2, -100, 3.0),
        (8, 3, 1, -100, 3.0),
        (6, 130, 3, -100, 2.0),
        (4, 5, 0, -100, 20.0),   # large logits
        (6, 4, 2, 1, 3.0),       # a class index as ignoreIndex
    ]:
        cases.append(cross_entropy_case(next_seed(), B, C, n_ignored, ignore_index, std))

    # transpose12: [A, B, C, D] -> [A, C, B, D].
    for shape in [(2, 3, 4, 5), (1, 1, 3, 2), (3, 5, 1, 7)]:
        cases.append(transpose12_case(next_seed(), shape))

    doc = {"generator": GENERATOR, "torch": torch.__version__, "cases": cases}
    os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
    with open(OUT_PATH, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT_PATH}: {len(cases)} cases, {os.path.getsize(OUT_PATH)} bytes")


if __name__ == "__main__":
    main()
