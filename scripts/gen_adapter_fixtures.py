"""Generate float64 PyTorch reference fixtures for the bottleneck adapter op.

For each case this draws float32 random inputs (x, down/up weights and biases,
an optional separate residual, the scaling when it is a tensor, and dOut) from
seeded torch.Generator streams, widens them to float64, and uses torch autograd
to compute

    h_pre = x @ Wd.T + bd
    h     = act(h_pre)          (relu | gelu (erf) | gelu_tanh | silu | identity)
    z     = h @ Wu.T + bu
    out   = residual + s * z    (residual = x unless a separate one is given)

then out.backward(dOut). It records out, dx (= x.grad; includes the dOut path
only when the residual is x), dDownWeight, dDownBias, dUpWeight, dUpBias and,
for learned ([1]) or per-channel ([d]) scaling, dScaling. Dropout is off.
All arrays are stored flattened in row-major order.

The output, test/fixtures/adapter.json, is checked by
test/adapter.fixtures.test.ts. Run from the repository root with Debian's
PyTorch (not the pyenv python first on PATH):

    /usr/bin/python3 scripts/gen_adapter_fixtures.py

The script is deterministic: the same torch version writes the same file.
"""

import json
import os

import torch
import torch.nn.functional as F

ACTIVATIONS = ["relu", "gelu", "gelu_tanh", "silu", "identity"]
SCALING_MODES = ["fixed", "learned", "channel"]
FIXED_SCALES = [0.5, 2.0]

OUT_PATH = os.path.join("test", "fixtures", "adapter.json")


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
        return t
    raise ValueError(name)


def draw(gen, shape, std, mean=0.0):
    """float32 normal draw, widened exactly to float64."""
    v = torch.randn(*shape, generator=gen, dtype=torch.float32) * std + mean
    v = v.to(torch.float32)  # keep the rounding at float32
    return v.to(torch.float64)


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def make_case(seed, name, activation, scaling_mode, residual_given, x_shape, r, fixed_scale=0.5):
    d = x_shape[-1]
    gen = torch.Generator().manual_seed(seed)
    x = draw(gen, x_shape, 0.5).requires_grad_(True)
    wd = draw(gen, (r, d), 0.3).requires_grad_(True)
    bd = draw(gen, (r,), 0.3).requires_grad_(True)
    wu = draw(gen, (d, r), 0.3).requires_grad_(True)
    bu = draw(gen, (d,), 0.3).requires_grad_(True)
    residual = draw(gen, x_shape, 0.5) if residual_given else None
    if scaling_mode == "fixed":
        s = float(fixed_scale)
        s_json = s
    else:
        s = draw(gen, (1,) if scaling_mode == "learned" else (d,), 0.3, mean=0.5).requires_grad_(True)
        s_json = flat(s)
    d_out = draw(gen, x_shape, 1.0)

    h = act_fn(activation, x @ wd.t() + bd)
    z = h @ wu.t() + bu
    out = (residual if residual_given else x) + s * z
    out.backward(d_out)

    case = {
        "name": name,
        "activation": activation,
        "scalingMode": scaling_mode,
        "scaling": s_json,
        "residualGiven": residual_given,
        "xShape": list(x_shape),
        "d": d,
        "r": r,
        "x": flat(x),
        "downWeight": flat(wd),
        "downBias": flat(bd),
        "upWeight": flat(wu),
        "upBias": flat(bu),
    }
    if residual_given:
        case["residual"] = flat(residual)
    case.update({
        "dOut": flat(d_out),
        "out": flat(out),
        "dx": flat(x.grad),
        "dDownWeight": flat(wd.grad),
        "dDownBias": flat(bd.grad),
        "dUpWeight": flat(wu.grad),
        "dUpBias": flat(bu.grad),
    })
    if scaling_mode != "fixed":
        case["dScaling"] = flat(s.grad)
    return case


def main():
    torch.set_grad_enabled(True)
    cases = []
    seed = 1000

    # Base shape: every activation x scaling mode x residual given / not.
    for ai, act in enumerate(ACTIVATIONS):
        for mode in SCALING_MODES:
            for res in (False, True):
                seed += 1
                fixed = FIXED_SCALES[(ai + int(res)) % 2]
                name = f"base N6 d16 r4 {act} {mode}{'' if mode != 'fixed' else f'={fixed}'} {'residual' if res else 'no-residual'}"
                cases.append(make_case(seed, name, act, mode, res, (6, 16), 4, fixed))

    # Odd shapes, cycling through the activations (and scaling modes / residual).
    odd_shapes = [
        ("N1 d13 r1", (1, 13), 1),
        ("N5 d13 r3", (5, 13), 3),
        ("B2 T3 d13 r5", (2, 3, 13), 5),
        ("N4 d8 r1", (4, 8), 1),
    ]
    k = 0
    for label, shape, r in odd_shapes:
        for act in ACTIVATIONS:
            mode = SCALING_MODES[k % 3]
            res = (k % 2) == 1
            fixed = FIXED_SCALES[k % 2]
            seed += 1
            name = f"odd {label} {act} {mode}{'' if mode != 'fixed' else f'={fixed}'} {'residual' if res else 'no-residual'}"
            cases.append(make_case(seed, name, act, mode, res, shape, r, fixed))
            k += 1

    doc = {"generator": "scripts/gen_adapter_fixtures.py", "torch": torch.__version__, "cases": cases}
    os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
    with open(OUT_PATH, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT_PATH}: {len(cases)} cases, {os.path.getsize(OUT_PATH)} bytes")


if __name__ == "__main__":
    main()
