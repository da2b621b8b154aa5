"""Generate tiny Hugging Face-style backbone checkpoints and float64 PyTorch
reference outputs for adapter fine-tuning tests.

What it makes (all under test/fixtures/):

  tiny-bert/
    config.json                  Hugging Face BertConfig (H=64, 2 layers, 4 heads)
    model.safetensors            F32 BertModel weights under the "bert." prefix,
                                 plus the I64 buffer bert.embeddings.position_ids
    reference-none.safetensors   inputs, last_hidden_state, pooler_output
    reference-seq_bn.safetensors         \
    reference-double_seq_bn.safetensors   > inputs, adapter + head parameters,
    reference-par_bn.safetensors         /  outputs, loss and gradients
  tiny-roberta/
    config.json, model.safetensors ("roberta." prefix), reference-none.safetensors
  tiny-distilbert/
    config.json, model.safetensors ("distilbert." prefix), reference-none.safetensors

The backbone math is written out by hand in plain PyTorch (no `transformers`),
following Hugging Face BERT / RoBERTa / DistilBERT in eval mode (no dropout),
and the bottleneck adapters follow AdapterHub (`adapters`) semantics:

  f(y) = adapter_up(act(adapter_down.0(y))), s = scaling
  seq_bn        (Pfeiffer): FFN out = LN(s*f(LN(h2 + x)) + h2 + x)
  double_seq_bn (Houlsby):  attn out = LN(s*f_attn(h) + h + x),
                            FFN out  = LN(s*f_out(h2) + h2 + x)
  par_bn        (parallel): FFN out = LN(h2 + s*f(x) + x)

Classification head (AdapterHub "task", 3 labels) on token 0:
  logits = heads.task.4(tanh(heads.task.1(last_hidden_state[:, 0])))
  loss   = mean cross-entropy.

Weights are drawn in float32 from fixed-seed torch.Generator streams and
written as F32; every reference is computed in float64 from exactly those
float32 values (cast up) and written as F32. The safetensors files are written
by this script itself (no safetensors package): 8-byte little-endian header
length, compact JSON header {name: {dtype, shape, data_offsets}} plus
"__metadata__" (string values), padded with spaces to a multiple of 8, then
the raw little-endian tensor data. Tensors are stored largest dtype first,
then by name, so every tensor is naturally aligned in the file.

Run from the repository root with Debian's PyTorch (not the pyenv python that
comes first on PATH):

    /usr/bin/python3 scripts/gen_backbone_fixtures.py

The script is deterministic: the same torch version writes the same files.
It asserts a few sanity properties (zeroed adapter up-projection == no
adapter; padded tokens do not influence real positions; the explicit adapter
formulas equal a flag-driven AdapterHub-style pre/forward/post pipeline) and
re-reads every file it writes.
"""

import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.join("test", "fixtures")
ADAPTER_NAME = "task"
NUM_LABELS = 3

# Batch shared by every fixture.
B, T = 3, 10
LENGTHS = [10, 7, 4]
LABELS = [2, 0, 1]

# --------------------------------------------------------------------------
# safetensors I/O (written from the format description)
# --------------------------------------------------------------------------

_DTYPES = {
    torch.float64: ("F64", 8),
    torch.float32: ("F32", 4),
    torch.float16: ("F16", 2),
    torch.int64: ("I64", 8),
    torch.int32: ("I32", 4),
    torch.uint8: ("U8", 1),
}
_NP_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "U8": "u1"}


def write_safetensors(path, tensors, metadata=None):
    assert sys.byteorder == "little"
    items = []
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        code, size = _DTYPES[t.dtype]
        items.append((name, t, code, size))
    # Largest itemsize first, then name: keeps every tensor naturally aligned.
    items.sort(key=lambda it: (-it[3], it[0]))
    header = {}
    chunks = []
    offset = 0
    for name, t, code, _ in items:
        data = t.numpy().astype(_NP_DTYPES[code], copy=False).tobytes()
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * ((-len(hbytes)) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(hbytes)))
        fh.write(hbytes)
        for c in chunks:
            fh.write(c)


def read_safetensors(path):
    with open(path, "rb") as fh:
        raw = fh.read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    base = 8 + n
    meta = header.pop("__metadata__", {})
    out = {}
    spans = []
    for name, info in header.items():
        s, e = info["data_offsets"]
        spans.append((s, e))
        dt = np.dtype(_NP_DTYPES[info["dtype"]])
        assert (base + s) % dt.itemsize == 0, f"{name} misaligned"
        arr = np.frombuffer(raw[base + s : base + e], dtype=dt).reshape(info["shape"])
        assert arr.size * dt.itemsize == e - s
        out[name] = torch.from_numpy(arr.copy())
    spans.sort()
    pos = 0
    for s, e in spans:
        assert s == pos, "hole or overlap in data section"
        pos = e
    assert base + pos == len(raw), "trailing bytes"
    return out, meta


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")


# --------------------------------------------------------------------------
# random parameter helpers (float32, fixed generator)
# --------------------------------------------------------------------------


class Init:
    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def randn(self, *shape):
        return torch.randn(*shape, generator=self.g, dtype=torch.float32)

    def normal(self, shape, std):
        return self.randn(*shape) * std

    def linear(self, params, name, n_out, n_in, std=0.08, bias_std=0.02):
        params[name + ".weight"] = self.normal((n_out, n_in), std)
        params[name + ".bias"] = self.normal((n_out,), bias_std)

    def layer_norm(self, params, name, n):
        params[name + ".weight"] = 1.0 + 0.1 * self.randn(n)
        params[name + ".bias"] = 0.1 * self.randn(n)


def make_bert_like(init, prefix, vocab, hidden, layers, inter, max_pos, type_vocab):
    """BERT / RoBERTa parameter dict with Hugging Face names."""
    p = {}
    e = prefix + "embeddings."
    p[e + "word_embeddings.weight"] = init.normal((vocab, hidden), 0.1)
    p[e + "position_embeddings.weight"] = init.normal((max_pos, hidden), 0.1)
    p[e + "token_type_embeddings.weight"] = init.normal((type_vocab, hidden), 0.1)
    init.layer_norm(p, e + "LayerNorm", hidden)
    for i in range(layers):
        l = f"{prefix}encoder.layer.{i}."
        for n in ("query", "key", "value"):
            init.linear(p, l + "attention.self." + n, hidden, hidden, std=0.1)
        init.linear(p, l + "attention.output.dense", hidden, hidden)
        init.layer_norm(p, l + "attention.output.LayerNorm", hidden)
        init.linear(p, l + "intermediate.dense", inter, hidden)
        init.linear(p, l + "output.dense", hidden, inter)
        init.layer_norm(p, l + "output.LayerNorm", hidden)
    init.linear(p, prefix + "pooler.dense", hidden, hidden)
    return p


def make_distilbert(init, vocab, dim, layers, hidden_dim, max_pos):
    p = {}
    e = "distilbert.embeddings."
    p[e + "word_embeddings.weight"] = init.normal((vocab, dim), 0.1)
    p[e + "position_embeddings.weight"] = init.normal((max_pos, dim), 0.1)
    init.layer_norm(p, e + "LayerNorm", dim)
    for i in range(layers):
        l = f"distilbert.transformer.layer.{i}."
        for n in ("q_lin", "k_lin", "v_lin"):
            init.linear(p, l + "attention." + n, dim, dim, std=0.1)
        init.linear(p, l + "attention.out_lin", dim, dim)
        init.layer_norm(p, l + "sa_layer_norm", dim)
        init.linear(p, l + "ffn.lin1", hidden_dim, dim)
        init.linear(p, l + "ffn.lin2", dim, hidden_dim)
        init.layer_norm(p, l + "output_layer_norm", dim)
    return p


# --------------------------------------------------------------------------
# model math (float64)
# --------------------------------------------------------------------------


def lin(p, name, x):
    return F.linear(x, p[name + ".weight"], p[name + ".bias"])


def ln(p, name, x, eps):
    w = p[name + ".weight"]
    return F.layer_norm(x, (w.shape[0],), w, p[name + ".bias"], eps)


def mha(q, k, v, mask, n_heads, masked_fill=False):
    """q,k,v [B,T,H]; mask [B,T] float (1 real, 0 pad) over keys."""
    b, t, h = q.shape
    d = h // n_heads

    def split(z):
        return z.view(b, t, n_heads, d).transpose(1, 2)  # [B,nh,T,d]

    q, k, v = split(q), split(k), split(v)
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d)
    minval = torch.finfo(scores.dtype).min
    if masked_fill:  # DistilBERT style
        scores = scores.masked_fill((mask == 0)[:, None, None, :], minval)
    else:  # BERT style additive extended mask
        scores = scores + (1.0 - mask)[:, None, None, :] * minval
    probs = torch.softmax(scores, dim=-1)
    ctx = torch.matmul(probs, v)  # [B,nh,T,d]
    return ctx.transpose(1, 2).reshape(b, t, h)


ACTS = {
    "relu": F.relu,
    "swish": F.silu,  # AdapterHub/HF "swish" == SiLU
    "gelu": F.gelu,  # erf gelu
}

# AdapterHub defaults for the three configs.
ADAPTER_CONFIGS = {
    "seq_bn": dict(reduction_factor=16, non_linearity="relu", scaling=1.0, mh_adapter=False, output_adapter=True,
                   original_ln_before=True, original_ln_after=True, residual_before_ln=True, is_parallel=False),
    "double_seq_bn": dict(reduction_factor=16, non_linearity="swish", scaling=1.0, mh_adapter=True,
                          output_adapter=True, original_ln_before=False, original_ln_after=True,
                          residual_before_ln=True, is_parallel=False),
    "par_bn": dict(reduction_factor=2, non_linearity="relu", scaling=4.0, mh_adapter=False, output_adapter=True,
                   original_ln_before=False, original_ln_after=True, residual_before_ln=True, is_parallel=True),
}


def adapter_f(p, name, act, y):
    return lin(p, name + ".adapter_up", ACTS[act](lin(p, name + ".adapter_down.0", y)))


def explicit_sublayer(kind, cfg, p, aname, h, x, ln_fn):
    """The formulas of the brief. kind: 'attn' or 'ffn'. aname: adapter prefix."""
    if cfg is None:
        return ln_fn(h + x)
    s, act = cfg["scaling"], cfg["non_linearity"]
    name = cfg["_name"]
    if kind == "attn":
        if name == "double_seq_bn":
            return ln_fn(s * adapter_f(p, aname, act, h) + h + x)
        return ln_fn(h + x)
    if name == "seq_bn":
        return ln_fn(s * adapter_f(p, aname, act, ln_fn(h + x)) + h + x)
    if name == "double_seq_bn":
        return ln_fn(s * adapter_f(p, aname, act, h) + h + x)
    if name == "par_bn":
        return ln_fn(h + s * adapter_f(p, aname, act, x) + x)
    raise ValueError(name)


def flagged_sublayer(kind, cfg, p, aname, h, x, ln_fn):
    """Same thing, driven by AdapterHub's config flags (pre_forward / forward /
    post_forward structure, adapter_residual_before_ln=False, no extra LNs)."""
    active = cfg is not None and cfg["mh_adapter" if kind == "attn" else "output_adapter"]
    if not active:
        return ln_fn(h + x)
    s, act = cfg["scaling"], cfg["non_linearity"]
    if cfg["is_parallel"]:
        a_in, residual = x, x
        out = s * adapter_f(p, aname, act, a_in)
        out = out + h
    else:
        residual = h if cfg["residual_before_ln"] is True else None
        a_in = h
        if cfg["original_ln_before"]:
            a_in = h + x
            if cfg["residual_before_ln"] == "post_add":
                residual = a_in
            a_in = ln_fn(a_in)
        if not cfg["residual_before_ln"]:
            residual = a_in
        out = s * adapter_f(p, aname, act, a_in) + residual
    if cfg["original_ln_after"]:
        out = ln_fn(out + x)
    return out


def bert_forward(p, prefix, conf, input_ids, token_type_ids, mask, position_ids, adapter=None, sublayer=None):
    sublayer = sublayer or explicit_sublayer
    eps = conf["layer_norm_eps"]
    nh = conf["num_attention_heads"]
    e = prefix + "embeddings."
    x = (
        F.embedding(input_ids, p[e + "word_embeddings.weight"])
        + F.embedding(position_ids, p[e + "position_embeddings.weight"])
        + F.embedding(token_type_ids, p[e + "token_type_embeddings.weight"])
    )
    x = ln(p, e + "LayerNorm", x, eps)
    for i in range(conf["num_hidden_layers"]):
        l = f"{prefix}encoder.layer.{i}."
        q = lin(p, l + "attention.self.query", x)
        k = lin(p, l + "attention.self.key", x)
        v = lin(p, l + "attention.self.value", x)
        h = lin(p, l + "attention.output.dense", mha(q, k, v, mask, nh))
        a = sublayer("attn", adapter, p, l + f"attention.output.adapters.{ADAPTER_NAME}", h, x,
                     lambda z, n=l + "attention.output.LayerNorm": ln(p, n, z, eps))
        inter = F.gelu(lin(p, l + "intermediate.dense", a))
        h2 = lin(p, l + "output.dense", inter)
        x = sublayer("ffn", adapter, p, l + f"output.adapters.{ADAPTER_NAME}", h2, a,
                     lambda z, n=l + "output.LayerNorm": ln(p, n, z, eps))
    pooled = torch.tanh(lin(p, prefix + "pooler.dense", x[:, 0]))
    return x, pooled


def distilbert_forward(p, conf, input_ids, mask):
    eps = 1e-12
    nh = conf["n_heads"]
    e = "distilbert.embeddings."
    pos = torch.arange(input_ids.shape[1]).unsqueeze(0).expand_as(input_ids)
    x = F.embedding(input_ids, p[e + "word_embeddings.weight"]) + F.embedding(pos, p[e + "position_embeddings.weight"])
    x = ln(p, e + "LayerNorm", x, eps)
    for i in range(conf["n_layers"]):
        l = f"distilbert.transformer.layer.{i}."
        q = lin(p, l + "attention.q_lin", x)
        k = lin(p, l + "attention.k_lin", x)
        v = lin(p, l + "attention.v_lin", x)
        sa = lin(p, l + "attention.out_lin", mha(q, k, v, mask, nh, masked_fill=True))
        sa = ln(p, l + "sa_layer_norm", sa + x, eps)
        ffn = lin(p, l + "ffn.lin2", F.gelu(lin(p, l + "ffn.lin1", sa)))
        x = ln(p, l + "output_layer_norm", ffn + sa, eps)
    return x


def head_forward(p, hidden):
    pre = f"heads.{ADAPTER_NAME}."
    return lin(p, pre + "4", torch.tanh(lin(p, pre + "1", hidden[:, 0])))


# --------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------


def make_batch(seed, pad_id, low, high):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(low, high, (B, T), generator=g, dtype=torch.int64)
    mask = torch.zeros(B, T, dtype=torch.float32)
    tt = torch.zeros(B, T, dtype=torch.int64)
    for b, L in enumerate(LENGTHS):
        mask[b, :L] = 1.0
        ids[b, L:] = pad_id
        tt[b, L // 2 : L] = 1  # first L//2 real tokens type 0, rest of the real tokens type 1
    return ids, mask, tt


def to64(d):
    return {k: (v.double() if v.is_floating_point() else v) for k, v in d.items()}


def f32(t):
    return t.detach().to(torch.float32)


def i32(t):
    return t.detach().to(torch.int32)


def assert_close(a, b, tol, what):
    err = (a - b).abs().max().item()
    assert err <= tol, f"{what}: max abs diff {err}"
    return err


def crosscheck_torch_encoder(p, prefix, conf, input_ids, token_type_ids, mask, position_ids, h_ref):
    """Independent check of the hand-written attention/layer math: the plain
    (no adapter) BERT stack equals torch.nn.TransformerEncoderLayer (post-LN,
    gelu, key padding mask) at the real positions."""
    e = prefix + "embeddings."
    eps = conf["layer_norm_eps"]
    x = (
        F.embedding(input_ids, p[e + "word_embeddings.weight"])
        + F.embedding(position_ids, p[e + "position_embeddings.weight"])
        + F.embedding(token_type_ids, p[e + "token_type_embeddings.weight"])
    )
    x = ln(p, e + "LayerNorm", x, eps)
    H = conf["hidden_size"]
    for i in range(conf["num_hidden_layers"]):
        l = f"{prefix}encoder.layer.{i}."
        layer = torch.nn.TransformerEncoderLayer(H, conf["num_attention_heads"], conf["intermediate_size"],
                                                 dropout=0.0, activation="gelu", layer_norm_eps=eps,
                                                 batch_first=True, norm_first=False).double().eval()
        with torch.no_grad():
            sa = layer.self_attn
            sa.in_proj_weight.copy_(torch.cat([p[l + f"attention.self.{n}.weight"] for n in ("query", "key", "value")]))
            sa.in_proj_bias.copy_(torch.cat([p[l + f"attention.self.{n}.bias"] for n in ("query", "key", "value")]))
            for mod, name in ((sa.out_proj, "attention.output.dense"), (layer.linear1, "intermediate.dense"),
                              (layer.linear2, "output.dense"), (layer.norm1, "attention.output.LayerNorm"),
                              (layer.norm2, "output.LayerNorm")):
                mod.weight.copy_(p[l + name + ".weight"])
                mod.bias.copy_(p[l + name + ".bias"])
        with torch.enable_grad():  # parameters require grad -> no fused fast path
            x = layer(x, src_key_padding_mask=(mask == 0)).detach()
    real = mask.bool()
    return assert_close(x[real], h_ref[real], 1e-10, "torch TransformerEncoderLayer cross-check")


# --------------------------------------------------------------------------
# tiny-bert
# --------------------------------------------------------------------------

BERT_CONFIG = {
    "architectures": ["BertModel"],
    "model_type": "bert",
    "vocab_size": 100,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 64,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "initializer_range": 0.02,
}


def adapter_params(init, conf, cfg):
    H = conf["hidden_size"]
    r = H // cfg["reduction_factor"]
    p = {}
    locations = []
    for i in range(conf["num_hidden_layers"]):
        if cfg["mh_adapter"]:
            locations.append(f"bert.encoder.layer.{i}.attention.output.adapters.{ADAPTER_NAME}")
        if cfg["output_adapter"]:
            locations.append(f"bert.encoder.layer.{i}.output.adapters.{ADAPTER_NAME}")
    for loc in locations:
        p[loc + ".adapter_down.0.weight"] = init.normal((r, H), 0.1)
        p[loc + ".adapter_down.0.bias"] = init.normal((r,), 0.05)
        p[loc + ".adapter_up.weight"] = init.normal((H, r), 0.1)
        p[loc + ".adapter_up.bias"] = init.normal((H,), 0.05)
    return p, r


def head_params(init, conf):
    H = conf["hidden_size"]
    p = {}
    pre = f"heads.{ADAPTER_NAME}."
    p[pre + "1.weight"] = init.normal((H, H), 0.1)
    p[pre + "1.bias"] = init.normal((H,), 0.05)
    p[pre + "4.weight"] = init.normal((NUM_LABELS, H), 0.1)
    p[pre + "4.bias"] = init.normal((NUM_LABELS,), 0.05)
    return p


def gen_bert(summary):
    conf = BERT_CONFIG
    d = os.path.join(ROOT, "tiny-bert")
    init = Init(1234)
    backbone = make_bert_like(init, "bert.", conf["vocab_size"], conf["hidden_size"], conf["num_hidden_layers"],
                              conf["intermediate_size"], conf["max_position_embeddings"], conf["type_vocab_size"])
    position_ids_buf = torch.arange(conf["max_position_embeddings"], dtype=torch.int64).unsqueeze(0)
    write_json(os.path.join(d, "config.json"), conf)
    write_safetensors(os.path.join(d, "model.safetensors"),
                      {**backbone, "bert.embeddings.position_ids": position_ids_buf}, {"format": "pt"})

    ids, mask, tt = make_batch(99, conf["pad_token_id"], 1, conf["vocab_size"])
    labels = torch.tensor(LABELS, dtype=torch.int64)
    pos = torch.arange(T).unsqueeze(0).expand(B, T)
    bb64 = to64(backbone)
    mask64 = mask.double()
    inputs = {"input_ids": i32(ids), "attention_mask": mask, "token_type_ids": i32(tt), "labels": i32(labels)}
    real = mask.bool()

    # --- no adapter ---
    with torch.no_grad():
        h0, pooled0 = bert_forward(bb64, "bert.", conf, ids, tt, mask64, pos)
        # padded ids / token types must not influence real positions
        ids_alt = ids.clone()
        ids_alt[~real] = 7
        tt_alt = tt.clone()
        tt_alt[~real] = 1
        h0_alt, _ = bert_forward(bb64, "bert.", conf, ids_alt, tt_alt, mask64, pos)
        assert torch.equal(h0[real], h0_alt[real]), "padding leaks into real positions"
        assert not torch.equal(h0[~real], h0_alt[~real])
        xerr = crosscheck_torch_encoder(bb64, "bert.", conf, ids, tt, mask64, pos, h0)
    write_safetensors(os.path.join(d, "reference-none.safetensors"),
                      {**inputs, "last_hidden_state": f32(h0), "pooler_output": f32(pooled0)},
                      {"config": "none", "torch_version": torch.__version__, "compute_dtype": "float64"})
    summary.append(("tiny-bert/none", f"|h|={h0.norm():.4f} vs-nn.TransformerEncoderLayer={xerr:.1e} pooled[0,:3]={pooled0[0, :3].tolist()}"))

    d_h = Init(4242).randn(B, T, conf["hidden_size"])
    for ci, (cname, cfg0) in enumerate(ADAPTER_CONFIGS.items()):
        cfg = dict(cfg0, _name=cname)
        ainit = Init(2000 + ci)
        ap, r = adapter_params(ainit, conf, cfg)
        hp = head_params(ainit, conf)
        ap64 = {k: v.double().requires_grad_(True) for k, v in ap.items()}
        hp64 = {k: v.double().requires_grad_(True) for k, v in hp.items()}
        allp = {**bb64, **ap64, **hp64}

        h, _ = bert_forward(allp, "bert.", conf, ids, tt, mask64, pos, adapter=cfg)
        logits = head_forward(allp, h)
        loss = F.cross_entropy(logits, labels)
        names = list(ap64) + list(hp64)
        grads = torch.autograd.grad(loss, [allp[n] for n in names], retain_graph=True)
        obj = (h * d_h.double()).sum()
        anames = list(ap64)
        grads_h = torch.autograd.grad(obj, [allp[n] for n in anames])

        with torch.no_grad():
            # flag-driven AdapterHub-style pipeline agrees with the explicit formulas
            h_flag, _ = bert_forward(allp, "bert.", conf, ids, tt, mask64, pos, adapter=cfg, sublayer=flagged_sublayer)
            assert_close(h, h_flag, 1e-12, f"{cname} explicit vs flagged")
            # adapter actually changes the output
            assert (h - h0).abs().max().item() > 1e-3, f"{cname}: adapter has no effect"
            # zeroing the up-projection gives back the plain backbone
            zp = dict(allp)
            for n in anames:
                if ".adapter_up." in n:
                    zp[n] = torch.zeros_like(allp[n])
            hz, _ = bert_forward(zp, "bert.", conf, ids, tt, mask64, pos, adapter=cfg)
            assert_close(hz, h0, 1e-12, f"{cname} zero-up vs none")
            # padding invariance with adapters too
            h_alt, _ = bert_forward(allp, "bert.", conf, ids_alt, tt_alt, mask64, pos, adapter=cfg)
            assert torch.equal(h[real], h_alt[real]), f"{cname}: padding leaks"
        for n, g in zip(names, grads):
            assert g.abs().max().item() > 0, f"zero grad for {n}"
        for n, g in zip(anames, grads_h):
            assert g.abs().max().item() > 0, f"zero grad_h for {n}"

        out = dict(inputs)
        out.update({k: v for k, v in ap.items()})
        out.update({k: v for k, v in hp.items()})
        out["last_hidden_state"] = f32(h)
        out["logits"] = f32(logits)
        out["loss"] = f32(loss).reshape(1)
        for n, g in zip(names, grads):
            out["grad." + n] = f32(g)
        out["d_last_hidden_state"] = d_h
        for n, g in zip(anames, grads_h):
            out["grad_h." + n] = f32(g)
        meta = {
            "config": cname,
            "adapter_name": ADAPTER_NAME,
            "reduction_factor": cfg["reduction_factor"],
            "bottleneck_size": r,
            "non_linearity": cfg["non_linearity"],
            "scaling": cfg["scaling"],
            "mh_adapter": str(cfg["mh_adapter"]).lower(),
            "output_adapter": str(cfg["output_adapter"]).lower(),
            "num_labels": NUM_LABELS,
            "torch_version": torch.__version__,
            "compute_dtype": "float64",
        }
        write_safetensors(os.path.join(d, f"reference-{cname}.safetensors"), out, meta)
        summary.append((f"tiny-bert/{cname}", f"r={r} loss={loss.item():.6f} logits[0]={[round(v, 5) for v in logits[0].tolist()]}"))


# --------------------------------------------------------------------------
# tiny-roberta
# --------------------------------------------------------------------------

ROBERTA_CONFIG = {
    "architectures": ["RobertaModel"],
    "model_type": "roberta",
    "vocab_size": 100,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 66,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "initializer_range": 0.02,
}


def gen_roberta(summary):
    conf = ROBERTA_CONFIG
    d = os.path.join(ROOT, "tiny-roberta")
    init = Init(5678)
    backbone = make_bert_like(init, "roberta.", conf["vocab_size"], conf["hidden_size"], conf["num_hidden_layers"],
                              conf["intermediate_size"], conf["max_position_embeddings"], conf["type_vocab_size"])
    position_ids_buf = torch.arange(conf["max_position_embeddings"], dtype=torch.int64).unsqueeze(0)
    write_json(os.path.join(d, "config.json"), conf)
    write_safetensors(os.path.join(d, "model.safetensors"),
                      {**backbone, "roberta.embeddings.position_ids": position_ids_buf}, {"format": "pt"})

    pad = conf["pad_token_id"]
    ids, mask, _ = make_batch(77, pad, 2, conf["vocab_size"])  # real ids in [2, 100): never the pad id 1
    tt = torch.zeros(B, T, dtype=torch.int64)
    not_pad = (ids != pad).long()
    pos = torch.cumsum(not_pad, dim=1) * not_pad + pad
    assert torch.equal(not_pad.float(), mask)
    bb64 = to64(backbone)
    with torch.no_grad():
        h, pooled = bert_forward(bb64, "roberta.", conf, ids, tt, mask.double(), pos)
        real = mask.bool()
        ids_alt = ids.clone()
        ids_alt[~real] = 7  # same mask and position ids, different padded tokens
        h_alt, _ = bert_forward(bb64, "roberta.", conf, ids_alt, tt, mask.double(), pos)
        assert torch.equal(h[real], h_alt[real]), "roberta: padding leaks"
        assert not torch.equal(h[~real], h_alt[~real])
    write_safetensors(os.path.join(d, "reference-none.safetensors"),
                      {"input_ids": i32(ids), "attention_mask": mask, "token_type_ids": i32(tt),
                       "position_ids": i32(pos), "last_hidden_state": f32(h), "pooler_output": f32(pooled)},
                      {"config": "none", "torch_version": torch.__version__, "compute_dtype": "float64",
                       "position_ids": "cumsum(input_ids != pad) * (input_ids != pad) + pad_token_id"})
    summary.append(("tiny-roberta/none", f"|h|={h.norm():.4f} positions[2]={pos[2].tolist()}"))


# --------------------------------------------------------------------------
# tiny-distilbert
# --------------------------------------------------------------------------

DISTILBERT_CONFIG = {
    "architectures": ["DistilBertModel"],
    "model_type": "distilbert",
    "vocab_size": 100,
    "dim": 64,
    "n_layers": 2,
    "n_heads": 4,
    "hidden_dim": 128,
    "activation": "gelu",
    "max_position_embeddings": 64,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "pad_token_id": 0,
    "sinusoidal_pos_embds": False,
}


def gen_distilbert(summary):
    conf = DISTILBERT_CONFIG
    d = os.path.join(ROOT, "tiny-distilbert")
    init = Init(9012)
    backbone = make_distilbert(init, conf["vocab_size"], conf["dim"], conf["n_layers"], conf["hidden_dim"],
                               conf["max_position_embeddings"])
    position_ids_buf = torch.arange(conf["max_position_embeddings"], dtype=torch.int64).unsqueeze(0)
    write_json(os.path.join(d, "config.json"), conf)
    write_safetensors(os.path.join(d, "model.safetensors"),
                      {**backbone, "distilbert.embeddings.position_ids": position_ids_buf}, {"format": "pt"})

    ids, mask, _ = make_batch(55, conf["pad_token_id"], 1, conf["vocab_size"])
    bb64 = to64(backbone)
    with torch.no_grad():
        h = distilbert_forward(bb64, conf, ids, mask.double())
        real = mask.bool()
        ids_alt = ids.clone()
        ids_alt[~real] = 7
        h_alt = distilbert_forward(bb64, conf, ids_alt, mask.double())
        assert torch.equal(h[real], h_alt[real]), "distilbert: padding leaks"
    write_safetensors(os.path.join(d, "reference-none.safetensors"),
                      {"input_ids": i32(ids), "attention_mask": mask, "last_hidden_state": f32(h)},
                      {"config": "none", "torch_version": torch.__version__, "compute_dtype": "float64"})
    summary.append(("tiny-distilbert/none", f"|h|={h.norm():.4f}"))


# --------------------------------------------------------------------------


def verify_files():
    """Re-read every written file; check round-trip and sizes."""
    rows = []
    for sub in ("tiny-bert", "tiny-roberta", "tiny-distilbert"):
        d = os.path.join(ROOT, sub)
        for fn in sorted(os.listdir(d)):
            path = os.path.join(d, fn)
            size = os.path.getsize(path)
            if fn.endswith(".safetensors"):
                tensors, meta = read_safetensors(path)
                for k, v in tensors.items():
                    if v.is_floating_point():
                        assert torch.isfinite(v).all(), f"{path}:{k} not finite"
                rows.append((path, size, f"{len(tensors)} tensors"))
            else:
                with open(path) as fh:
                    json.load(fh)
                rows.append((path, size, "json"))
    return rows


def main():
    torch.set_grad_enabled(True)
    summary = []
    gen_bert(summary)
    gen_roberta(summary)
    gen_distilbert(summary)

    # spot-check round trip of one reference file against the computation
    t, meta = read_safetensors(os.path.join(ROOT, "tiny-bert", "reference-par_bn.safetensors"))
    assert meta["config"] == "par_bn" and meta["bottleneck_size"] == "32"
    assert t["input_ids"].dtype == torch.int32 and list(t["last_hidden_state"].shape) == [B, T, 64]

    print("torch", torch.__version__)
    for name, line in summary:
        print(f"  {name:24s} {line}")
    for path, size, what in verify_files():
        print(f"  {path:58s} {size:8d} B  {what}")
    print("all checks passed")


if __name__ == "__main__":
    main()
