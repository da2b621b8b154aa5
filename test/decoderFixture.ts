// Tiny random decoders written as Hugging Face saves them (config.json + model.safetensors), for
// tests that need no Python: a LLaMA-family model (grouped-query attention, rope scaling) and a
// GPT-2 (Conv1D weights stored [in, out], fused c_attn). Seeded: the same seed writes the same bytes.
import * as fs from 'fs';
import * as path from 'path';
import { TensorToWrite, writeSafetensors } from '../lib/backbone/safetensors';
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
