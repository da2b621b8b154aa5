"""The real peers' side of the parity suite (test/reference/): transformers' BertModel and
AdapterHub's `adapters` on a real pre-trained checkpoint, driven by the Node tests.

  python adapterhub_reference.py make  --model DIR --out DIR --seed N
      Draws a fresh padded batch (inputs.json), runs BertModel (base.safetensors: last hidden
      state, pooled output), then for every case in CASES adds the adapter and a classification
      head with AdapterHub, perturbs every adapter and head tensor (so nothing is zero or the
      identity), runs one forward with labels and one backward, and writes
        <case>/saved/             save_adapter(..., with_head=True, use_safetensors=True)
        <case>/reference.safetensors  last_hidden, logits, loss, grad.<parameter name>
  python adapterhub_reference.py check --model DIR --dirs DIR... --inputs inputs.json --out DIR
      Loads each directory (written by this package) with load_adapter / load_head, runs the
      forward on the inputs and writes <out>/<basename>.safetensors (last_hidden, logits).

Everything is float32 on the CPU in eval mode (no dropout), the same as the Node side.
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file

import adapters
from adapters import AutoAdapterModel, DoubleSeqBnConfig, ParBnConfig, SeqBnConfig
from transformers import BertModel

# name -> AdapterHub config. Covers the three placements, leave_out, per-layer and non-default
# reduction factors, every non_linearity family, and both kinds of learned scaling.
CASES = {
    "seq_bn": lambda: SeqBnConfig(),
    "double_seq_bn": lambda: DoubleSeqBnConfig(),
    "par_bn": lambda: ParBnConfig(),
    "seq_bn_gelu_leave_out": lambda: SeqBnConfig(reduction_factor=8, non_linearity="gelu", leave_out=[0, 3]),
    "double_seq_bn_relu_per_layer": lambda: DoubleSeqBnConfig(
        reduction_factor={"1": 4, "default": 12}, non_linearity="relu", leave_out=[5]),
    "par_bn_learned_gelu_new": lambda: ParBnConfig(scaling="learned", non_linearity="gelu_new", reduction_factor=6),
    "seq_bn_channel_swish": lambda: SeqBnConfig(scaling="channel", non_linearity="swish", reduction_factor=32),
}
NUM_LABELS = 3


def fresh_inputs(seed, vocab):
    g = torch.Generator().manual_seed(seed)
    B = 4
    lengths = torch.randint(3, 14, (B,), generator=g).tolist()
    lengths[0] = max(lengths)  # at least one full row; the others are padded
    T = max(lengths)
    ids = torch.randint(1000, vocab, (B, T), generator=g)
    ids[:, 0] = 101  # [CLS]
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        ids[b, n - 1] = 102  # [SEP]
        ids[b, n:] = 0  # [PAD]
    types = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate(lengths):
        types[b, n // 2:n] = 1
    labels = torch.randint(0, NUM_LABELS, (B,), generator=g)
    return {"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "token_type_ids": types.tolist(),
            "labels": labels.tolist()}


def tensors(inputs):
    return {k: torch.tensor(inputs[k]) for k in ("input_ids", "attention_mask", "token_type_ids")}


def perturb(model, name, g):
    """Every adapter and head tensor of `name` becomes random (scaling near 1, positive)."""
    touched = []
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if f"adapters.{name}." in pname or pname.startswith(f"heads.{name}."):
                if pname.endswith(".scaling"):
                    p.copy_(1.0 + 0.3 * torch.rand(p.shape, generator=g))
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
                touched.append(pname)
    if not touched:
        raise SystemExit(f"no tensors found for adapter {name}")
    return touched


def make(args):
    torch.manual_seed(args.seed)
    base = BertModel.from_pretrained(args.model, add_pooling_layer=True).eval()
    inputs = fresh_inputs(args.seed, base.config.vocab_size)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "inputs.json"), "w") as f:
        json.dump(inputs, f)
    with torch.no_grad():
        o = base(**tensors(inputs))
    save_file({"last_hidden": o.last_hidden_state.contiguous(), "pooled": o.pooler_output.contiguous()},
              os.path.join(args.out, "base.safetensors"))

    g = torch.Generator().manual_seed(args.seed + 1)
    manifest = {}
    for case, make_config in CASES.items():
        model = AutoAdapterModel.from_pretrained(args.model)
        model.add_adapter(case, config=make_config())
        model.add_classification_head(case, num_labels=NUM_LABELS)
        model.train_adapter(case)
        model.set_active_adapters(case)
        model.eval()  # no dropout; gradients still flow
        perturb(model, case, g)
        model.zero_grad()
        out = model(**tensors(inputs), labels=torch.tensor(inputs["labels"]), output_hidden_states=True)
        out.loss.backward()
        result = {"last_hidden": out.hidden_states[-1].detach().contiguous(), "logits": out.logits.detach().contiguous(),
                  "loss": out.loss.detach().reshape(1)}
        trainable = []
        for pname, p in model.named_parameters():
            if p.requires_grad:
                if p.grad is None:
                    raise SystemExit(f"{case}: {pname} got no gradient")
                result["grad." + pname] = p.grad.detach().contiguous().clone()
                trainable.append(pname)
        d = os.path.join(args.out, case)
        os.makedirs(d, exist_ok=True)
        save_file(result, os.path.join(d, "reference.safetensors"))
        model.save_adapter(os.path.join(d, "saved"), case, with_head=True, use_safetensors=True)
        manifest[case] = {"config": model.adapters_config.get(case).to_dict(), "trainable": trainable}
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump({"cases": manifest, "versions": versions()}, f, indent=1)


def check(args):
    with open(args.inputs) as f:
        inputs = json.load(f)
    os.makedirs(args.out, exist_ok=True)
    for d in args.dirs:
        model = AutoAdapterModel.from_pretrained(args.model)
        name = model.load_adapter(d, with_head=True, use_safetensors=True)
        model.set_active_adapters(name)
        model.eval()
        with torch.no_grad():
            out = model(**tensors(inputs), output_hidden_states=True)
        save_file({"last_hidden": out.hidden_states[-1].contiguous(), "logits": out.logits.contiguous()},
                  os.path.join(args.out, os.path.basename(os.path.normpath(d)) + ".safetensors"))


def versions():
    import transformers
    return {"torch": torch.__version__, "transformers": transformers.__version__, "adapters": adapters.__version__,
            "python": sys.version.split()[0]}


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--model", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, required=True)
    c = sub.add_parser("check")
    c.add_argument("--model", required=True)
    c.add_argument("--inputs", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--dirs", nargs="+", required=True)
    sub.add_parser("versions")
    args = p.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.cmd == "make":
        make(args)
    elif args.cmd == "check":
        check(args)
    else:
        print(json.dumps(versions()))


if __name__ == "__main__":
    main()
