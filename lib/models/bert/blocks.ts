// The encoder's building blocks as forward functions that return their backward:
// linear (frozen), multi-head attention with the padding mask, the AdapterHub output
// block (dense output + residual + LayerNorm, with a bottleneck adapter placed as the
// config says), and a post-LN transformer layer. Backward closures capture what they
// need; every tensor they make is registered with a Scope.
import { adapterBackward, adapterForward, adapterForwardBatched, AdapterSaved, AdapterWeights, Activation, StackedAdapterWeights } from '../../methods/bottleneck/functional';
import { layerNorm, layerNormBackward, maskedSoftmax, maskedSoftmaxBackward, transpose12, dropout, dropoutBackward } from '../../nn';
import { activation, activationGrad, add, matmul } from '../../ops';
import { Tensor } from '../../tensor';
import type { BnConfig } from '../../methods/bottleneck/config';
import type { Probe } from '../../core/finite';
import { Scope } from '../../core/scope';
import type { ComposedSite, SiteRun } from '../../adapted/registry';
import { composeSite } from '../../adapted/compose';

export interface Linear { weight: Tensor; bias: Tensor } // [out, in], [out]
export interface Norm { weight: Tensor; bias: Tensor }
/** Receives a LayerNorm's weight and bias gradients when LayerNorms are trained. */
export type LnAccumulate = (ln: Norm, dWeight: Tensor, dBias: Tensor) => void;

export function linear(s: Scope, x: Tensor, l: Linear): Tensor {
  const y = s.t(matmul(x, l.weight, { transB: true }));
  return s.t(add(y, l.bias));
}

/** dx of a frozen linear: dy · W. */
export function linearBackward(s: Scope, dy: Tensor, l: Linear): Tensor {
  return s.t(matmul(dy, l.weight));
}

export interface Dropout { p: number; seed: number }

export type { Probe };


function maybeDropout(s: Scope, x: Tensor, d: Dropout | null): Tensor {
  return d && d.p > 0 ? s.t(dropout(x, d.p, d.seed)) : x;
}

function maybeDropoutBackward(s: Scope, dy: Tensor, d: Dropout | null): Tensor {
  return d && d.p > 0 ? s.t(dropoutBackward(dy, d.p, d.seed)) : dy;
}

export interface AttentionWeights { q: Linear; k: Linear; v: Linear }

/** Multi-head self-attention: ctx [B, T, H] and its backward (dctx → dx). */
export function attention(
  s: Scope, x: Tensor, w: AttentionWeights, numHeads: number, keyMask: Tensor, drop: Dropout | null, probe?: Probe,
): { ctx: Tensor; back: (dctx: Tensor) => Tensor } {
  const [B, T, H] = x.shape;
  const dh = H / numHeads;
  const scale = 1 / Math.sqrt(dh);
  const view = (t: Tensor, shape: number[]) => s.t(t.reshape(shape));
  const split = (t: Tensor) => view(s.t(transpose12(view(t, [B, T, numHeads, dh]))), [B * numHeads, T, dh]);
  const merge = (t: Tensor) => view(s.t(transpose12(view(t, [B, numHeads, T, dh]))), [B, T, H]);
  const see = (op: string, t: Tensor) => (probe?.(op, t), t);
  const q = split(see('attention.self.query', linear(s, x, w.q)));
  const k = split(see('attention.self.key', linear(s, x, w.k)));
  const v = split(see('attention.self.value', linear(s, x, w.v)));
  const scores = see('attention.self (scores q·kᵀ)', view(s.t(matmul(q, k, { transB: true })), [B, numHeads, T, T]));
  const probs = see('attention.self (softmax)', s.t(maskedSoftmax(scores, { scale, keyMask })));
  const pd = view(maybeDropout(s, probs, drop), [B * numHeads, T, T]);
  const ctx = see('attention.self (context)', merge(s.t(matmul(pd, v))));
  const back = (dctx: Tensor): Tensor => {
    const dc = split(dctx);
    const dpd = s.t(matmul(dc, v, { transB: true }));
    const dv = s.t(matmul(pd, dc, { transA: true }));
    const dprobs = view(maybeDropoutBackward(s, dpd, drop), [B, numHeads, T, T]);
    const dscores = view(s.t(maskedSoftmaxBackward(probs, dprobs, { scale })), [B * numHeads, T, T]);
    const dq = s.t(matmul(dscores, k));
    const dk = s.t(matmul(dscores, q, { transA: true }));
    let dx = linearBackward(s, merge(dq), w.q);
    dx = s.t(add(dx, linearBackward(s, merge(dk), w.k)));
    return s.t(add(dx, linearBackward(s, merge(dv), w.v)));
  };
  return { ctx, back };
}

/** One adapter at one site, ready to run (lib/adapted/registry.ts), or several served at once. */
export interface SiteAdapter extends SiteRun {
  /** Serving several adapters at once: token row n uses adapter rows[n] of the stack (-1: none). Forward only. */
  batched?: { weights: StackedAdapterWeights; rows: Int32Array; scales: number[] };
}

/**
 * The sub-layer output with AdapterHub's bottleneck placement; h is the dense output
 * (after dropout), x the sub-layer input, ln the sub-layer's own LayerNorm:
 *   no adapter:                 LN(h + x)
 *   is_parallel (par_bn):       LN(h + s·f(x) + x)
 *   original_ln_before (seq_bn): LN(s·f(LN(h + x)) + h + x)
 *   otherwise (double_seq_bn):  LN(s·f(h) + h + x)
 */
export function outputBlock(
  s: Scope, h: Tensor, x: Tensor, ln: Norm, eps: number, ad: SiteAdapter | ComposedSite | null, lnGrad?: LnAccumulate,
  probe?: { see: Probe; site: string },
): { out: Tensor; back: (dOut: Tensor) => { dh: Tensor; dx: Tensor } } {
  if (ad && 'setup' in ad) return composedBlock(s, h, x, ln, eps, ad, lnGrad, probe);
  const see = <T extends { out: Tensor }>(op: string, r: T): T => (probe?.see(`${probe.site}.${op}`, r.out), r);
  const run = (input: Tensor, residual?: Tensor): { out: Tensor; saved: AdapterSaved } => {
    if (ad!.batched) {
      const b = ad!.batched;
      const [B, T, H] = input.shape;
      const flat = (t: Tensor) => s.t(t.reshape([B * T, H]));
      const r = adapterForwardBatched(flat(input), b.weights, b.rows, {
        activation: ad!.activation, scaling: b.scales, residual: residual ? flat(residual) : undefined,
      });
      s.t(r.out);
      const saved = null as unknown as AdapterSaved; // no backward with per-row adapters
      return { out: s.t(r.out.reshape([B, T, H])), saved };
    }
    const r = adapterForward(input, ad!.weights, {
      activation: ad!.activation, scaling: ad!.scaling, residual,
      dropout: ad!.dropout?.p ?? 0, seed: ad!.dropout?.seed ?? 0, training: !!ad!.dropout,
    });
    s.t(r.out);
    s.t(r.saved.hPre);
    return r;
  };
  const grads = (dOut: Tensor, saved: AdapterSaved): Tensor => {
    if (!saved) throw new Error('backward: not available after a forward with per-row adapters (serving only)');
    const g = adapterBackward(dOut, saved);
    for (const t of [g.dx, g.dDownWeight, g.dDownBias, g.dUpWeight, g.dUpBias, g.dScaling]) if (t) s.t(t);
    ad!.accumulate?.(g); // copies what it keeps: the scope frees these
    return g.dx;
  };
  const finalLn = (a: Tensor) => {
    const n = layerNorm(a, ln.weight, ln.bias, { eps, residual: x });
    s.t(n.out); s.t(n.mean); s.t(n.rstd);
    return n;
  };
  const lnBack = (dOut: Tensor, a: Tensor, res: Tensor, n: { mean: Tensor; rstd: Tensor }) => {
    const g = layerNormBackward(dOut, a, res, ln.weight, n.mean, n.rstd);
    s.t(g.dWeight);
    s.t(g.dBias);
    lnGrad?.(ln, g.dWeight, g.dBias); // trained LayerNorms only; it copies what it keeps
    return s.t(g.dx);
  };

  if (!ad) {
    const n = see('LayerNorm', finalLn(h));
    return { out: n.out, back: (dOut) => { const g = lnBack(dOut, h, x, n); return { dh: g, dx: g }; } };
  }
  if (ad.config.is_parallel) {
    const a = see('adapters (parallel bottleneck)', run(x, h));
    const n = see('LayerNorm', finalLn(a.out));
    return {
      out: n.out,
      back: (dOut) => {
        const g = lnBack(dOut, a.out, x, n);
        const throughAdapter = grads(g, a.saved);
        return { dh: g, dx: s.t(add(g, throughAdapter)) };
      },
    };
  }
  if (ad.config.original_ln_before) {
    const pre = layerNorm(h, ln.weight, ln.bias, { eps, residual: x });
    s.t(pre.out); s.t(pre.mean); s.t(pre.rstd);
    see('LayerNorm (before the adapter)', pre);
    const a = see('adapters (bottleneck)', run(pre.out, h));
    const n = see('LayerNorm', finalLn(a.out));
    return {
      out: n.out,
      back: (dOut) => {
        const g = lnBack(dOut, a.out, x, n);
        const dy = grads(g, a.saved);
        const g2 = lnBack(dy, h, x, pre);
        const both = s.t(add(g, g2));
        return { dh: both, dx: both };
      },
    };
  }
  const a = see('adapters (bottleneck)', run(h));
  const n = see('LayerNorm', finalLn(a.out));
  return {
    out: n.out,
    back: (dOut) => {
      const g = lnBack(dOut, a.out, x, n);
      return { dh: grads(g, a.saved), dx: g };
    },
  };
}

/** The output block under a composition of adapters (lib/adapted/compose.ts), the site's LayerNorm included. */
function composedBlock(
  s: Scope, h: Tensor, x: Tensor, ln: Norm, eps: number, ad: ComposedSite, lnGrad?: LnAccumulate,
  probe?: { see: Probe; site: string },
): { out: Tensor; back: (dOut: Tensor) => { dh: Tensor; dx: Tensor } } {
  const norm = { weight: ln.weight, bias: ln.bias, eps, grad: lnGrad && ((dW: Tensor, dB: Tensor) => lnGrad(ln, dW, dB)) };
  const r = composeSite(s, ad.setup, h, x, norm, ad.ctx);
  probe?.see(`${probe.site}.adapters (${ad.setup}) and LayerNorm`, r.out);
  return r;
}

export interface LayerWeights {
  attn: AttentionWeights;
  attnOut: Linear;
  attnLn: Norm;
  inter: Linear;
  out: Linear;
  outLn: Norm;
}

export interface LayerRun {
  numHeads: number;
  eps: number;
  act: Activation;
  keyMask: Tensor;
  /** Dropout per site when training, else null. */
  dropout: { attnProbs: Dropout | null; attnOut: Dropout | null; ffnOut: Dropout | null };
  mh: SiteAdapter | ComposedSite | null;
  output: SiteAdapter | ComposedSite | null;
  lnGrad?: LnAccumulate;
  probe?: Probe;
}

/**
 * A post-LN encoder layer (BERT, RoBERTa, DistilBERT): out and its backward (dOut → dx).
 * back(dOut, false) only collects the adapters' gradients and skips the rest (returns null):
 * for the lowest adapted layer nothing below needs a gradient.
 */
export function encoderLayer(
  s: Scope, x: Tensor, w: LayerWeights, run: LayerRun,
): { out: Tensor; back: (dOut: Tensor, needDx?: boolean) => Tensor | null } {
  const see = (op: string, t: Tensor) => (run.probe?.(op, t), t);
  const site = (name: string) => (run.probe ? { see: run.probe, site: name } : undefined);
  const att = attention(s, x, w.attn, run.numHeads, run.keyMask, run.dropout.attnProbs, run.probe);
  const h = maybeDropout(s, see('attention.output.dense', linear(s, att.ctx, w.attnOut)), run.dropout.attnOut);
  const A = outputBlock(s, h, x, w.attnLn, run.eps, run.mh, run.lnGrad, site('attention.output'));
  const u = see('intermediate.dense', linear(s, A.out, w.inter));
  const I = see(`intermediate (${run.act})`, s.t(activation(u, run.act)));
  const h2 = maybeDropout(s, see('output.dense', linear(s, I, w.out)), run.dropout.ffnOut);
  const B = outputBlock(s, h2, A.out, w.outLn, run.eps, run.output, run.lnGrad, site('output'));
  const back = (dOut: Tensor, needDx = true): Tensor | null => {
    const b = B.back(dOut);
    if (!needDx && !run.mh) return null;
    const dh2 = maybeDropoutBackward(s, b.dh, run.dropout.ffnOut);
    const du = s.t(activationGrad(u, linearBackward(s, dh2, w.out), run.act));
    const dA = s.t(add(b.dx, linearBackward(s, du, w.inter)));
    const a = A.back(dA);
    if (!needDx) return null;
    const dh = maybeDropoutBackward(s, a.dh, run.dropout.attnOut);
    const dxAtt = att.back(linearBackward(s, dh, w.attnOut));
    return s.t(add(a.dx, dxAtt));
  };
  return { out: B.out, back };
}
