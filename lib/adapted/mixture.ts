// Routed mixtures of adapters: a pool of A adapters and, at each site, a learned gate W [A, H]. Each
// token n takes its top-k adapters of softmax(x_n·Wᵀ) (k = 1 or 2), weighted by the softmax over those
// k logits; an adapter takes at most C = ceil(capacityFactor · N·k / A) tokens per site (later tokens
// past it are dropped for that slot: their weight stays, its output is 0). The load-balancing loss is
// Switch Transformer's: balanceWeight · A · Σ_e f_e · P̄_e, with f_e the share of tokens whose first
// choice is e and P̄_e the mean gate probability of e. The routing is decided here on the host from
// the gate logits; the adapters run through the batched adapter op (compose.ts).
import { randn, Tensor } from '../tensor';
import type { FloatDType } from '../tensor';

export interface MixtureConfig {
  topK: 1 | 2;
  capacityFactor: number;
  balanceWeight: number;
}

export interface MixtureEntry {
  name: string;
  adapters: string[];
  config: MixtureConfig;
  /** Site key `${layer}.${site}` → the gate and its tensor name. */
  sites: Map<string, { name: string; gate: Tensor }>;
}

export function resolveMixtureConfig(o: Partial<MixtureConfig> = {}, where = 'addMixture'): MixtureConfig {
  const c = { topK: o.topK ?? 2, capacityFactor: o.capacityFactor ?? 1.25, balanceWeight: o.balanceWeight ?? 0.01 };
  if (c.topK !== 1 && c.topK !== 2) throw new Error(`${where}: topK must be 1 or 2, got ${String(o.topK)}`);
  if (!(c.capacityFactor > 0) || !Number.isFinite(c.capacityFactor)) throw new Error(`${where}: capacityFactor must be a positive number`);
  if (!(c.balanceWeight >= 0) || !Number.isFinite(c.balanceWeight)) throw new Error(`${where}: balanceWeight must be a non-negative number`);
  return c as MixtureConfig;
}

export function newGate(A: number, H: number, o: { device: string; dtype: FloatDType; seed: number }): Tensor {
  return randn([A, H], { std: 0.02, seed: o.seed, device: o.device, dtype: o.dtype });
}

/** One site's routing of N tokens, decided from the gate logits z [N, A]. */
export interface Routing {
  N: number;
  A: number;
  K: number;
  /** Per slot k: each token's adapter, or -1 when capacity dropped it. */
  slots: Int32Array[];
  /** Per slot k: the token's chosen adapter even when dropped (for the gate's gradient). */
  chosen: Int32Array[];
  /** Per slot k: the token's weight (softmax over its k chosen logits). */
  weights: Float32Array[];
  /** The full gate softmax [N, A]. */
  probs: Float32Array;
  /** f_e: the share of tokens whose first choice is e. */
  firstShare: Float64Array;
  /** The load-balancing loss (before balanceWeight). */
  balance: number;
}

export function route(z: Float32Array, N: number, A: number, c: MixtureConfig): Routing {
  const K = Math.min(c.topK, A);
  const capacity = Math.ceil((c.capacityFactor * N * K) / A);
  const probs = new Float32Array(N * A);
  const slots = Array.from({ length: K }, () => new Int32Array(N));
  const chosen = Array.from({ length: K }, () => new Int32Array(N));
  const weights = Array.from({ length: K }, () => new Float32Array(N));
  const load = new Int32Array(A);
  const firstShare = new Float64Array(A);
  const meanP = new Float64Array(A);
  for (let n = 0; n < N; n++) {
    const row = z.subarray(n * A, n * A + A);
    let top = -Infinity;
    for (let e = 0; e < A; e++) top = Math.max(top, row[e]);
    let sum = 0;
    for (let e = 0; e < A; e++) sum += (probs[n * A + e] = Math.exp(row[e] - top));
    for (let e = 0; e < A; e++) meanP[e] += (probs[n * A + e] /= sum) / N;
    // the k largest logits, lowest index first among ties
    const order = Array.from({ length: A }, (_, e) => e).sort((a, b) => row[b] - row[a] || a - b).slice(0, K);
    firstShare[order[0]] += 1 / N;
    const m = Math.max(...order.map((e) => row[e]));
    const ex = order.map((e) => Math.exp(row[e] - m));
    const es = ex.reduce((a, b) => a + b, 0);
    order.forEach((e, k) => {
      chosen[k][n] = e;
      weights[k][n] = ex[k] / es;
      slots[k][n] = load[e] < capacity ? e : -1;
      if (slots[k][n] >= 0) load[e]++;
    });
  }
  let balance = 0;
  for (let e = 0; e < A; e++) balance += firstShare[e] * meanP[e];
  return { N, A, K, slots, chosen, weights, probs, firstShare, balance: A * balance };
}

/**
 * dL/dz [N, A] from r_k[n] = dOut_n · delta_k[n] (the gradient reaching each slot's weight) and the
 * balance loss scaled by balanceWeight.
 */
export function gateGradient(rt: Routing, r: Float32Array[], balanceWeight: number): Float32Array {
  const { N, A, K } = rt;
  const dz = new Float32Array(N * A);
  for (let n = 0; n < N; n++) {
    // through the top-k softmax: dz_j = g_j (r_j − Σ_i g_i r_i) over the chosen adapters
    let mean = 0;
    for (let k = 0; k < K; k++) mean += rt.weights[k][n] * r[k][n];
    for (let k = 0; k < K; k++) dz[n * A + rt.chosen[k][n]] += rt.weights[k][n] * (r[k][n] - mean);
    // through P̄ of the balance loss: dP_{n,e} = w·A·f_e / N, then the full softmax
    if (balanceWeight > 0) {
      let pd = 0;
      for (let e = 0; e < A; e++) pd += rt.probs[n * A + e] * ((balanceWeight * A * rt.firstShare[e]) / N);
      for (let e = 0; e < A; e++) {
        const p = rt.probs[n * A + e];
        dz[n * A + e] += p * ((balanceWeight * A * rt.firstShare[e]) / N - pd);
      }
    }
  }
  return dz;
}
