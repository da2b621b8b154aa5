"""The real peers' side of the decoder parity suite (test/reference/decoder.test.ts): tiny random
decoders built with transformers' own classes, saved as Hugging Face saves them, and their logits
and masked-label loss on a padded batch.

  python decoder_reference.py --out DIR --seed N
  python decoder_reference.py --check JOBS.json
      For each job {adapter, model, inputs, result}: loads an adapter this package saved into the
      model with AdapterHub's load_adapter, runs the forward on the inputs and writes result
      (logits, loss).

For every case in CASES it writes DIR/<case>/: config.json and model.safetensors
(save_pretrained), inputs.json (input_ids, attention_mask, position_ids, labels: left padding in one
row, right padding in another, -100 on padding and on a prompt prefix) and reference.safetensors
(logits [B, T, V] and loss [1]). Every weight, norms and biases included, is drawn afresh from the
seed, so nothing is zero or one. Float32, CPU, eval mode, eager attention.

Then, for the cases AdapterHub supports (gpt2, llama, mistral; adapters 1.3.0 has no qwen2), every
adapter config in ADAPTER_CASES is added with `adapters.init(model)` + add_adapter + train_adapter,
its tensors perturbed (so nothing is zero or the identity), and one forward with labels and one
backward run: DIR/<case>/adapter-<config>.safetensors holds param.<name> (the adapter's values),
grad.<name> (AdapterHub's autograd), logits and loss; DIR/<case>/hub-<config>/ is AdapterHub's
save_adapter of it.
"""
import argparse
import json
import os

import torch
import transformers
from safetensors.torch import save_file
from transformers import (AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config)

import adapters
from adapters import DoubleSeqBnConfig, ParBnConfig, SeqBnConfig

V = 211  # vocabulary


def cases():
    common = dict(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=256, attn_implementation="eager")
    return {
        "gpt2": GPT2Config(vocab_size=V, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                           activation_function="gelu_new", attn_implementation="eager",
                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
        "llama_gqa_llama3": LlamaConfig(**common, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=500000.0,
                                        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                      "high_freq_factor": 4.0,
                                                      "original_max_position_embeddings": 32},
                                        tie_word_embeddings=False),
        "llama_linear_tied": LlamaConfig(**common, num_key_value_heads=4, rms_norm_eps=1e-6, rope_theta=10000.0,
                                         rope_scaling={"rope_type": "linear", "factor": 2.0},
                                         tie_word_embeddings=True, attention_bias=True, mlp_bias=True),
        "mistral": MistralConfig(**common, num_key_value_heads=1, sliding_window=4096, rope_theta=1e6,
                                 tie_word_embeddings=False),
        "qwen2": Qwen2Config(**common, num_key_value_heads=2, rope_theta=1e6, tie_word_embeddings=True,
                             use_sliding_window=False),
    }


ADAPTER_CASES = {
    "seq_bn": lambda: SeqBnConfig(reduction_factor=8),
    "double_seq_bn": lambda: DoubleSeqBnConfig(reduction_factor=4, leave_out=[0]),
    "par_bn": lambda: ParBnConfig(reduction_factor=4, non_linearity="gelu_new"),
    "seq_bn_learned_swish": lambda: SeqBnConfig(reduction_factor=16, scaling="learned", non_linearity="swish"),
}
ADAPTERHUB_SUPPORTS = {"gpt2", "llama", "mistral"}


def adapter_case(model_dir, cfg_name, ids, mask, pos, labels, g):
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").float().eval()
    adapters.init(model)
    model.add_adapter("a", config=ADAPTER_CASES[cfg_name]())
    model.train_adapter("a")
    model.eval()  # no dropout; train_adapter switched the module to training mode
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(0.1 * torch.randn(p.shape, generator=g) + (1.0 if name.endswith("scaling") else 0.0))
    model.save_adapter(os.path.join(model_dir, f"hub-{cfg_name}"), "a", with_head=False, use_safetensors=True)
    r = model(input_ids=ids, attention_mask=mask, position_ids=pos, labels=labels)
    r.loss.backward()
    out = {"logits": r.logits.detach().contiguous(), "loss": r.loss.detach().reshape(1)}
    for name, p in model.named_parameters():
        if p.requires_grad:
            out["param." + name] = p.detach().contiguous().reshape(p.shape if p.dim() else (1,))
            out["grad." + name] = p.grad.detach().contiguous().reshape(p.shape if p.dim() else (1,))
    return out


def fresh_inputs(g):
    B, T = 3, 9
    ids = torch.randint(3, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, :3] = 0   # left padding
    mask[2, 6:] = 0   # right padding
    ids[mask == 0] = 0
    # positions count real tokens, as transformers' generate() derives them from the mask
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    labels = ids.clone()
    labels[mask == 0] = -100
    labels[0, :4] = -100  # a prompt: no loss on it
    # a token right after padding would be predicted from a padding position, whose output is
    # arbitrary (transformers attends uniformly there, this package gives zeros): not a target
    labels[:, 1:][mask[:, :-1] == 0] = -100
    return ids, mask, pos, labels


def perturb(model, g):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or "ln_" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.08 * torch.randn(p.shape, generator=g))


def check(adapter_dir, model_dir, inputs_file, result):
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").float().eval()
    adapters.init(model)
    name = model.load_adapter(adapter_dir, use_safetensors=True)
    model.set_active_adapters(name)
    model.eval()
    with open(inputs_file) as f:
        inp = json.load(f)
    ids, mask = torch.tensor(inp["input_ids"]), torch.tensor(inp["attention_mask"])
    pos = torch.tensor(inp["position_ids"])
    labels = torch.tensor(inp["labels"])
    with torch.no_grad():
        r = model(input_ids=ids, attention_mask=mask, position_ids=pos, labels=labels)
    save_file({"logits": r.logits.contiguous(), "loss": r.loss.reshape(1)}, result)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--check")
    a = ap.parse_args()
    if a.check:
        with open(a.check) as f:
            for job in json.load(f):
                check(job["adapter"], job["model"], job["inputs"], job["result"])
        return
    torch.manual_seed(a.seed)
    g = torch.Generator().manual_seed(a.seed)
    manifest = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                             "adapters": adapters.__version__}, "cases": []}
    for name, cfg in cases().items():
        out = os.path.join(a.out, name)
        os.makedirs(out, exist_ok=True)
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
        perturb(model, g)
        if getattr(cfg, "tie_word_embeddings", False):
            model.tie_weights()
        model.save_pretrained(out, safe_serialization=True)
        ids, mask, pos, labels = fresh_inputs(g)
        with torch.no_grad():
            r = model(input_ids=ids, attention_mask=mask, position_ids=pos, labels=labels)
        save_file({"logits": r.logits.contiguous(), "loss": r.loss.reshape(1)}, os.path.join(out, "reference.safetensors"))
        with open(os.path.join(out, "inputs.json"), "w") as f:
            json.dump({"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "position_ids": pos.tolist(),
                       "labels": labels.tolist()}, f)
        manifest["cases"].append(name)
        if cfg.model_type in ADAPTERHUB_SUPPORTS:
            for cfg_name in ADAPTER_CASES:
                save_file(adapter_case(out, cfg_name, ids, mask, pos, labels, g), os.path.join(out, f"adapter-{cfg_name}.safetensors"))
                manifest.setdefault("adapters", []).append(f"{name}/{cfg_name}")
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f)


if __name__ == "__main__":
    main()
