// The demo's backbone: a small BERT with random (not pre-trained) weights and a WordPiece
// tokenizer over the demo's words, written in Hugging Face's file formats (config.json,
// model.safetensors, tokenizer.json) so it loads through the same code as a real model.
import * as fs from 'fs';
import * as path from 'path';
import { writeSafetensors, TensorToWrite } from '../io/safetensors';
import { randn } from '../tensor';
import { buildVocab, buildWordPieceTokenizerJson } from '../train/vocab';

export interface DemoBackboneSpec {
  hidden: number;
  layers: number;
  heads: number;
  intermediate: number;
  maxPositions: number;
  vocabSize: number;
  seed: number;
}

export const DEMO_SPEC: Omit<DemoBackboneSpec, 'vocabSize'> = { hidden: 256, layers: 4, heads: 4, intermediate: 1024, maxPositions: 64, seed: 2024 };

/** Writes the backbone into dir (when it is not already there) and returns dir. */
export function writeDemoBackbone(dir: string, texts: string[], vocabSize = 320): string {
  const marker = path.join(dir, 'model.safetensors');
  if (fs.existsSync(marker) && fs.existsSync(path.join(dir, 'tokenizer.json'))) return dir;
  fs.mkdirSync(dir, { recursive: true });
  const vocab = buildVocab(texts, vocabSize);
  const spec: DemoBackboneSpec = { ...DEMO_SPEC, vocabSize: vocab.length };
  const H = spec.hidden;
  let seed = spec.seed;
  const t: Record<string, TensorToWrite> = {};
  // Default-style init (std 1/√fan_in) rather than BERT's 0.02: with random weights, larger
  // projections let attention carry the other tokens into [CLS], which the head reads.
  const normal = (name: string, shape: number[], std: number) => {
    t[name] = { dtype: 'F32', shape, data: randn(shape, { seed: seed++, std }).toArray() };
  };
  const constant = (name: string, shape: number[], v: number) => {
    t[name] = { dtype: 'F32', shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(v) };
  };
  const linear = (base: string, out: number, inp: number) => {
    normal(`${base}.weight`, [out, inp], 1 / Math.sqrt(inp));
    normal(`${base}.bias`, [out], 0.02);
  };
  const norm = (base: string) => {
    constant(`${base}.weight`, [H], 1);
    constant(`${base}.bias`, [H], 0);
  };
  normal('bert.embeddings.word_embeddings.weight', [spec.vocabSize, H], 1);
  normal('bert.embeddings.position_embeddings.weight', [spec.maxPositions, H], 0.1);
  normal('bert.embeddings.token_type_embeddings.weight', [2, H], 0.1);
  norm('bert.embeddings.LayerNorm');
  for (let i = 0; i < spec.layers; i++) {
    const l = `bert.encoder.layer.${i}`;
    for (const p of ['query', 'key', 'value']) linear(`${l}.attention.self.${p}`, H, H);
    linear(`${l}.attention.output.dense`, H, H);
    norm(`${l}.attention.output.LayerNorm`);
    linear(`${l}.intermediate.dense`, spec.intermediate, H);
    linear(`${l}.output.dense`, H, spec.intermediate);
    norm(`${l}.output.LayerNorm`);
  }
  linear('bert.pooler.dense', H, H);
  const config = {
    architectures: ['BertModel'], model_type: 'bert', _name_or_path: 'fused-adapters-demo-bert (random weights, not pre-trained)',
    vocab_size: spec.vocabSize, hidden_size: H, num_hidden_layers: spec.layers, num_attention_heads: spec.heads,
    intermediate_size: spec.intermediate, hidden_act: 'gelu', hidden_dropout_prob: 0.1, attention_probs_dropout_prob: 0.1,
    max_position_embeddings: spec.maxPositions, type_vocab_size: 2, layer_norm_eps: 1e-12, pad_token_id: 0, initializer_range: 0.02,
  };
  const tok = buildWordPieceTokenizerJson(vocab);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tok));
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({
    tokenizer_class: 'BertTokenizer', do_lower_case: true, model_max_length: spec.maxPositions,
    pad_token: '[PAD]', unk_token: '[UNK]', cls_token: '[CLS]', sep_token: '[SEP]', mask_token: '[MASK]',
  }, null, 2));
  writeSafetensors(marker, t, { format: 'pt' }); // last: its presence marks a complete directory
  return dir;
}
