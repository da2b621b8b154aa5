// config.json → the encoder architecture: sizes, and where each weight lives in the
// checkpoint (BERT and RoBERTa share a layout; DistilBERT has its own names).
export type ModelType = 'bert' | 'roberta' | 'distilbert';
export const SUPPORTED_MODEL_TYPES: readonly ModelType[] = ['bert', 'roberta', 'distilbert'];

export interface EncoderConfig {
  modelType: ModelType;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  intermediateSize: number;
  hiddenAct: 'gelu' | 'gelu_tanh' | 'relu' | 'silu';
  maxPositions: number;
  typeVocabSize: number; // 0: no token type embeddings (DistilBERT)
  layerNormEps: number;
  padTokenId: number;
  hiddenDropout: number;
  attentionDropout: number;
  hasPooler: boolean;
  raw: Record<string, unknown>;
}

function num(raw: Record<string, unknown>, keys: string[], fallback?: number): number {
  for (const k of keys) {
    const v = raw[k];
    if (typeof v === 'number' && Number.isFinite(v)) return v;
  }
  if (fallback !== undefined) return fallback;
  throw new Error(`config.json: missing numeric field ${keys.map((k) => `'${k}'`).join(' or ')}`);
}

function activationName(v: unknown): EncoderConfig['hiddenAct'] {
  switch (v) {
    case undefined:
    case 'gelu':
      return 'gelu';
    case 'gelu_new':
    case 'gelu_pytorch_tanh':
    case 'gelu_fast':
      return 'gelu_tanh';
    case 'relu':
      return 'relu';
    case 'silu':
    case 'swish':
      return 'silu';
    default:
      throw new Error(`config.json: unsupported hidden activation '${String(v)}' (gelu, gelu_new, relu, silu)`);
  }
}

export function parseConfig(raw: unknown): EncoderConfig {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new Error('config.json: expected a JSON object');
  const r = raw as Record<string, unknown>;
  const mt = r.model_type;
  if (!SUPPORTED_MODEL_TYPES.includes(mt as ModelType))
    throw new Error(
      `config.json: unsupported model_type '${String(mt)}'; supported: ${SUPPORTED_MODEL_TYPES.join(', ')}`,
    );
  const modelType = mt as ModelType;
  const distil = modelType === 'distilbert';
  const cfg: EncoderConfig = {
    modelType,
    vocabSize: num(r, ['vocab_size']),
    hiddenSize: num(r, distil ? ['dim', 'hidden_size'] : ['hidden_size']),
    numLayers: num(r, distil ? ['n_layers', 'num_hidden_layers'] : ['num_hidden_layers']),
    numHeads: num(r, distil ? ['n_heads', 'num_attention_heads'] : ['num_attention_heads']),
    intermediateSize: num(r, distil ? ['hidden_dim', 'intermediate_size'] : ['intermediate_size']),
    hiddenAct: activationName(distil ? r.activation ?? r.hidden_act : r.hidden_act),
    maxPositions: num(r, ['max_position_embeddings'], 512),
    typeVocabSize: distil ? 0 : num(r, ['type_vocab_size'], 2),
    layerNormEps: num(r, ['layer_norm_eps'], distil ? 1e-12 : 1e-12),
    padTokenId: num(r, ['pad_token_id'], modelType === 'roberta' ? 1 : 0),
    hiddenDropout: num(r, distil ? ['dropout', 'hidden_dropout_prob'] : ['hidden_dropout_prob'], 0.1),
    attentionDropout: num(r, distil ? ['attention_dropout', 'attention_probs_dropout_prob'] : ['attention_probs_dropout_prob'], 0.1),
    hasPooler: !distil,
    raw: r,
  };
  // Limits that no real encoder reaches: each sizes allocations, so a hostile value fails here,
  // naming its field, before anything is allocated (the weights file is checked against them next).
  const field = (k: keyof EncoderConfig): string => {
    const names: Record<string, string> = {
      vocabSize: 'vocab_size', hiddenSize: distil ? 'dim' : 'hidden_size', numLayers: distil ? 'n_layers' : 'num_hidden_layers',
      numHeads: distil ? 'n_heads' : 'num_attention_heads', intermediateSize: distil ? 'hidden_dim' : 'intermediate_size',
      maxPositions: 'max_position_embeddings', typeVocabSize: 'type_vocab_size', layerNormEps: 'layer_norm_eps',
      padTokenId: 'pad_token_id', hiddenDropout: distil ? 'dropout' : 'hidden_dropout_prob',
      attentionDropout: distil ? 'attention_dropout' : 'attention_probs_dropout_prob',
    };
    return names[k] ?? k;
  };
  const LIMITS: [keyof EncoderConfig, number, number][] = [
    ['vocabSize', 1, 4_000_000], ['hiddenSize', 1, 65_536], ['numLayers', 1, 1_000], ['numHeads', 1, 1_024],
    ['intermediateSize', 1, 1_048_576], ['maxPositions', 1, 1_048_576], ['typeVocabSize', distil ? 0 : 1, 1_024],
  ];
  for (const [k, lo, hi] of LIMITS) {
    const v = cfg[k] as number;
    if (!Number.isInteger(v) || v < lo || v > hi)
      throw new Error(`config.json: ${field(k)} must be an integer in [${lo}, ${hi}], got ${v}`);
  }
  if (cfg.hiddenSize % cfg.numHeads !== 0)
    throw new Error(`config.json: hidden size ${cfg.hiddenSize} is not divisible by ${cfg.numHeads} heads`);
  if (!(cfg.layerNormEps > 0 && cfg.layerNormEps < 1))
    throw new Error(`config.json: ${field('layerNormEps')} must be in (0, 1), got ${cfg.layerNormEps}`);
  for (const k of ['hiddenDropout', 'attentionDropout'] as const)
    if (!(cfg[k] >= 0 && cfg[k] < 1)) throw new Error(`config.json: ${field(k)} must be in [0, 1), got ${cfg[k]}`);
  if (!Number.isInteger(cfg.padTokenId) || cfg.padTokenId < 0 || cfg.padTokenId >= cfg.vocabSize)
    throw new Error(`config.json: ${field('padTokenId')} must be a token id in [0, ${cfg.vocabSize}), got ${cfg.padTokenId}`);
  return cfg;
}

/** Checkpoint names of one architecture, with the model prefix ('bert.', 'roberta.', 'distilbert.'). */
export interface WeightNames {
  prefix: string;
  word: string;
  position: string;
  tokenType?: string;
  embLn: string; // + '.weight' / '.bias'
  layer(i: number): {
    q: string; k: string; v: string; attnOut: string; attnLn: string; inter: string; out: string; outLn: string;
  };
  pooler?: string;
  /** Where AdapterHub puts a layer's adapters: after attention ('mh') and after the feed-forward ('output'). */
  adapterPrefix(i: number, site: 'mh' | 'output', name: string): string;
}

export function weightNames(cfg: EncoderConfig): WeightNames {
  if (cfg.modelType === 'distilbert') {
    const p = 'distilbert';
    return {
      prefix: p,
      word: `${p}.embeddings.word_embeddings.weight`,
      position: `${p}.embeddings.position_embeddings.weight`,
      embLn: `${p}.embeddings.LayerNorm`,
      layer: (i) => {
        const l = `${p}.transformer.layer.${i}`;
        return {
          q: `${l}.attention.q_lin`, k: `${l}.attention.k_lin`, v: `${l}.attention.v_lin`,
          attnOut: `${l}.attention.out_lin`, attnLn: `${l}.sa_layer_norm`,
          inter: `${l}.ffn.lin1`, out: `${l}.ffn.lin2`, outLn: `${l}.output_layer_norm`,
        };
      },
      adapterPrefix: (i, site, name) =>
        `${p}.transformer.layer.${i}.${site === 'mh' ? 'attention_adapters' : 'output_adapters'}.adapters.${name}`,
    };
  }
  const p = cfg.modelType;
  return {
    prefix: p,
    word: `${p}.embeddings.word_embeddings.weight`,
    position: `${p}.embeddings.position_embeddings.weight`,
    tokenType: `${p}.embeddings.token_type_embeddings.weight`,
    embLn: `${p}.embeddings.LayerNorm`,
    layer: (i) => {
      const l = `${p}.encoder.layer.${i}`;
      return {
        q: `${l}.attention.self.query`, k: `${l}.attention.self.key`, v: `${l}.attention.self.value`,
        attnOut: `${l}.attention.output.dense`, attnLn: `${l}.attention.output.LayerNorm`,
        inter: `${l}.intermediate.dense`, out: `${l}.output.dense`, outLn: `${l}.output.LayerNorm`,
      };
    },
    pooler: `${p}.pooler.dense`,
    adapterPrefix: (i, site, name) =>
      `${p}.encoder.layer.${i}.${site === 'mh' ? 'attention.output' : 'output'}.adapters.${name}`,
  };
}
