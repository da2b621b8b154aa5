"""AdapterHub's side of the composition parity suite (test/reference/composition.test.ts): Stack,
Parallel, BatchSplit, Average and Fuse (AdapterFusion) on the real pre-trained MiniLM.

  python composition_reference.py make --model DIR --out DIR --seed N
      Draws a fresh padded batch (inputs.json) and adapters a, b, c (seq_bn variants) and d
      (double_seq_bn) with random weights, fusions Fuse(a, b, c) ('dynamic') and Fuse(b, c) ('static'
      with temperature, residual_before and query_before_ln), all perturbed away from their
      initialisation. For every case it activates the setup, trains what AdapterHub's train_adapter /
      train_adapter_fusion trains, runs one forward (eval mode: no dropout) and the backward of
      loss = Σ last_hidden ⊙ R (R random, saved), and writes <case>.safetensors: last_hidden, R and
      grad.<parameter name>. The adapters and fusions are saved under saved/ (use_safetensors=True).
  python composition_reference.py make-llama --out DIR --seed N
      The same on a tiny random LLaMA (transformers' LlamaForCausalLM, saved to DIR/model): adapters a, b,
      c, the two fusions, and the setups that decoders take (no Parallel), each with a forward with labels
      (the causal LM loss) and its backward: <case>.safetensors holds logits, loss and grad.<name>.
  python composition_reference.py check --model DIR --adapters DIR... --fusion DIR --setup S --inputs F --out F
      Loads adapters and a fusion this package saved, activates the setup, writes last_hidden.

Everything is float32 on the CPU.
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file

import adapters
from adapters import DoubleSeqBnConfig, SeqBnConfig, StaticAdapterFusionConfig
from adapters.composition import Average, BatchSplit, Fuse, Parallel, Stack
from transformers import AutoModelForCausalLM, BertModel, LlamaConfig

ADAPTERS = {
    "a": lambda: SeqBnConfig(),
    "b": lambda: SeqBnConfig(reduction_factor=8, non_linearity="gelu"),
    "c": lambda: SeqBnConfig(reduction_factor=32, non_linearity="relu"),
    "d": lambda: DoubleSeqBnConfig(reduction_factor=12),
}
FUSIONS = {
    "a,b,c": "dynamic",
    "b,c": lambda: StaticAdapterFusionConfig(temperature=True, residual_before=True, query_before_ln=True),
}
# name -> (setup, what trains: "adapters" or "fusion")
CASES = {
    "stack": (lambda: Stack("a", "d"), "adapters"),
    "stack3": (lambda: Stack("a", "b", "c"), "adapters"),
    "parallel": (lambda: Parallel("a", "b"), "adapters"),
    "batch_split": (lambda: BatchSplit("b", "c", batch_sizes=[1, 3]), "adapters"),
    "average": (lambda: Average("a", "b", "c", weights=[0.2, 0.3, 0.5]), "adapters"),
    "fuse": (lambda: Fuse("a", "b", "c"), "fusion"),
    "fuse_static": (lambda: Fuse("b", "c"), "fusion"),
    "stack_fuse": (lambda: Stack("a", Fuse("b", "c")), "fusion"),
}


def fresh_inputs(seed, vocab):
    g = torch.Generator().manual_seed(seed)
    B = 4
    lengths = torch.randint(3, 14, (B,), generator=g).tolist()
    lengths[0] = max(lengths)
    T = max(lengths)
    ids = torch.randint(1000, vocab, (B, T), generator=g)
    ids[:, 0] = 101
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        ids[b, n - 1] = 102
        ids[b, n:] = 0
    return {"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "token_type_ids": torch.zeros(B, T, dtype=torch.long).tolist()}


def tensors(inputs):
    return {k: torch.tensor(inputs[k]) for k in ("input_ids", "attention_mask", "token_type_ids")}


def perturb(model, g):
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if ".adapters." in pname:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif ".adapter_fusion_layer." in pname:
                # near where training starts and stays (value near the identity, small query/key): scores
                # of a few units, so the softmax is not a near-tie that fp32 rounding decides
                if pname.endswith("value.weight"):
                    p.copy_(torch.eye(p.shape[0]) + 0.02 * torch.randn(p.shape, generator=g))
                else:  # the spread of BertFusion's own initialisation (std 0.02)
                    p.copy_(0.02 * torch.randn(p.shape, generator=g))


def build(model_dir, seed):
    model = BertModel.from_pretrained(model_dir, add_pooling_layer=False)
    adapters.init(model)
    for name, cfg in ADAPTERS.items():
        model.add_adapter(name, config=cfg())
    for names, cfg in FUSIONS.items():
        model.add_adapter_fusion(Fuse(*names.split(",")), config=cfg if isinstance(cfg, str) else cfg())
    perturb(model, torch.Generator().manual_seed(seed + 1))
    return model


def run_case(model, case, setup, trains, forward, out_dir):
    """Activates and trains `setup` as AdapterHub does, runs forward (which returns the tensors to keep and
    calls backward) in eval mode, and writes <case>.safetensors with the gradients of what trains."""
    if trains == "fusion":
        model.train_adapter_fusion(setup)
    else:
        model.train_adapter(setup)
    model.set_active_adapters(setup)
    model.eval()  # no dropout; gradients still flow
    model.zero_grad()
    result = forward(model)
    trainable = []
    for pname, p in model.named_parameters():
        if p.requires_grad:
            if p.grad is None:
                raise SystemExit(f"{case}: {pname} got no gradient")
            result["grad." + pname] = p.grad.detach().contiguous().clone()
            trainable.append(pname)
    save_file(result, os.path.join(out_dir, case + ".safetensors"))
    return {"setup": str(setup), "trains": trains, "trainable": trainable}


def make(args):
    torch.manual_seed(args.seed)
    model = build(args.model, args.seed)
    inputs = fresh_inputs(args.seed, model.config.vocab_size)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "inputs.json"), "w") as f:
        json.dump(inputs, f)
    saved = os.path.join(args.out, "saved")
    os.makedirs(saved, exist_ok=True)
    for name in ADAPTERS:
        model.save_adapter(os.path.join(saved, name), name, use_safetensors=True)
    for names in FUSIONS:
        model.save_adapter_fusion(os.path.join(saved, "fusion_" + names.replace(",", "_")), names, use_safetensors=True)
    g = torch.Generator().manual_seed(args.seed + 2)
    manifest = {}
    for case, (setup_of, trains) in CASES.items():
        def forward(m):
            last = m(**tensors(inputs)).last_hidden_state
            R = torch.randn(last.shape, generator=g)
            (last * R).sum().backward()
            return {"last_hidden": last.detach().contiguous(), "R": R.contiguous()}
        manifest[case] = run_case(model, case, setup_of(), trains, forward, args.out)
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump({"cases": manifest, "versions": {"adapters": adapters.__version__, "torch": torch.__version__}}, f, indent=1)


LLAMA_CASES = ["stack3", "batch_split_llama", "average", "fuse", "fuse_static", "stack_fuse"]
LLAMA_ONLY = {"batch_split_llama": (lambda: BatchSplit("b", "c", batch_sizes=[1, 1]), "adapters")}  # a batch of 2


def make_llama(args):
    torch.manual_seed(args.seed)
    cfg = LlamaConfig(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0,
                      tie_word_embeddings=False, attn_implementation="eager")
    base = AutoModelForCausalLM.from_config(cfg).float()
    g = torch.Generator().manual_seed(args.seed + 3)
    with torch.no_grad():
        for p in base.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g) + (1.0 if p.dim() == 1 else 0.0))
    model_dir = os.path.join(args.out, "model")
    base.save_pretrained(model_dir, safe_serialization=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").float()
    adapters.init(model)
    for name in ("a", "b", "c"):
        model.add_adapter(name, config=ADAPTERS[name]())
    for names, c in FUSIONS.items():
        model.add_adapter_fusion(Fuse(*names.split(",")), config=c if isinstance(c, str) else c())
    perturb(model, torch.Generator().manual_seed(args.seed + 1))
    ids = torch.randint(0, 101, (2, 7), generator=g)
    labels = ids.clone()
    labels[:, :2] = -100
    with open(os.path.join(args.out, "inputs.json"), "w") as f:
        json.dump({"input_ids": ids.tolist(), "labels": labels.tolist()}, f)
    saved = os.path.join(args.out, "saved")
    os.makedirs(saved, exist_ok=True)
    for name in ("a", "b", "c"):
        model.save_adapter(os.path.join(saved, name), name, use_safetensors=True)
    for names in FUSIONS:
        model.save_adapter_fusion(os.path.join(saved, "fusion_" + names.replace(",", "_")), names, use_safetensors=True)
    manifest = {}
    for case in LLAMA_CASES:
        setup_of, trains = {**CASES, **LLAMA_ONLY}[case]
        def forward(m):
            out = m(input_ids=ids, labels=labels)
            out.loss.backward()
            return {"logits": out.logits.detach().contiguous(), "loss": out.loss.detach().reshape(1)}
        manifest[case] = run_case(model, case, setup_of(), trains, forward, args.out)
    # Parallel: one output per channel, no labels (the logits of 2·B rows)
    def forward_parallel(m):
        logits = m(input_ids=ids).logits
        logits.sum().backward()
        return {"logits": logits.detach().contiguous()}
    manifest["parallel_llama"] = run_case(model, "parallel_llama", Parallel("a", "b"), "adapters", forward_parallel, args.out)
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump({"cases": manifest}, f, indent=1)


def check(args):
    with open(args.inputs) as f:
        inputs = json.load(f)
    model = BertModel.from_pretrained(args.model, add_pooling_layer=False)
    adapters.init(model)
    for d in args.adapters:
        model.load_adapter(d, use_safetensors=True)
    name = model.load_adapter_fusion(args.fusion, use_safetensors=True)
    model.set_active_adapters(Fuse(*name.split(",")))
    model.eval()
    with torch.no_grad():
        out = model(**tensors(inputs))
    save_file({"last_hidden": out.last_hidden_state.contiguous()}, args.out)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--model", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, required=True)
    ml = sub.add_parser("make-llama")
    ml.add_argument("--out", required=True)
    ml.add_argument("--seed", type=int, required=True)
    c = sub.add_parser("check")
    c.add_argument("--model", required=True)
    c.add_argument("--inputs", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--adapters", nargs="+", required=True)
    c.add_argument("--fusion", required=True)
    args = p.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    {"make": make, "make-llama": make_llama, "check": check}[args.cmd](args)


if __name__ == "__main__":
    main()
