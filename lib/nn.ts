// Transformer building blocks with their backward passes: LayerNorm (with a fused
// residual add), masked attention softmax, head split/merge, embeddings, dropout and
// cross-entropy. Each runs on the device its inputs live on; storage may be float32,
// bfloat16 or float16, the arithmetic is fp32.
import { native } from './backend';
import { handle, Tensor } from './tensor';
import type { ActivationName } from './ops';

export interface LayerNormResult {
  /** LayerNorm(x + residual): the dtype and shape of x. */
  out: Tensor;
  /** fp32 [...x.shape[:-1]]: the row means, kept for the backward. */
  mean: Tensor;
  /** fp32 [...x.shape[:-1]]: 1 / sqrt(var + eps) per row, kept for the backward. */
  rstd: Tensor;
}

export interface LayerNormGradients {
  /** Gradient w.r.t. x, and equally w.r.t. the residual (x + residual feeds the norm). */
  dx: Tensor;
  /** fp32 [H]. */
  dWeight: Tensor;
  /** fp32 [H]. */
  dBias: Tensor;
}

/**
 * out = LayerNorm(x + residual) over the last dimension H: (v - mean)·rstd·weight + bias.
 * weight, bias: [H] of x's dtype; residual (optional): x's shape; eps defaults to 1e-12.
 */
export function layerNorm(
  x: Tensor, weight: Tensor, bias: Tensor, opts: { eps?: number; residual?: Tensor } = {},
): LayerNormResult {
  const op = 'layerNorm';
  const res = opts.residual === undefined ? undefined : handle(opts.residual, op, 'residual');
  const r = native().layerNorm(handle(x, op, 'x'), handle(weight, op, 'weight'), handle(bias, op, 'bias'),
    opts.eps ?? 1e-12, res);
  return { out: new Tensor(r.out), mean: new Tensor(r.mean), rstd: new Tensor(r.rstd) };
}

/** Backward of layerNorm from dOut, with the forward's inputs and its mean/rstd. */
export function layerNormBackward(
  dOut: Tensor, x: Tensor, residual: Tensor | undefined, weight: Tensor, mean: Tensor, rstd: Tensor,
): LayerNormGradients {
  const op = 'layerNormBackward';
  const res = residual == null ? undefined : handle(residual, op, 'residual');
  const r = native().layerNormBackward(handle(dOut, op, 'dOut'), handle(x, op, 'x'), res, handle(weight, op, 'weight'),
    handle(mean, op, 'mean'), handle(rstd, op, 'rstd'));
  return { dx: new Tensor(r.dx), dWeight: new Tensor(r.dWeight), dBias: new Tensor(r.dBias) };
}

/**
 * Attention probabilities: softmax(scale·scores) over the last dimension.
 * scores [B, NH, Tq, Tk] (any [..., Tk] without keyMask); keyMask [B, Tk] (any dtype,
 * nonzero = attend, 0 = padding): masked keys get probability exactly 0, and a row whose
 * keys are all masked is all zeros. causal: query q (of the last Tq) sees keys k ≤ q + Tk − Tq
 * only (decoders; Tq = Tk without a cache).
 */
export function maskedSoftmax(scores: Tensor, opts: { scale?: number; keyMask?: Tensor; causal?: boolean } = {}): Tensor {
  const op = 'maskedSoftmax';
  const mask = opts.keyMask === undefined ? undefined : handle(opts.keyMask, op, 'keyMask');
  return new Tensor(native().maskedSoftmax(handle(scores, op, 'scores'), opts.scale ?? 1, mask, !!opts.causal));
}

/** dScores = scale · probs ⊙ (dProbs − Σ_k probs·dProbs): the gradient w.r.t. the unscaled scores. */
export function maskedSoftmaxBackward(probs: Tensor, dProbs: Tensor, opts: { scale?: number } = {}): Tensor {
  const op = 'maskedSoftmaxBackward';
  return new Tensor(native().maskedSoftmaxBackward(handle(probs, op, 'probs'), handle(dProbs, op, 'dProbs'),
    opts.scale ?? 1));
}

/** [A, B, C, D] → [A, C, B, D]: head split [B, T, NH, dh] → [B, NH, T, dh] and merge back. Any dtype. */
export function transpose12(x: Tensor): Tensor {
  return new Tensor(native().transpose12(handle(x, 'transpose12', 'x')));
}

/** Rows of table [V, H] picked by int32 ids of any shape → [...ids.shape, H] of the table's dtype. */
export function embedding(table: Tensor, ids: Tensor): Tensor {
  return new Tensor(native().embedding(handle(table, 'embedding', 'table'), handle(ids, 'embedding', 'ids')));
}

/** dTable fp32 [numEmbeddings, H]: the dOut rows [...ids.shape, H] summed into their ids (deterministic). */
export function embeddingBackward(dOut: Tensor, ids: Tensor, numEmbeddings: number): Tensor {
  const op = 'embeddingBackward';
  return new Tensor(native().embeddingBackward(handle(dOut, op, 'dOut'), handle(ids, op, 'ids'), numEmbeddings));
}

/**
 * Philox dropout: element i is kept iff philoxWord(seed, 1, i) ≥ p·2³², and kept ones are
 * scaled by 1/(1 − p). p in [0, 1); seed a non-negative integer. Same mask on CPU and CUDA.
 */
export function dropout(x: Tensor, p: number, seed: number): Tensor {
  return new Tensor(native().dropout(handle(x, 'dropout', 'x'), p, seed));
}

/** Backward of dropout(x, p, seed): dOut through the same mask and scale. */
export function dropoutBackward(dOut: Tensor, p: number, seed: number): Tensor {
  return new Tensor(native().dropoutBackward(handle(dOut, 'dropoutBackward', 'dOut'), p, seed));
}

export interface CrossEntropyResult {
  /** fp32 [1]: the mean loss over counted rows (0 when every row is ignored). */
  loss: Tensor;
  /** logits' dtype and shape: (softmax − onehot) / count on counted rows, 0 on ignored ones. */
  dLogits: Tensor;
}

/**
 * Mean softmax cross-entropy of logits [B, C] against int32 labels [B], and its gradient, in
 * one pass. Rows whose label equals ignoreIndex (default −100) are left out of the mean.
 */
export function softmaxCrossEntropy(
  logits: Tensor, labels: Tensor, opts: { ignoreIndex?: number } = {},
): CrossEntropyResult {
  const op = 'softmaxCrossEntropy';
  const r = native().softmaxCrossEntropy(handle(logits, op, 'logits'), handle(labels, op, 'labels'),
    opts.ignoreIndex ?? -100);
  return { loss: new Tensor(r.loss), dLogits: new Tensor(r.dLogits) };
}

// ---- decoder blocks ----

export interface RmsNormResult {
  /** weight ⊙ (x · rstd): the dtype and shape of x. */
  out: Tensor;
  /** fp32 [...x.shape[:-1]]: 1 / sqrt(mean(x²) + eps) per row, kept for the backward. */
  rstd: Tensor;
}

/** RMSNorm over the last dimension H (LLaMA, Mistral, Qwen2): weight [H] of x's dtype; eps defaults to 1e-6. */
export function rmsNorm(x: Tensor, weight: Tensor, opts: { eps?: number } = {}): RmsNormResult {
  const op = 'rmsNorm';
  const r = native().rmsNorm(handle(x, op, 'x'), handle(weight, op, 'weight'), opts.eps ?? 1e-6);
  return { out: new Tensor(r.out), rstd: new Tensor(r.rstd) };
}

/** Backward of rmsNorm: dx (x's dtype) and dWeight (fp32 [H]). */
export function rmsNormBackward(dOut: Tensor, x: Tensor, weight: Tensor, rstd: Tensor): { dx: Tensor; dWeight: Tensor } {
  const op = 'rmsNormBackward';
  const r = native().rmsNormBackward(handle(dOut, op, 'dOut'), handle(x, op, 'x'), handle(weight, op, 'weight'), handle(rstd, op, 'rstd'));
  return { dx: new Tensor(r.dx), dWeight: new Tensor(r.dWeight) };
}

/**
 * Rotary position embedding, transformers' rotate-half layout: x [..., heads, D] with int32
 * positions [...] (one per token), invFreq fp32 [rot/2] (rot ≤ D even; the first rot dims of each
 * head rotate, the rest pass through). angle_i = position · invFreq[i].
 */
export function rope(x: Tensor, positions: Tensor, invFreq: Tensor): Tensor {
  const op = 'rope';
  return new Tensor(native().rope(handle(x, op, 'x'), handle(positions, op, 'positions'), handle(invFreq, op, 'invFreq'), false));
}

/** Backward of rope: dx = the rotation by −angle of dOut. */
export function ropeBackward(dOut: Tensor, positions: Tensor, invFreq: Tensor): Tensor {
  const op = 'ropeBackward';
  return new Tensor(native().rope(handle(dOut, op, 'dOut'), handle(positions, op, 'positions'), handle(invFreq, op, 'invFreq'), true));
}

export interface AttentionOptions {
  /** [B, Tk] (any dtype, nonzero = attend). */
  keyMask?: Tensor;
  /** Default 1/√D. */
  scale?: number;
  /** Query i (of the last Tq) sees keys j ≤ i + Tk − Tq only. */
  causal?: boolean;
  /** int32 [B, T] (Tq = Tk): packed sequences; query i sees key j only within its own segment. */
  segments?: Tensor;
  /**
   * A KV cache (forward only): k and v are [B, Hkv, Tmax, D] buffers of which the first kvLength rows
   * per head are filled; keyMask is then [B, Tmax].
   */
  kvLength?: number;
}

/**
 * Fused scaled-dot-product attention without a [Tq, Tk] matrix in memory: q [B, Hq, Tq, D], k and v
 * [B, Hkv, Tk, D] (grouped-query: query head h uses K/V head h / (Hq / Hkv)). Returns out [B, Hq, Tq, D]
 * and lse fp32 [B, Hq, Tq] (log Σ exp of the scaled scores; −∞ and a zero row when a query sees no key),
 * kept for the backward. On CUDA D ≤ 128.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): { out: Tensor; lse: Tensor } {
  const op = 'attention';
  const mask = opts.keyMask === undefined ? null : handle(opts.keyMask, op, 'keyMask');
  const seg = opts.segments === undefined ? undefined : handle(opts.segments, op, 'segments');
  const r = native().attention(handle(q, op, 'q'), handle(k, op, 'k'), handle(v, op, 'v'), mask, opts.scale, !!opts.causal, seg, opts.kvLength);
  return { out: new Tensor(r.out), lse: new Tensor(r.lse) };
}

/** Backward of attention from dOut, with the forward's inputs, out and lse: dq, dk, dv (dk, dv summed over shared heads). */
export function attentionBackward(
  q: Tensor, k: Tensor, v: Tensor, out: Tensor, dOut: Tensor, lse: Tensor, opts: AttentionOptions = {},
): { dq: Tensor; dk: Tensor; dv: Tensor } {
  const op = 'attentionBackward';
  const mask = opts.keyMask === undefined ? null : handle(opts.keyMask, op, 'keyMask');
  const r = native().attentionBackward(handle(q, op, 'q'), handle(k, op, 'k'), handle(v, op, 'v'), handle(out, op, 'out'),
    handle(dOut, op, 'dOut'), handle(lse, op, 'lse'), mask, opts.scale, !!opts.causal,
    opts.segments === undefined ? undefined : handle(opts.segments, op, 'segments'));
  return { dq: new Tensor(r.dq), dk: new Tensor(r.dk), dv: new Tensor(r.dv) };
}

/** The gated MLP's middle: act(gate) ⊙ up (SwiGLU with act = 'silu'), elementwise; gate and up of one shape and dtype. */
export function gatedActivation(gate: Tensor, up: Tensor, act: ActivationName = 'silu'): Tensor {
  const op = 'gatedActivation';
  return new Tensor(native().gatedActivation(handle(gate, op, 'gate'), handle(up, op, 'up'), act));
}

/** Backward of gatedActivation: dGate = dOut ⊙ up ⊙ act′(gate), dUp = dOut ⊙ act(gate). */
export function gatedActivationBackward(dOut: Tensor, gate: Tensor, up: Tensor, act: ActivationName = 'silu'): { dGate: Tensor; dUp: Tensor } {
  const op = 'gatedActivationBackward';
  const r = native().gatedActivationBackward(handle(dOut, op, 'dOut'), handle(gate, op, 'gate'), handle(up, op, 'up'), act);
  return { dGate: new Tensor(r.dGate), dUp: new Tensor(r.dUp) };
}

/** KV cache write, in place: rows offset..offset+n of each head of cache [B, H, Tmax, D] take src [B, H, n, D]. */
export function cacheWrite(cache: Tensor, src: Tensor, offset: number): void {
  const op = 'cacheWrite';
  native().cacheWrite(handle(cache, op, 'cache'), handle(src, op, 'src'), offset);
}

/** Options of fusionAttention: BertFusion's temperature (≥ 1) and, in training, dropout on the scores. */
export interface FusionAttentionOptions { temperature?: number; dropout?: number; seed?: number }

/**
 * AdapterFusion's attention over A adapter outputs per token (definition in native/fusion.h):
 * out_n = Σ_i softmax_i(q_n·k_{n,i} / T) · v_{n,i}. q [N, H]; k, v [N, A, H]; probs fp32 [N, A].
 */
export function fusionAttention(q: Tensor, k: Tensor, v: Tensor, opts: FusionAttentionOptions = {}): { out: Tensor; probs: Tensor } {
  const op = 'fusionAttention';
  const r = native().fusionAttention(handle(q, op, 'q'), handle(k, op, 'k'), handle(v, op, 'v'), opts.temperature ?? 1, opts.dropout ?? 0, opts.seed ?? 0);
  return { out: new Tensor(r.out), probs: new Tensor(r.probs) };
}

/** Backward of fusionAttention from dOut, with its inputs, probs and the same options. */
export function fusionAttentionBackward(
  dOut: Tensor, q: Tensor, k: Tensor, v: Tensor, probs: Tensor, opts: FusionAttentionOptions = {},
): { dq: Tensor; dk: Tensor; dv: Tensor } {
  const op = 'fusionAttentionBackward';
  const r = native().fusionAttentionBackward(handle(dOut, op, 'dOut'), handle(q, op, 'q'), handle(k, op, 'k'), handle(v, op, 'v'),
    handle(probs, op, 'probs'), opts.temperature ?? 1, opts.dropout ?? 0, opts.seed ?? 0);
  return { dq: new Tensor(r.dq), dk: new Tensor(r.dk), dv: new Tensor(r.dv) };
}
