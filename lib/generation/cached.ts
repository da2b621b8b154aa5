// A decoder's forward for generation: inference only, with a KV cache. Each layer's keys and values
// (after the rotary embedding) are written into one preallocated [B, kvHeads, Tmax, dh] block per
// layer; the new tokens' queries attend to the filled part of it (the fused attention op over a
// cache, CPU and CUDA). Prefill runs the prompt through once; every decode step then runs one token.
import { attention, cacheWrite, embedding, rope, transpose12 } from '../nn';
import { add, matmul } from '../ops';
import { Scope } from '../core/scope';
import { Tensor, empty, tensor } from '../tensor';
import type { Decoder } from '../models/decoder/model';
import { mlp, norm, proj, residual } from '../models/decoder/layers';
import { adapterForwardBatched } from '../methods/bottleneck/functional';

export interface KVCache {
  /** Per layer: keys and values, [B, kvHeads, Tmax, headDim]. */
  layers: { k: Tensor; v: Tensor }[];
  /** Rows filled so far (the same for every sequence of the batch). */
  length: number;
  readonly capacity: number;
  /** Bytes of one token's keys and values over all layers (one sequence). */
  readonly bytesPerToken: number;
  dispose(): void;
}

/** An empty cache for B sequences of up to `capacity` tokens. */
export function createCache(model: Decoder, B: number, capacity: number): KVCache {
  const c = model.config;
  const layers = Array.from({ length: c.numLayers }, () => ({
    k: empty([B, c.numKvHeads, capacity, c.headDim], { dtype: model.dtype, device: model.device }),
    v: empty([B, c.numKvHeads, capacity, c.headDim], { dtype: model.dtype, device: model.device }),
  }));
  const elem = model.dtype === 'float32' ? 4 : 2;
  return {
    layers, length: 0, capacity,
    bytesPerToken: 2 * c.numLayers * c.numKvHeads * c.headDim * elem,
    dispose() {
      for (const l of layers) {
        l.k.dispose();
        l.v.dispose();
      }
    },
  };
}

/**
 * Runs tokens ids [B][n] at positions pos [B][n] through the model with the cache (appending their keys
 * and values at cache.length), and returns the logits of each row's last token, [B, vocab] as a
 * Float32Array. keyMask [B, capacity] (1 = a real token) masks left padding. The active adapter of
 * the model runs at its sites; nothing is kept for a backward.
 */
export function cachedStep(
  model: Decoder, cache: KVCache, ids: number[][], pos: number[][], keyMask: Tensor, rowAdapters?: (string | null)[],
): Float32Array {
  const cfg = model.config;
  const B = ids.length;
  const n = ids[0].length;
  if (cache.length + n > cache.capacity) throw new Error(`generate: ${cache.length + n} tokens exceed the cache of ${cache.capacity}`);
  const s = new Scope();
  try {
    const dev = model.device;
    const [Hq, Hkv, dh] = [cfg.numHeads, cfg.numKvHeads, cfg.headDim];
    const positions = s.t(tensor(pos.flat(), [B, n], { dtype: 'int32', device: dev }));
    const w = model.weights;
    let x = s.t(embedding(w.tokens, s.t(tensor(ids.flat(), [B, n], { dtype: 'int32', device: dev }))));
    if (w.positions) x = s.t(add(x, s.t(embedding(w.positions, positions))));
    const invFreq = model.ropeFrequencies();
    const kvLength = cache.length + n;
    w.layers.forEach((l, i) => {
      const h = norm(s, cfg, x, l.norm1).out;
      let q = s.t(proj(s, h, l.q).reshape([B, n, Hq, dh]));
      let k = s.t(proj(s, h, l.k).reshape([B, n, Hkv, dh]));
      const v = s.t(proj(s, h, l.v).reshape([B, n, Hkv, dh]));
      if (invFreq) {
        q = s.t(rope(q, positions, invFreq));
        k = s.t(rope(k, positions, invFreq));
      }
      cacheWrite(cache.layers[i].k, s.t(transpose12(k)), cache.length);
      cacheWrite(cache.layers[i].v, s.t(transpose12(v)), cache.length);
      const a = attention(s.t(transpose12(q)), cache.layers[i].k, cache.layers[i].v, {
        scale: 1 / Math.sqrt(dh), causal: true, kvLength, keyMask,
      });
      s.t(a.out);
      s.t(a.lse);
      const att = proj(s, s.t(s.t(transpose12(a.out)).reshape([B, n, Hq * dh])), l.o);
      const site = (where: 'mh' | 'output', h: Tensor, res: Tensor) => (rowAdapters
        ? perRowResidual(s, h, res, model.batchedAdapterSite(rowAdapters, i, where, n, s))
        : residual(s, h, res, model.adapterSite(i, where)).out);
      const A = site('mh', att, x);
      const m = mlp(s, cfg, norm(s, cfg, A, l.norm2).out, l).out;
      x = site('output', m, A);
    });
    cache.length = kvLength;
    // the LM head on each row's last token only
    const last = s.t(embedding(s.t(x.reshape([B * n, cfg.hiddenSize])),
      s.t(tensor(Int32Array.from({ length: B }, (_, b) => b * n + n - 1), [B], { dtype: 'int32', device: dev }))));
    const fin = norm(s, cfg, last, w.finalNorm).out;
    return s.t(matmul(fin, w.lmHead, { transB: true })).toArray();
  } finally {
    s.dispose();
  }
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
