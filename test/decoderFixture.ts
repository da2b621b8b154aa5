// Tiny random decoders written as Hugging Face saves them (config.json + model.safetensors), for
// tests that need no Python: a LLaMA-family model (grouped-query attention, rope scaling) and a
// GPT-2 (Conv1D weights stored [in, out], fused c_attn). Seeded: the same seed writes the same bytes.
import * as fs from 'fs';
import * as path from 'path';
import { TensorToWrite, writeSafetensors } from '../lib/io/safetensors';
import { rng } from './helpers';

export interface TinyDecoderOptions {
  kvHeads?: number;
  vocab?: number;
  hidden?: number;
  layers?: number;
  heads?: number;
  intermediate?: number;
  config?: Record<string, unknown>;
  /** Changes the tensors before they are written. */
  edit?: (t: Record<string, TensorToWrite>) => void;
}

function writeModel(dir: string, config: Record<string, unknown>, tensors: Record<string, TensorToWrite>, edit?: TinyDecoderOptions['edit']): string {
  fs.mkdirSync(dir, { recursive: true });
  edit?.(tensors);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  return dir;
}

/** A LLaMA-architecture decoder: RMSNorm, rotary embeddings (llama3 scaling), GQA, SwiGLU, untied head. */
export function writeTinyLlama(dir: string, seed: number, o: TinyDecoderOptions = {}): string {
  const r = rng(seed);
  const [V, H, L, heads, I] = [o.vocab ?? 97, o.hidden ?? 48, o.layers ?? 2, o.heads ?? 4, o.intermediate ?? 80];
  const kv = o.kvHeads ?? 2;
  const dh = H / heads;
  const t: Record<string, TensorToWrite> = {};
  const put = (name: string, shape: number[], std = 0.1, mean = 0) => {
    t[name] = { dtype: 'F32', shape, data: Float32Array.from(r.array(shape.reduce((a, b) => a * b, 1), std), (v) => v + mean) };
  };
  put('model.embed_tokens.weight', [V, H], 0.5);
  for (let i = 0; i < L; i++) {
    const p = `model.layers.${i}`;
    put(`${p}.input_layernorm.weight`, [H], 0.2, 1);
    put(`${p}.self_attn.q_proj.weight`, [heads * dh, H]);
    put(`${p}.self_attn.k_proj.weight`, [kv * dh, H]);
    put(`${p}.self_attn.v_proj.weight`, [kv * dh, H]);
    put(`${p}.self_attn.o_proj.weight`, [H, heads * dh]);
    put(`${p}.post_attention_layernorm.weight`, [H], 0.2, 1);
    put(`${p}.mlp.gate_proj.weight`, [I, H]);
    put(`${p}.mlp.up_proj.weight`, [I, H]);
    put(`${p}.mlp.down_proj.weight`, [H, I]);
  }
  put('model.norm.weight', [H], 0.2, 1);
  put('lm_head.weight', [V, H]);
  const config = {
    model_type: 'llama', architectures: ['LlamaForCausalLM'], vocab_size: V, hidden_size: H, intermediate_size: I,
    num_hidden_layers: L, num_attention_heads: heads, num_key_value_heads: kv, max_position_embeddings: 128,
    rms_norm_eps: 1e-5, rope_theta: 500000, hidden_act: 'silu', tie_word_embeddings: false,
    rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 },
    ...o.config,
  };
  return writeModel(dir, config, t, o.edit);
}

/** A GPT-2: LayerNorm, learned positions, fused c_attn and Conv1D weights [in, out], tied head. */
export function writeTinyGpt2(dir: string, seed: number, o: TinyDecoderOptions = {}): string {
  const r = rng(seed);
  const [V, H, L, heads] = [o.vocab ?? 97, o.hidden ?? 48, o.layers ?? 2, o.heads ?? 4];
  const I = 4 * H;
  const t: Record<string, TensorToWrite> = {};
  const put = (name: string, shape: number[], std = 0.1, mean = 0) => {
    t[name] = { dtype: 'F32', shape, data: Float32Array.from(r.array(shape.reduce((a, b) => a * b, 1), std), (v) => v + mean) };
  };
  put('transformer.wte.weight', [V, H], 0.5);
  put('transformer.wpe.weight', [64, H], 0.1);
  for (let i = 0; i < L; i++) {
    const p = `transformer.h.${i}`;
    put(`${p}.ln_1.weight`, [H], 0.2, 1);
    put(`${p}.ln_1.bias`, [H]);
    put(`${p}.attn.c_attn.weight`, [H, 3 * H]);
    put(`${p}.attn.c_attn.bias`, [3 * H]);
    put(`${p}.attn.c_proj.weight`, [H, H]);
    put(`${p}.attn.c_proj.bias`, [H]);
    put(`${p}.ln_2.weight`, [H], 0.2, 1);
    put(`${p}.ln_2.bias`, [H]);
    put(`${p}.mlp.c_fc.weight`, [H, I]);
    put(`${p}.mlp.c_fc.bias`, [I]);
    put(`${p}.mlp.c_proj.weight`, [I, H]);
    put(`${p}.mlp.c_proj.bias`, [H]);
  }
  put('transformer.ln_f.weight', [H], 0.2, 1);
  put('transformer.ln_f.bias', [H]);
  const config = {
    model_type: 'gpt2', architectures: ['GPT2LMHeadModel'], vocab_size: V, n_embd: H, n_layer: L, n_head: heads,
    n_positions: 64, n_inner: null, activation_function: 'gelu_new', layer_norm_epsilon: 1e-5, ...o.config,
  };
  return writeModel(dir, config, t, o.edit);
}

/** GPT-2's byte ↔ printable-character table (byte-level BPE): the character standing for each byte. */
export function byteChars(): string[] {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++)
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  const out: string[] = new Array(256);
  bs.forEach((b, i) => { out[b] = String.fromCodePoint(cs[i]); });
  return out;
}

export const CHATML = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
  + "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/**
 * GGUF-style tokenizer metadata of a tiny byte-level BPE: the 256 byte tokens, a few merges, and
 * <|endoftext|>, <|im_start|>, <|im_end|> as control tokens; a ChatML template unless chatTemplate is null.
 */
export function tinyChatTokenizerMetadata(chatTemplate: string | null = CHATML): Record<string, unknown> {
  const bytes = byteChars();
  const sp = bytes[32];
  const tokens = [...bytes, `${sp}t`, 'he', `${sp}the`, '<|endoftext|>', '<|im_start|>', '<|im_end|>'];
  const md: Record<string, unknown> = {
    'general.architecture': 'llama', 'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.tokens': tokens,
    'tokenizer.ggml.token_type': tokens.map((_, i) => (i >= tokens.length - 3 ? 3 : 1)),
    'tokenizer.ggml.merges': [`${sp} t`, 'h e', `${sp}t he`],
    'tokenizer.ggml.bos_token_id': tokens.length - 2, 'tokenizer.ggml.eos_token_id': tokens.length - 1,
    'tokenizer.ggml.padding_token_id': tokens.length - 3, 'tokenizer.ggml.add_bos_token': false,
  };
  if (chatTemplate !== null) md['tokenizer.chat_template'] = chatTemplate;
  return md;
}

/** A tiny LLaMA with the tiny chat tokenizer's files (tokenizer.json, tokenizer_config.json) beside it. */
export function writeTinyChatModel(dir: string, seed: number, files: { json: Record<string, unknown>; config: Record<string, unknown> }, o: TinyDecoderOptions = {}): string {
  const vocab = (files.json.model as { vocab: Record<string, number> }).vocab;
  writeTinyLlama(dir, seed, { ...o, vocab: Object.keys(vocab).length });
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(files.json));
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(files.config));
  return dir;
}
