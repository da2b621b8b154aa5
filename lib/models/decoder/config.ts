// config.json of a decoder-only language model → DecoderConfig: GPT-2, and the LLaMA family
// (llama, mistral, qwen2 and models published as llama such as SmolLM2). Every field that sizes
// an allocation is range-checked here, naming it, before anything is read from the weights.
import type { ActivationName } from '../../ops';
import { RopeScaling, ropeInvFreq } from './rope';

export type DecoderFamily = 'gpt2' | 'llama';

export interface DecoderConfig {
  family: DecoderFamily;
  /** config.json's model_type: gpt2, llama, mistral, qwen2. */
  modelType: string;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  /** Grouped-query attention: heads of K and V (numHeads for plain multi-head attention). */
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  maxPositions: number;
  /** LayerNorm (GPT-2) or RMSNorm (LLaMA family), and its epsilon. */
  norm: 'layer' | 'rms';
  eps: number;
  /** The MLP: GPT-2's act(fc) → proj, or the LLaMA family's down(act(gate) ⊙ up). */
  mlp: 'plain' | 'gated';
  act: ActivationName;
  /** Biases of the q/k/v, output, and MLP projections. */
  qkvBias: boolean;
  outBias: boolean;
  mlpBias: boolean;
  /** Rotary embeddings (LLaMA family): per-pair inverse frequencies (fp32) after any rope_scaling. */
  rope: { theta: number; scaling: RopeScaling | null; invFreq: Float32Array } | null;
  /** The LM head is the token embedding (GPT-2, qwen2's small models, SmolLM2). */
  tieEmbeddings: boolean;
  /** Attention sees only this many previous tokens (mistral, qwen2 with use_sliding_window); null: all. */
  slidingWindow: number | null;
  raw: Record<string, unknown>;
}

const LLAMA_TYPES = new Set(['llama', 'mistral', 'qwen2']);
export const DECODER_TYPES = ['gpt2', ...LLAMA_TYPES];

const ACTS: Record<string, ActivationName> = { silu: 'silu', swish: 'silu', gelu_new: 'gelu_tanh', gelu_pytorch_tanh: 'gelu_tanh', gelu: 'gelu', relu: 'relu' };

/** Whether a config.json (parsed) describes a decoder this package runs. */
export function isDecoderConfig(raw: unknown): boolean {
  return !!raw && typeof raw === 'object' && DECODER_TYPES.includes(String((raw as { model_type?: unknown }).model_type));
}

export function parseDecoderConfig(raw: unknown, where = 'config.json'): DecoderConfig {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`${where}: expected a JSON object`);
  const c = raw as Record<string, unknown>;
  const modelType = String(c.model_type);
  const int = (key: string, lo: number, hi: number, fallback?: number): number => {
    const v = c[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi)
      throw new Error(`${where}: ${key} must be an integer in [${lo}, ${hi}], got ${JSON.stringify(c[key])}`);
    return v;
  };
  const positive = (key: string, hi: number, fallback?: number): number => {
    const v = c[key] ?? fallback;
    if (typeof v !== 'number' || !(v > 0 && v < hi)) throw new Error(`${where}: ${key} must be in (0, ${hi}), got ${JSON.stringify(c[key])}`);
    return v;
  };
  const act = (key: string, fallback: string): ActivationName => {
    const v = String(c[key] ?? fallback);
    const a = ACTS[v];
    if (!a) throw new Error(`${where}: ${key} '${v}' is not supported (${Object.keys(ACTS).join(', ')})`);
    return a;
  };
  if (modelType === 'gpt2') {
    const H = int('n_embd', 1, 65536);
    const heads = int('n_head', 1, 1024);
    if (H % heads) throw new Error(`${where}: n_embd ${H} is not a multiple of n_head ${heads}`);
    if (c.scale_attn_by_inverse_layer_idx === true || c.reorder_and_upcast_attn === true)
      throw new Error(`${where}: scale_attn_by_inverse_layer_idx and reorder_and_upcast_attn are not supported`);
    const inner = c.n_inner === null || c.n_inner === undefined ? 4 * H : int('n_inner', 1, 1 << 20);
    return {
      family: 'gpt2', modelType, vocabSize: int('vocab_size', 1, 1 << 22), hiddenSize: H, numLayers: int('n_layer', 1, 1000),
      numHeads: heads, numKvHeads: heads, headDim: H / heads, intermediateSize: inner, maxPositions: int('n_positions', 1, 1 << 20),
      norm: 'layer', eps: positive('layer_norm_epsilon', 1, 1e-5), mlp: 'plain', act: act('activation_function', 'gelu_new'),
      qkvBias: true, outBias: true, mlpBias: true, rope: null, tieEmbeddings: c.tie_word_embeddings !== false, slidingWindow: null, raw: c,
    };
  }
  if (!LLAMA_TYPES.has(modelType))
    throw new Error(`${where}: model_type '${modelType}' is not a decoder this package runs (${DECODER_TYPES.join(', ')})`);
  const H = int('hidden_size', 1, 65536);
  const heads = int('num_attention_heads', 1, 1024);
  const kv = int('num_key_value_heads', 1, heads, heads);
  if (heads % kv) throw new Error(`${where}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kv}`);
  const headDim = c.head_dim === null || c.head_dim === undefined ? H / heads : int('head_dim', 2, 4096);
  if (!Number.isInteger(headDim) || headDim % 2) throw new Error(`${where}: the head dimension ${headDim} must be an even integer`);
  const theta = positive('rope_theta', 1e12, 10000);
  const scaling = (c.rope_scaling ?? null) as RopeScaling | null;
  const maxPositions = int('max_position_embeddings', 1, 1 << 24, 2048);
  const window = modelType === 'qwen2' && c.use_sliding_window !== true ? null : c.sliding_window;
  return {
    family: 'llama', modelType, vocabSize: int('vocab_size', 1, 1 << 22), hiddenSize: H, numLayers: int('num_hidden_layers', 1, 1000),
    numHeads: heads, numKvHeads: kv, headDim, intermediateSize: int('intermediate_size', 1, 1 << 20), maxPositions,
    norm: 'rms', eps: positive('rms_norm_eps', 1, 1e-6), mlp: 'gated', act: act('hidden_act', 'silu'),
    qkvBias: modelType === 'qwen2' || c.attention_bias === true, outBias: c.attention_bias === true, mlpBias: c.mlp_bias === true,
    rope: { theta, scaling, invFreq: ropeInvFreq(headDim, theta, scaling, `${where}: rope_scaling`) },
    tieEmbeddings: c.tie_word_embeddings === true, slidingWindow: window === null || window === undefined ? null : int('sliding_window', 1, 1 << 24),
    raw: c,
  };
}
