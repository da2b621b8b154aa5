#!/usr/bin/env python3
"""PyTorch reference timings for the backbone benchmark (driven by scripts/bench_backbone.ts).

The same frozen BERT encoder as the package's Backbone, written as plain nn.Modules
(no `transformers`), with an AdapterHub seq_bn bottleneck adapter after each layer's
feed-forward and AdapterHub's 2-layer classification head on the first token:

    attention:     a   = LN_attn(dropout(dense(attn(x))) + x)
    feed-forward:  h   = dropout(out(gelu(inter(a))))
    seq_bn:        out = LN_out(s * f(LN_out(h + a)) + h + a),  f(y) = up(relu(down(y)))
    head:          logits = out_proj(dropout(tanh(dense(dropout(last[:, 0])))))
    loss:          mean cross-entropy (in fp32)

Only the adapters and the head require grad. On CUDA the whole model is cast to the
benchmark dtype (bf16; no autocast), on the CPU it stays fp32. The weights are read from
the checkpoint the TypeScript side generated (model.safetensors: the backbone;
trainable.safetensors: its adapter and head, as initialised by the package), so an
eval-mode forward on the same batch can be compared with the package's.

Spec (JSON on stdin, or the first argument):

    {"device": "cpu" | "cuda:0", "dtype": "float32" | "bfloat16", "threads": 2,
     "config": {...config.json...}, "adapterName": "bench", "scaling": 1.0,
     "weights": ".../model.safetensors", "trainable": ".../trainable.safetensors",
     "batch": {"B": 32, "T": 128, "inputIds": [...], "attentionMask": [...], "labels": [...]},
     "training": true, "rows": [{"checkpointing": false}, {"checkpointing": true}],
     "warmup": 5, "runs": 30, "minRuns": 30, "budgetMs": 0, "seed": 0}

Output (stdout, one JSON object; progress on stderr):

    {"version", "device", "deviceName", "threads", "dtype",
     "check": {"loss", "logits": [B*labels], "cls": [B*H]} | {"error"},
     "rows": [{"checkpointing", "ms", "runs", "tokensPerSec",
               "peakReservedBytes"?, "peakAllocatedBytes"?, "error"?}]}

Timing is bench_torch.py's: CUDA events around each step on CUDA, perf_counter on the
CPU, median after a warm-up. A step is: move the batch to the device, forward, loss,
backward; the untimed preparation zeroes the gradients (set to None).
"""
import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch import DTYPES, Timer, error_text, log, measure  # noqa: E402

# ---------------------------------------------------------------- safetensors (read only)

_ST_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def read_safetensors(path):
    """{name: tensor} of a safetensors file: u64 LE header size, JSON header, raw LE data."""
    with open(path, "rb") as fh:
        raw = bytearray(fh.read())
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    header.pop("__metadata__", None)
    base = 8 + n
    out = {}
    for name, info in header.items():
        dtype = _ST_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError("%s: tensor %s has dtype %s (expected F32, BF16 or F16)" % (path, name, info["dtype"]))
        start, end = info["data_offsets"]
        count = (end - start) // torch.tensor([], dtype=dtype).element_size()
        t = torch.frombuffer(raw, dtype=dtype, count=count, offset=base + start) if count else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info["shape"]).clone()
    return out


# ---------------------------------------------------------------- the model

class Adapter(nn.Module):
    """AdapterHub bottleneck: f(y) = adapter_up(relu(adapter_down.0(y)))."""

    def __init__(self, hidden, bottleneck):
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.up = nn.Linear(bottleneck, hidden)

    def forward(self, y):
        return self.up(F.relu(self.down(y)))


class Layer(nn.Module):
    """A post-LN BERT layer with a seq_bn adapter after the feed-forward."""

    def __init__(self, c, bottleneck, scaling):
        super().__init__()
        H, I = c["hidden_size"], c["intermediate_size"]
        eps = c.get("layer_norm_eps", 1e-12)
        self.heads = c["num_attention_heads"]
        self.q, self.k, self.v = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)
        self.attn_out = nn.Linear(H, H)
        self.attn_ln = nn.LayerNorm(H, eps=eps)
        self.inter = nn.Linear(H, I)
        self.out = nn.Linear(I, H)
        self.out_ln = nn.LayerNorm(H, eps=eps)
        self.adapter = Adapter(H, bottleneck)
        self.scaling = scaling
        self.drop_probs = nn.Dropout(c.get("attention_probs_dropout_prob", 0.1))
        self.drop = nn.Dropout(c.get("hidden_dropout_prob", 0.1))

    def forward(self, x, mask_add):
        B, T, H = x.shape
        dh = H // self.heads

        def split(t):
            return t.view(B, T, self.heads, dh).transpose(1, 2)  # [B, nh, T, dh]

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(dh)) + mask_add
        probs = self.drop_probs(torch.softmax(scores, dim=-1))
        ctx = torch.matmul(probs, v).transpose(1, 2).reshape(B, T, H)
        a = self.attn_ln(self.drop(self.attn_out(ctx)) + x)
        h = self.drop(self.out(F.gelu(self.inter(a))))
        return self.out_ln(self.scaling * self.adapter(self.out_ln(h + a)) + h + a)


class Encoder(nn.Module):
    def __init__(self, c, bottleneck, scaling, num_labels):
        super().__init__()
        H = c["hidden_size"]
        self.word = nn.Embedding(c["vocab_size"], H)
        self.position = nn.Embedding(c.get("max_position_embeddings", 512), H)
        self.token_type = nn.Embedding(c.get("type_vocab_size", 2), H)
        self.emb_ln = nn.LayerNorm(H, eps=c.get("layer_norm_eps", 1e-12))
        self.drop = nn.Dropout(c.get("hidden_dropout_prob", 0.1))
        self.layers = nn.ModuleList(Layer(c, bottleneck, scaling) for _ in range(c["num_hidden_layers"]))
        self.head_dense = nn.Linear(H, H)
        self.head_out = nn.Linear(H, num_labels)

    def forward(self, ids, token_types, mask, checkpointing=False):
        T = ids.shape[1]
        pos = torch.arange(T, device=ids.device).unsqueeze(0)
        x = self.emb_ln(self.word(ids) + self.position(pos) + self.token_type(token_types))
        x = self.drop(x)
        # masked keys get the dtype's lowest value (as Hugging Face BERT): softmax gives them 0
        mask_add = (1.0 - mask.to(x.dtype))[:, None, None, :] * torch.finfo(x.dtype).min
        for layer in self.layers:
            if checkpointing and self.training:
                # non-reentrant: the first layer's input does not require grad, yet its adapter does
                x = torch.utils.checkpoint.checkpoint(layer, x, mask_add, use_reentrant=False)
            else:
                x = layer(x, mask_add)
        cls = x[:, 0]
        logits = self.head_out(self.drop(torch.tanh(self.head_dense(self.drop(cls)))))
        return logits, x


def load_weights(model, c, backbone, trainable, adapter_name):
    """Copies the checkpoint's tensors in by their Hugging Face / AdapterHub names."""
    p = "bert."
    pairs = [
        (model.word.weight, p + "embeddings.word_embeddings.weight"),
        (model.position.weight, p + "embeddings.position_embeddings.weight"),
        (model.token_type.weight, p + "embeddings.token_type_embeddings.weight"),
        (model.emb_ln.weight, p + "embeddings.LayerNorm.weight"),
        (model.emb_ln.bias, p + "embeddings.LayerNorm.bias"),
    ]
    for i, layer in enumerate(model.layers):
        l = "%sencoder.layer.%d." % (p, i)
        mods = [(layer.q, "attention.self.query"), (layer.k, "attention.self.key"), (layer.v, "attention.self.value"),
                (layer.attn_out, "attention.output.dense"), (layer.attn_ln, "attention.output.LayerNorm"),
                (layer.inter, "intermediate.dense"), (layer.out, "output.dense"), (layer.out_ln, "output.LayerNorm")]
        for mod, name in mods:
            pairs += [(mod.weight, l + name + ".weight"), (mod.bias, l + name + ".bias")]
        a = l + "output.adapters.%s." % adapter_name
        pairs += [(layer.adapter.down.weight, a + "adapter_down.0.weight"), (layer.adapter.down.bias, a + "adapter_down.0.bias"),
                  (layer.adapter.up.weight, a + "adapter_up.weight"), (layer.adapter.up.bias, a + "adapter_up.bias")]
    h = "heads.%s." % adapter_name
    pairs += [(model.head_dense.weight, h + "1.weight"), (model.head_dense.bias, h + "1.bias"),
              (model.head_out.weight, h + "4.weight"), (model.head_out.bias, h + "4.bias")]
    tensors = dict(backbone)
    tensors.update(trainable)
    missing = [name for _, name in pairs if name not in tensors]
    if missing:
        raise KeyError("checkpoint lacks %d tensor(s), e.g. %s" % (len(missing), ", ".join(missing[:3])))
    with torch.no_grad():
        for param, name in pairs:
            src = tensors[name]
            if tuple(src.shape) != tuple(param.shape):
                raise ValueError("%s: shape %s, the model needs %s" % (name, list(src.shape), list(param.shape)))
            param.copy_(src.to(param.dtype))


def build(spec, device, dtype):
    c = spec["config"]
    trainable = read_safetensors(spec["trainable"])
    down = "bert.encoder.layer.0.output.adapters.%s.adapter_down.0.weight" % spec["adapterName"]
    if down not in trainable:
        raise KeyError("%s has no %s" % (spec["trainable"], down))
    bottleneck = trainable[down].shape[0]
    num_labels = trainable["heads.%s.4.weight" % spec["adapterName"]].shape[0]
    model = Encoder(c, bottleneck, spec.get("scaling", 1.0), num_labels)
    load_weights(model, c, read_safetensors(spec["weights"]), trainable, spec["adapterName"])
    model = model.to(device=device, dtype=dtype)
    # frozen backbone: only the adapters and the head train
    for name, param in model.named_parameters():
        param.requires_grad_(".adapter." in name or name.startswith("head_"))
    return model


# ---------------------------------------------------------------- run

def batch_tensors(spec):
    b = spec["batch"]
    shape = (b["B"], b["T"])
    ids = torch.tensor(b["inputIds"], dtype=torch.int64).reshape(shape)
    mask = torch.tensor(b["attentionMask"], dtype=torch.float32).reshape(shape)
    types = torch.zeros(shape, dtype=torch.int64)
    labels = torch.tensor(b["labels"], dtype=torch.int64)
    return ids, types, mask, labels


def eval_check(model, device, batch):
    """Eval-mode forward (no dropout) on the batch: loss, logits and the first tokens' hidden states."""
    ids, types, mask, labels = (t.to(device) for t in batch)
    model.eval()
    try:
        with torch.no_grad():
            logits, last = model(ids, types, mask)
            loss = F.cross_entropy(logits.float(), labels)
        return {"loss": loss.item(), "logits": logits.float().flatten().tolist(),
                "cls": last[:, 0].float().flatten().tolist()}
    finally:
        model.train()


def time_row(model, device, batch, spec, timer, checkpointing):
    cuda = device.type == "cuda"
    ids_h, types_h, mask_h, labels_h = batch
    model.train(spec.get("training", True))

    def step(_):
        ids, types, mask, labels = ids_h.to(device), types_h.to(device), mask_h.to(device), labels_h.to(device)
        logits, _ = model(ids, types, mask, checkpointing=checkpointing)
        F.cross_entropy(logits.float(), labels).backward()

    def prepare():
        model.zero_grad(set_to_none=True)

    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    ms, runs = measure(timer, step, spec, prepare=prepare)
    tokens = spec["batch"]["B"] * spec["batch"]["T"]
    row = {"checkpointing": checkpointing, "ms": ms, "runs": runs, "tokensPerSec": tokens / (ms / 1e3)}
    if cuda:
        row["peakReservedBytes"] = torch.cuda.max_memory_reserved(device)
        row["peakAllocatedBytes"] = torch.cuda.max_memory_allocated(device)
    return row


def main():
    spec = json.loads(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read())
    spec = dict({"warmup": 5, "runs": 30, "minRuns": 30, "budgetMs": 0, "threads": 0, "seed": 0,
                 "training": True, "rows": [{"checkpointing": False}]}, **spec)
    device = torch.device(spec["device"])
    if device.type == "cpu" and spec["threads"] > 0:
        torch.set_num_threads(spec["threads"])  # the same thread count as the native library
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(spec["seed"])  # dropout masks
    dtype = DTYPES[spec["dtype"]]
    timer = Timer(device)

    log("torch: building the model (%s, %s)" % (device, spec["dtype"]))
    model = build(spec, device, dtype)
    batch = batch_tensors(spec)
    try:
        check = eval_check(model, device, batch)
    except Exception as e:  # the timings can still be useful
        check = {"error": error_text(e)}
        log("torch: eval check failed: %s" % check["error"])

    rows = []
    compiled = None
    for r in spec["rows"]:
        ckpt = bool(r.get("checkpointing", False))
        comp = bool(r.get("compile", False))
        log("torch: forward+backward, checkpointing=%s%s" % (ckpt, ", torch.compile" if comp else ""))
        try:
            if comp and compiled is None:
                compiled = torch.compile(model)  # compiled on its first (warm-up) step
            row = time_row(compiled if comp else model, device, batch, spec, timer, ckpt)
            row["compile"] = comp
            rows.append(row)
        except Exception as e:  # one failing row must not stop the other
            rows.append({"checkpointing": ckpt, "compile": comp, "ms": None, "runs": 0, "tokensPerSec": None, "error": error_text(e)})
            log("torch: checkpointing=%s: %s" % (ckpt, rows[-1]["error"]))
        if device.type == "cuda":
            torch.cuda.empty_cache()

    print(json.dumps({
        "version": torch.__version__,
        "device": str(device),
        "deviceName": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "dtype": spec["dtype"],
        "check": check,
        "rows": rows,
    }))


if __name__ == "__main__":
    main()
