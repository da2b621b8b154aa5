// The decoder's blocks as forward functions that return their backward (activation gradients
// only: the backbone is frozen, so no weight gradient is ever computed for it). Every tensor they
// make is registered with a Scope, freed when the pass is done.
import { adapterBackward, adapterForward } from '../../methods/bottleneck/functional';
import {
  attention as fusedAttention, attentionBackward as fusedAttentionBackward, gatedActivation, gatedActivationBackward, layerNorm, layerNormBackward, maskedSoftmax,
  maskedSoftmaxBackward, rmsNorm, rmsNormBackward, rope, ropeBackward, transpose12,
} from '../../nn';
import { activation, activationGrad, add, matmul } from '../../ops';
import type { ComposedSite, SiteRun } from '../../adapted/registry';
import { composeSite } from '../../adapted/compose';
import { Scope } from '../../core/scope';
import type { Tensor } from '../../tensor';
import type { DecoderConfig } from './config';

/** A projection in nn.Linear layout: weight [out, in], optional bias [out]. */
export interface Proj { weight: Tensor; bias?: Tensor }
export interface NormWeights { weight: Tensor; bias?: Tensor }

export interface DecoderLayerWeights {
  norm1: NormWeights;
  q: Proj;
  k: Proj;
  v: Proj;
  o: Proj;
  norm2: NormWeights;
  /** The gated MLP's gate (LLaMA family); absent for GPT-2. */
  gate?: Proj;
  up: Proj;
  down: Proj;
}

type Back = (d: Tensor) => Tensor;

/** x · Wᵀ (+ b) for x [..., in]; back: dy → dy · W. */
export function proj(s: Scope, x: Tensor, p: Proj): Tensor {
  const y = s.t(matmul(x, p.weight, { transB: true }));
  return p.bias ? s.t(add(y, p.bias)) : y;
}
const projBack = (s: Scope, dy: Tensor, p: Proj): Tensor => s.t(matmul(dy, p.weight));

/** LayerNorm (GPT-2) or RMSNorm (LLaMA family) over the last dimension. */
export function norm(s: Scope, cfg: DecoderConfig, x: Tensor, n: NormWeights): { out: Tensor; back: Back } {
  if (cfg.norm === 'rms') {
    const r = rmsNorm(x, n.weight, { eps: cfg.eps });
    s.t(r.rstd);
    return {
      out: s.t(r.out),
      back: (d) => {
        const g = rmsNormBackward(d, x, n.weight, r.rstd);
        s.t(g.dWeight);
        return s.t(g.dx);
      },
    };
  }
  const r = layerNorm(x, n.weight, n.bias!, { eps: cfg.eps });
  s.t(r.mean);
  s.t(r.rstd);
  return {
    out: s.t(r.out),
    back: (d) => {
      const g = layerNormBackward(d, x, undefined, n.weight, r.mean, r.rstd);
      s.t(g.dWeight);
      s.t(g.dBias);
      return s.t(g.dx);
    },
  };
}

export interface AttentionRun {
  B: number;
  T: number;
  positions: Tensor;
  keyMask: Tensor;
  invFreq: Tensor | null;
  /** The fused attention op (no [T, T] matrix) instead of matmul + masked softmax + matmul. */
  fused: boolean;
  /** int32 [B, T]: packed sequences, attention kept within each (fused path only). */
  segments?: Tensor;
}

/**
 * Causal self-attention with grouped-query heads, then the output projection: x [B, T, H] → [B, T, H].
 * The G = heads / kv-heads query heads sharing a K/V head are one [G·T, dh] block against that
 * head's [T, dh] (K and V are never copied).
 */
export function attention(s: Scope, cfg: DecoderConfig, x: Tensor, l: DecoderLayerWeights, r: AttentionRun): { out: Tensor; back: Back } {
  const [Hq, Hkv, dh] = [cfg.numHeads, cfg.numKvHeads, cfg.headDim];
  const { B, T } = r;
  const G = Hq / Hkv;
  const scale = 1 / Math.sqrt(dh);
  const view = (t: Tensor, shape: number[]) => s.t(t.reshape(shape));
  let q = view(proj(s, x, l.q), [B, T, Hq, dh]);
  let k = view(proj(s, x, l.k), [B, T, Hkv, dh]);
  const v = view(proj(s, x, l.v), [B, T, Hkv, dh]);
  if (r.invFreq) {
    q = s.t(rope(q, r.positions, r.invFreq));
    k = s.t(rope(k, r.positions, r.invFreq));
  }
  const tokens = (t: Tensor, heads: number) => s.t(transpose12(view(t, [B, heads, T, dh]))); // [B, heads, T, dh] → [B, T, heads, dh]
  const inputGrads = (dq: Tensor, dk: Tensor, dv: Tensor): Tensor => {
    let dqt = tokens(dq, Hq);
    let dkt = tokens(dk, Hkv);
    if (r.invFreq) {
      dqt = s.t(ropeBackward(dqt, r.positions, r.invFreq));
      dkt = s.t(ropeBackward(dkt, r.positions, r.invFreq));
    }
    let dx = projBack(s, view(dqt, [B, T, Hq * dh]), l.q);
    dx = s.t(add(dx, projBack(s, view(dkt, [B, T, Hkv * dh]), l.k)));
    return s.t(add(dx, projBack(s, view(tokens(dv, Hkv), [B, T, Hkv * dh]), l.v)));
  };
  if (r.fused) {
    const [qf, kf, vf] = [s.t(transpose12(q)), s.t(transpose12(k)), s.t(transpose12(v))]; // [B, heads, T, dh]
    const opts = { scale, keyMask: r.keyMask, causal: true, segments: r.segments };
    const a = fusedAttention(qf, kf, vf, opts);
    s.t(a.out);
    s.t(a.lse);
    const out = proj(s, view(s.t(transpose12(a.out)), [B, T, Hq * dh]), l.o);
    return {
      out,
      back: (dOut) => {
        const dctx = s.t(transpose12(view(projBack(s, dOut, l.o), [B, T, Hq, dh])));
        const g = fusedAttentionBackward(qf, kf, vf, a.out, dctx, a.lse, opts);
        return inputGrads(s.t(g.dq), s.t(g.dk), s.t(g.dv));
      },
    };
  }
  const qh = view(s.t(transpose12(q)), [B * Hkv, G * T, dh]);
  const kh = view(s.t(transpose12(k)), [B * Hkv, T, dh]);
  const vh = view(s.t(transpose12(v)), [B * Hkv, T, dh]);
  const scores = view(s.t(matmul(qh, kh, { transB: true })), [B, Hq, T, T]);
  const probs = s.t(maskedSoftmax(scores, { scale, keyMask: r.keyMask, causal: true }));
  const p3 = view(probs, [B * Hkv, G * T, T]);
  const ctx = view(s.t(matmul(p3, vh)), [B, Hq, T, dh]);
  const out = proj(s, view(s.t(transpose12(ctx)), [B, T, Hq * dh]), l.o);
  const back = (dOut: Tensor): Tensor => {
    const dctx = view(s.t(transpose12(view(projBack(s, dOut, l.o), [B, T, Hq, dh]))), [B * Hkv, G * T, dh]);
    const dp = view(s.t(matmul(dctx, vh, { transB: true })), [B, Hq, T, T]);
    const dv = s.t(matmul(p3, dctx, { transA: true })); // [B·Hkv, T, dh]
    const ds = view(s.t(maskedSoftmaxBackward(probs, dp, { scale })), [B * Hkv, G * T, T]);
    const dq = s.t(matmul(ds, kh)); // [B·Hkv, G·T, dh] = [B, Hq, T, dh]
    const dk = s.t(matmul(ds, qh, { transA: true })); // [B·Hkv, T, dh]
    return inputGrads(dq, dk, dv);
  };
  return { out, back };
}

/** GPT-2's act(fc(x)) → proj, or the LLaMA family's down(act(gate(x)) ⊙ up(x)). */
export function mlp(s: Scope, cfg: DecoderConfig, x: Tensor, l: DecoderLayerWeights): { out: Tensor; back: Back } {
  const act = cfg.act;
  if (l.gate) {
    const g = proj(s, x, l.gate);
    const u = proj(s, x, l.up);
    const out = proj(s, s.t(gatedActivation(g, u, act)), l.down);
    return {
      out,
      back: (d) => {
        const r = gatedActivationBackward(projBack(s, d, l.down), g, u, act);
        s.t(r.dGate);
        s.t(r.dUp);
        return s.t(add(projBack(s, r.dGate, l.gate!), projBack(s, r.dUp, l.up)));
      },
    };
  }
  const u = proj(s, x, l.up);
  const out = proj(s, s.t(activation(u, act)), l.down);
  return { out, back: (d) => projBack(s, s.t(activationGrad(u, projBack(s, d, l.down), act)), l.up) };
}

/**
 * The residual around a sub-layer (attention or MLP) with output h and input x, and AdapterHub's
 * bottleneck placement for decoders (its layer_norm argument is None there):
 *   no adapter:              h + x
 *   seq_bn (ln_before):      (h + x) + s·f(h + x)
 *   double_seq_bn:           (h + x) + s·f(h)
 *   par_bn (is_parallel):    (h + x) + s·f(x)
 * back: dOut → { dh, dx }.
 */
export function residual(s: Scope, h: Tensor, x: Tensor, ad: SiteRun | ComposedSite | null): { out: Tensor; back: (d: Tensor) => { dh: Tensor; dx: Tensor } } {
  // a composition (lib/adapted/compose.ts), run as AdapterHub runs it without a layer norm at the site
  if (ad && 'setup' in ad) return composeSite(s, ad.setup, h, x, null, ad.ctx);
  const sum = s.t(add(h, x));
  if (!ad) return { out: sum, back: (d) => ({ dh: d, dx: d }) };
  const run = (input: Tensor, res?: Tensor) => {
    const r = adapterForward(input, ad.weights, {
      activation: ad.activation, scaling: ad.scaling, residual: res,
      dropout: ad.dropout?.p ?? 0, seed: ad.dropout?.seed ?? 0, training: !!ad.dropout,
    });
    s.t(r.out);
    s.t(r.saved.hPre);
    return r;
  };
  const grads = (d: Tensor, saved: ReturnType<typeof run>['saved']): Tensor => {
    const g = adapterBackward(d, saved);
    for (const t of [g.dx, g.dDownWeight, g.dDownBias, g.dUpWeight, g.dUpBias, g.dScaling]) if (t) s.t(t);
    ad.accumulate?.(g);
    return g.dx;
  };
  if (ad.config.is_parallel) {
    const a = run(x, sum);
    return { out: a.out, back: (d) => ({ dh: d, dx: s.t(add(d, grads(d, a.saved))) }) };
  }
  if (ad.config.original_ln_before) {
    const a = run(sum); // the residual is the adapter's own input: dx includes dOut
    return {
      out: a.out,
      back: (d) => {
        const dz = grads(d, a.saved);
        return { dh: dz, dx: dz };
      },
    };
  }
  const a = run(h, sum);
  return { out: a.out, back: (d) => ({ dh: s.t(add(d, grads(d, a.saved))), dx: d }) };
}
