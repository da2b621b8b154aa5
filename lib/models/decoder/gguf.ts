// A GGUF file as a decoder: its metadata → the config.json transformers would write, its tensors →
// Hugging Face names, dequantized to float32 (lib/io/gguf.ts). llama.cpp's converter interleaves the
// two rotary halves of each head's rows of q and k for LLaMA-architecture models; they are put back
// in transformers' rotate-half order here. Architectures: llama (SmolLM2, LLaMA, Mistral as llama),
// qwen2, gpt2.
import { GgufFile, openGguf } from '../../io/gguf';
import type { WeightSource } from './load';

const ARCHS = ['llama', 'qwen2', 'gpt2'];

/** HF name → GGUF name (per layer i), for the LLaMA family. */
function llamaNames(L: number): Map<string, string> {
  const m = new Map<string, string>([
    ['model.embed_tokens.weight', 'token_embd.weight'], ['model.norm.weight', 'output_norm.weight'], ['lm_head.weight', 'output.weight'],
  ]);
  const per: [string, string][] = [
    ['input_layernorm.weight', 'attn_norm.weight'], ['post_attention_layernorm.weight', 'ffn_norm.weight'],
    ['self_attn.q_proj.weight', 'attn_q.weight'], ['self_attn.k_proj.weight', 'attn_k.weight'], ['self_attn.v_proj.weight', 'attn_v.weight'],
    ['self_attn.o_proj.weight', 'attn_output.weight'], ['self_attn.q_proj.bias', 'attn_q.bias'], ['self_attn.k_proj.bias', 'attn_k.bias'],
    ['self_attn.v_proj.bias', 'attn_v.bias'], ['mlp.gate_proj.weight', 'ffn_gate.weight'], ['mlp.up_proj.weight', 'ffn_up.weight'],
    ['mlp.down_proj.weight', 'ffn_down.weight'],
  ];
  for (let i = 0; i < L; i++) for (const [hf, gg] of per) m.set(`model.layers.${i}.${hf}`, `blk.${i}.${gg}`);
  return m;
}

/** GPT-2: GGUF stores nn.Linear layout [out, in]; this package's loader expects HF's Conv1D [in, out], so they are transposed back. */
function gpt2Names(L: number): Map<string, string> {
  const m = new Map<string, string>([
    ['transformer.wte.weight', 'token_embd.weight'], ['transformer.wpe.weight', 'position_embd.weight'],
    ['transformer.ln_f.weight', 'output_norm.weight'], ['transformer.ln_f.bias', 'output_norm.bias'], ['lm_head.weight', 'output.weight'],
  ]);
  const per: [string, string][] = [
    ['ln_1.weight', 'attn_norm.weight'], ['ln_1.bias', 'attn_norm.bias'], ['attn.c_attn.weight', 'attn_qkv.weight'],
    ['attn.c_attn.bias', 'attn_qkv.bias'], ['attn.c_proj.weight', 'attn_output.weight'], ['attn.c_proj.bias', 'attn_output.bias'],
    ['ln_2.weight', 'ffn_norm.weight'], ['ln_2.bias', 'ffn_norm.bias'], ['mlp.c_fc.weight', 'ffn_up.weight'], ['mlp.c_fc.bias', 'ffn_up.bias'],
    ['mlp.c_proj.weight', 'ffn_down.weight'], ['mlp.c_proj.bias', 'ffn_down.bias'],
  ];
  for (let i = 0; i < L; i++) for (const [hf, gg] of per) m.set(`transformer.h.${i}.${hf}`, `blk.${i}.${gg}`);
  return m;
}

/** Rows of each head back from llama.cpp's interleaved rotary order ([h][j][2]) to rotate-half order ([h][2][j]). */
export function unpermuteRows(w: Float32Array, heads: number, cols: number): Float32Array {
  const rows = w.length / cols;
  const half = rows / heads / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++)
    for (let j = 0; j < half; j++)
      for (let k = 0; k < 2; k++) {
        const src = (h * half * 2 + j * 2 + k) * cols;
        const dst = (h * half * 2 + k * half + j) * cols;
        out.set(w.subarray(src, src + cols), dst);
      }
  return out;
}

function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  return out;
}

export async function ggufDecoderSource(file: string): Promise<{ raw: Record<string, unknown>; source: WeightSource; name: string; file: GgufFile }> {
  const g = await openGguf(file);
  const md = g.metadata;
  const arch = String(md['general.architecture']);
  if (!ARCHS.includes(arch)) throw new Error(`${file}: GGUF architecture '${arch}' is not supported (${ARCHS.join(', ')})`);
  const key = (k: string, fallback?: unknown) => {
    const v = md[`${arch}.${k}`] ?? fallback;
    if (v === undefined) throw new Error(`${file}: GGUF metadata lacks '${arch}.${k}'`);
    return v;
  };
  const tokens = md['tokenizer.ggml.tokens'] as string[] | undefined;
  const vocab = Number(key('vocab_size', tokens?.length));
  const L = Number(key('block_count'));
  const H = Number(key('embedding_length'));
  const heads = Number(key('attention.head_count'));
  const raw: Record<string, unknown> = arch === 'gpt2'
    ? {
      model_type: 'gpt2', vocab_size: vocab, n_embd: H, n_layer: L, n_head: heads, n_positions: Number(key('context_length')),
      n_inner: Number(key('feed_forward_length')), layer_norm_epsilon: Number(key('attention.layer_norm_epsilon')), activation_function: 'gelu_new',
      tie_word_embeddings: !g.tensors.has('output.weight'),
    }
    : {
      model_type: arch, vocab_size: vocab, hidden_size: H, num_hidden_layers: L, num_attention_heads: heads,
      num_key_value_heads: Number(key('attention.head_count_kv', heads)), intermediate_size: Number(key('feed_forward_length')),
      max_position_embeddings: Number(key('context_length')), rms_norm_eps: Number(key('attention.layer_norm_rms_epsilon')),
      rope_theta: Number(key('rope.freq_base', 10000)), hidden_act: 'silu', tie_word_embeddings: !g.tensors.has('output.weight'),
      rope_scaling: null,
    };
  if (arch !== 'gpt2') {
    const headDim = H / heads;
    const rot = md[`${arch}.rope.dimension_count`];
    if (rot !== undefined && Number(rot) !== headDim) throw new Error(`${file}: partial rotary embeddings (${rot} of ${headDim} dims) are not supported`);
    const scaling = md[`${arch}.rope.scaling.type`];
    if (scaling === 'linear') raw.rope_scaling = { rope_type: 'linear', factor: Number(md[`${arch}.rope.scaling.factor`]) };
    else if (scaling !== undefined && scaling !== 'none') throw new Error(`${file}: rope scaling '${String(scaling)}' is not supported in GGUF files`);
    if (g.tensors.has('rope_freqs.weight')) throw new Error(`${file}: per-frequency rope factors (rope_freqs.weight, llama3 scaling) are not supported in GGUF files yet`);
  }
  const names = arch === 'gpt2' ? gpt2Names(L) : llamaNames(L);
  const kvHeads = Number(raw.num_key_value_heads ?? heads);
  const tensor = (name: string) => g.tensors.get(names.get(name) ?? '')!;
  const source: WeightSource = {
    has: (name) => names.has(name) && g.tensors.has(names.get(name)!),
    info: (name) => {
      const t = tensor(name);
      const conv1d = arch === 'gpt2' && t.shape.length === 2 && !name.endsWith('wte.weight') && !name.endsWith('wpe.weight') && name !== 'lm_head.weight';
      return { dtype: t.typeName === 'F32' || t.typeName === 'F16' || t.typeName === 'BF16' ? t.typeName : 'F32', shape: conv1d ? [t.shape[1], t.shape[0]] : t.shape };
    },
    getFloat32: (name) => {
      const t = tensor(name);
      let data = g.read(t.name);
      if (arch === 'llama' && /self_attn\.q_proj\.(weight|bias)$/.test(name)) data = unpermuteRows(data, heads, t.shape.length === 2 ? t.shape[1] : 1);
      if (arch === 'llama' && /self_attn\.k_proj\.(weight|bias)$/.test(name)) data = unpermuteRows(data, kvHeads, t.shape.length === 2 ? t.shape[1] : 1);
      if (arch === 'gpt2' && source.info(name).shape.join() !== t.shape.join()) data = transpose(data, t.shape[0], t.shape[1]);
      return data;
    },
    getRaw: (name) => g.readRaw(tensor(name).name),
  };
  return { raw, source, name: String(md['general.name'] ?? file), file: g };
}
