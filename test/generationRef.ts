// References for the generation kernels, written independently of them: a random paged cache
// (shuffled pages) with its contiguous copy for the plain attention op, and sampling by sorting.
import { tensor, Tensor } from '../lib';
import type { FloatDType } from '../lib';
import { rng } from './helpers';

export interface PagedCase {
  B: number; Hq: number; Hkv: number; D: number; pageSize: number; lengths: number[];
  q: Tensor; kPool: Tensor; vPool: Tensor; pageTable: Tensor; seqLens: Tensor; maxLength: number;
  /** Contiguous [B, Hkv, Tmax, D] copies and the key mask [B, Tmax] for attention() (zeros unless asked for). */
  k: Tensor; v: Tensor; keyMask: Tensor; Tmax: number;
}

/** Random q and pools; each sequence's pages are a random subset of the pool in random order. */
export function pagedCase(seed: number, B: number, Hq: number, Hkv: number, D: number, pageSize: number, lengths: number[], dtype: FloatDType = 'float32', contiguous = true, sparePages = 3): PagedCase {
  const r = rng(seed);
  const need = lengths.map((l) => Math.ceil(l / pageSize));
  const pages = need.reduce((a, b) => a + b, 0) + sparePages;
  const order = Array.from({ length: pages }, (_, i) => i);
  for (let i = pages - 1; i > 0; i--) {
    const j = Math.floor(r.uniform() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const maxPages = Math.max(1, ...need);
  const table = new Int32Array(B * maxPages).fill(-1);
  let next = 0;
  need.forEach((n, b) => {
    for (let p = 0; p < n; p++) table[b * maxPages + p] = order[next++];
  });
  const slots = pages * pageSize;
  const kArr = Float32Array.from(r.array(slots * Hkv * D));
  const vArr = Float32Array.from(r.array(slots * Hkv * D));
  const Tmax = Math.max(1, ...lengths);
  const kc = new Float32Array(B * Hkv * Tmax * D);
  const vc = new Float32Array(B * Hkv * Tmax * D);
  const mask = new Float32Array(B * Tmax);
  if (contiguous) lengths.forEach((len, b) => {
    for (let j = 0; j < len; j++) {
      mask[b * Tmax + j] = 1;
      const slot = table[b * maxPages + Math.floor(j / pageSize)] * pageSize + (j % pageSize);
      for (let h = 0; h < Hkv; h++)
        for (let d = 0; d < D; d++) {
          kc[((b * Hkv + h) * Tmax + j) * D + d] = kArr[(slot * Hkv + h) * D + d];
          vc[((b * Hkv + h) * Tmax + j) * D + d] = vArr[(slot * Hkv + h) * D + d];
        }
    }
  });
  const f = (a: Float32Array, shape: number[]) => tensor(a, shape, { dtype });
  return {
    B, Hq, Hkv, D, pageSize, lengths, Tmax, maxLength: Math.max(0, ...lengths),
    q: f(Float32Array.from(r.array(B * Hq * D)), [B, Hq, D]),
    kPool: f(kArr, [slots, Hkv, D]), vPool: f(vArr, [slots, Hkv, D]),
    pageTable: tensor(table, [B, maxPages], { dtype: 'int32' }),
    seqLens: tensor(Int32Array.from(lengths), [B], { dtype: 'int32' }),
    k: f(kc, [B, Hkv, Tmax, D]), v: f(vc, [B, Hkv, Tmax, D]), keyMask: tensor(mask, [B, Tmax]),
  };
}

export interface SampleParams { temperature: number; topK: number; topP: number; penalty: number; u: number }

/**
 * The sampler's definition (native/generation.h) by sorting: penalty, greedy or z = x / T, the top-k
 * value, w = exp(z − max), the smallest most-likely prefix holding topP of the mass (ties kept), and
 * the first kept index whose running sum exceeds u · Σ kept. fp32 where the kernel rounds to fp32.
 */
export function sampleRef(logits: ArrayLike<number>, p: SampleParams, penaltyIds: number[] = []): number {
  const f = Math.fround;
  const V = logits.length;
  const x = Array.from(logits, (v) => f(v));
  if (p.penalty !== 1) for (const id of penaltyIds) x[id] = x[id] > 0 ? f(x[id] / p.penalty) : f(x[id] * p.penalty);
  let best = -1;
  for (let i = 0; i < V; i++) if (Number.isFinite(x[i]) && (best < 0 || x[i] > x[best])) best = i;
  if (best < 0 || !(p.temperature > 0)) return best;
  const z = x.map((v) => (Number.isNaN(v) ? -Infinity : f(v / p.temperature)));
  let kth = -Infinity;
  if (p.topK >= 1 && p.topK < V) kth = [...z].sort((a, b) => b - a)[p.topK - 1];
  const w = z.map((v) => (v >= kth ? Math.exp(f(v - z[best])) : 0));
  let keep = w.map((wi) => wi > 0);
  if (p.topP < 1) {
    const total = w.reduce((a, b) => a + b, 0);
    const sorted = [...w].sort((a, b) => b - a);
    let acc = 0;
    let theta = 0;
    for (const wi of sorted) {
      acc += wi;
      theta = wi;
      if (acc >= p.topP * total) break;
    }
    keep = w.map((wi) => wi > 0 && f(wi) >= f(theta));
  }
  const kept = w.map((wi, i) => (keep[i] ? wi : 0));
  const r = p.u * kept.reduce((a, b) => a + b, 0);
  let run = 0;
  let last = best;
  for (let i = 0; i < V; i++) {
    if (kept[i] <= 0) continue;
    last = i;
    run += kept[i];
    if (run > r) return i;
  }
  return last;
}

/** params fp32 [B, 5] for sampleTokens. */
export function paramsTensor(ps: SampleParams[], device = 'cpu'): Tensor {
  return tensor(ps.flatMap((p) => [p.temperature, p.topK, p.topP, p.penalty, p.u]), [ps.length, 5], { device });
}
