// A decoder's forward for generation: inference only, over the paged KV cache (cache.ts). prefill
// runs each new sequence's prompt once (right-padded to the longest; causal attention over the
// prompt's own keys, which are then written into the cache's pages); decodeStep runs one token per
// sequence, attending over that sequence's cached keys with the decode attention kernel. Both return
// the logits of each sequence's last token, [B, vocab] on the model's device, and leave the cache one
// step further. Sequences in one call may run different adapters (rowAdapters).
import { attention, embedding, rope, transpose12 } from '../nn';
import { add, matmul } from '../ops';
import { Scope } from '../core/scope';
import { Tensor, tensor } from '../tensor';
import type { Decoder } from '../models/decoder/model';
import { mlp, norm, proj, residual } from '../models/decoder/layers';
import { adapterForwardBatched } from '../methods/bottleneck/functional';
import { cacheScatter, decodeAttention } from './kernels';
import type { PagedKVCache } from './cache';

/** What a layer's attention does with its projected q, k, v ([B, n, heads, dh], after RoPE): returns [B, n, Hq·dh]. */
type Attend = (s: Scope, layer: number, q: Tensor, k: Tensor, v: Tensor) => Tensor;

/**
 * Runs the prompts (token ids, each non-empty) of empty cache sequences `ids` through the model, writing
 * their keys and values into the cache. Returns the last prompt token's logits per sequence.
 */
export function prefill(model: Decoder, cache: PagedKVCache, ids: number[], prompts: number[][], rowAdapters?: (string | null)[]): Tensor {
  const B = prompts.length;
  if (ids.length !== B) throw new Error(`prefill: ${ids.length} sequences for ${B} prompts`);
  model.beginPass();
  ids.forEach((id, b) => {
    if (cache.length(id) !== 0) throw new Error(`prefill: sequence ${id} already holds ${cache.length(id)} tokens`);
    if (!prompts[b].length) throw new Error(`prefill: prompt ${b} is empty`);
  });
  const n = Math.max(...prompts.map((p) => p.length));
  for (const [b, id] of ids.entries()) cache.reserve(id, prompts[b].length);
  const tokens = prompts.map((p) => [...p, ...new Array(n - p.length).fill(p[p.length - 1])]);
  const positions = prompts.map(() => Array.from({ length: n }, (_, t) => t));
  const lengths = prompts.map((p) => p.length);
  const s = new Scope();
  try {
    const slots = s.t(cache.slots(ids, n, lengths));
    const cfg = model.config;
    const attend: Attend = (s, i, q, k, v) => {
      const rows = (t: Tensor) => s.t(t.reshape([B * n, cfg.numKvHeads, cfg.headDim]));
      cacheScatter(cache.layers[i].k, rows(k), slots);
      cacheScatter(cache.layers[i].v, rows(v), slots);
      // right padding: causal attention keeps every real token away from the padding after it
      const a = attention(s.t(transpose12(q)), s.t(transpose12(k)), s.t(transpose12(v)), { scale: 1 / Math.sqrt(cfg.headDim), causal: true });
      s.t(a.lse);
      return s.t(s.t(transpose12(s.t(a.out))).reshape([B, n, cfg.numHeads * cfg.headDim]));
    };
    const logits = forward(model, s, tokens, positions, lengths, attend, rowAdapters);
    ids.forEach((id, b) => cache.advance(id, lengths[b]));
    return logits;
  } finally {
    s.dispose();
  }
}

/** One token per sequence (`tokens[b]` follows sequence ids[b]'s cached tokens); returns the new logits. */
export function decodeStep(model: Decoder, cache: PagedKVCache, ids: number[], tokens: number[], rowAdapters?: (string | null)[]): Tensor {
  const B = ids.length;
  if (tokens.length !== B) throw new Error(`decodeStep: ${tokens.length} tokens for ${B} sequences`);
  model.beginPass();
  for (const id of ids) cache.reserve(id, 1);
  const lengths = ids.map((id) => cache.length(id));
  const s = new Scope();
  try {
    const cfg = model.config;
    const slots = s.t(cache.slots(ids, 1));
    const { table, maxPages } = cache.pageTable(ids);
    s.t(table);
    const seqLens = s.t(tensor(lengths.map((l) => l + 1), [B], { dtype: 'int32', device: model.device }));
    const maxLength = Math.min(maxPages * cache.pageSize, Math.max(...lengths) + 1);
    const attend: Attend = (s, i, q, k, v) => {
      const kv = (t: Tensor) => s.t(t.reshape([B, cfg.numKvHeads, cfg.headDim]));
      cacheScatter(cache.layers[i].k, kv(k), slots);
      cacheScatter(cache.layers[i].v, kv(v), slots);
      const out = s.t(decodeAttention(s.t(q.reshape([B, cfg.numHeads, cfg.headDim])), cache.layers[i].k, cache.layers[i].v,
        table, seqLens, cache.pageSize, maxLength, { scale: 1 / Math.sqrt(cfg.headDim) }));
      return s.t(out.reshape([B, 1, cfg.numHeads * cfg.headDim]));
    };
    const logits = forward(model, s, tokens.map((t) => [t]), lengths.map((l) => [l]), ids.map(() => 1), attend, rowAdapters);
    for (const id of ids) cache.advance(id, 1);
    return logits;
  } finally {
    s.dispose();
  }
}

/** The layers over tokens [B][n] at positions [B][n]; the logits of token lengths[b] − 1 of each row. */
function forward(
  model: Decoder, s: Scope, ids: number[][], pos: number[][], lengths: number[], attend: Attend, rowAdapters?: (string | null)[],
): Tensor {
  const cfg = model.config;
  const B = ids.length;
  const n = ids[0].length;
  const dev = model.device;
  const [Hq, Hkv, dh] = [cfg.numHeads, cfg.numKvHeads, cfg.headDim];
  const positions = s.t(tensor(pos.flat(), [B, n], { dtype: 'int32', device: dev }));
  const w = model.weights;
  let x = s.t(embedding(w.tokens, s.t(tensor(ids.flat(), [B, n], { dtype: 'int32', device: dev }))));
  if (w.positions) x = s.t(add(x, s.t(embedding(w.positions, positions))));
  const invFreq = model.ropeFrequencies();
  w.layers.forEach((l, i) => {
    const h = norm(s, cfg, x, l.norm1).out;
    let q = s.t(proj(s, h, l.q).reshape([B, n, Hq, dh]));
    let k = s.t(proj(s, h, l.k).reshape([B, n, Hkv, dh]));
    const v = s.t(proj(s, h, l.v).reshape([B, n, Hkv, dh]));
    if (invFreq) {
      q = s.t(rope(q, positions, invFreq));
      k = s.t(rope(k, positions, invFreq));
    }
    const att = proj(s, attend(s, i, q, k, v), l.o);
    const site = (where: 'mh' | 'output', h: Tensor, res: Tensor) => (rowAdapters
      ? perRowResidual(s, h, res, model.batchedAdapterSite(rowAdapters, i, where, n, s))
      : residual(s, h, res, model.adapterSite(i, where)).out);
    const A = site('mh', att, x);
    const m = mlp(s, cfg, norm(s, cfg, A, l.norm2).out, l).out;
    x = site('output', m, A);
  });
  // the LM head on each row's last real token only
  const last = s.t(embedding(s.t(x.reshape([B * n, cfg.hiddenSize])),
    s.t(tensor(lengths.map((len, b) => b * n + len - 1), [B], { dtype: 'int32', device: dev }))));
  const fin = norm(s, cfg, last, w.finalNorm).out;
  return matmul(fin, w.lmHead, { transB: true });
}

/**
 * The residual around a sub-layer with a different adapter per row: AdapterHub's placements (see
 * residual() in models/decoder/layers.ts) through one batched op; rows without an adapter pass through.
 */
function perRowResidual(s: Scope, h: Tensor, x: Tensor, b: ReturnType<Decoder['batchedAdapterSite']>): Tensor {
  const sum = s.t(add(h, x));
  if (!b) return sum;
  const [B, n, H] = sum.shape;
  const flat = (t: Tensor) => s.t(t.reshape([B * n, H]));
  // (input, residual): par_bn f(x) + (h + x); seq_bn f(h + x) + (h + x); double_seq_bn f(h) + (h + x)
  const input = b.config.is_parallel ? x : b.config.original_ln_before ? sum : h;
  const r = adapterForwardBatched(flat(input), b.weights, b.rows, { activation: b.activation, scaling: b.scales, residual: flat(sum) });
  s.t(r.out);
  return s.t(r.out.reshape([B, n, H]));
}
