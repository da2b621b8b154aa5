// A frozen decoder-only language model (GPT-2, LLaMA family): token ids → logits over the
// vocabulary, and the causal-LM loss on labels (-100 ignored), as transformers computes them.
//
//   GPT-2:  x = wte[ids] + wpe[pos];  per layer  x += o(attn(LN₁ x)),  x += down(gelu_tanh(up(LN₂ x)))
//   LLaMA:  x = embed[ids];           per layer  x += o(attn(RMS₁ x)), x += down(silu(gate(RMS₂ x)) ⊙ up(RMS₂ x))
//   then the final norm and logits = x · lm_headᵀ.
//
// Attention is causal with the padding mask, rotary embeddings (LLaMA family) at each token's
// position, and grouped-query heads: the G = heads / kv-heads query heads that share a K/V head
// are laid out as one [G·T, dh] block against that head's [T, dh], so K and V are never copied.
// Positions default to the count of real tokens before each one (left padding is invisible).
import { layerNorm, maskedSoftmax, rmsNorm, rope, softmaxCrossEntropy, transpose12, embedding } from '../../nn';
import { activation, add, matmul, mul } from '../../ops';
import { FloatDType, Tensor, tensor } from '../../tensor';
import { Scope } from '../../backbone/scope';
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

export interface DecoderWeights {
  tokens: Tensor;
  /** Learned positions (GPT-2). */
  positions?: Tensor;
  layers: DecoderLayerWeights[];
  finalNorm: NormWeights;
  /** [vocab, hidden]; the token embedding itself when tied. */
  lmHead: Tensor;
  /** Every loaded tensor by its checkpoint name. */
  all: Map<string, Tensor>;
}

export interface DecoderInputs {
  /** [B][T] token ids. */
  inputIds: number[][];
  /** [B][T] 1 for real tokens, 0 for padding (default: all 1). */
  attentionMask?: number[][];
  /** [B][T] positions (default: the number of real tokens before each token). */
  positionIds?: number[][];
}

export interface DecoderForwardOptions {
  /** [B][T] target ids for the causal-LM loss (shifted inside: position t predicts labels[t+1]); -100 is ignored. */
  labels?: number[][];
}

export class DecoderOutput {
  /** [B, T, vocab] (float32 on the CPU; the model's dtype on CUDA). */
  logits: Tensor;
  /** fp32 [1]: the mean cross-entropy over the labels that count. */
  loss?: Tensor;
  constructor(logits: Tensor) {
    this.logits = logits;
  }
  get lossValue(): number | undefined {
    return this.loss?.toArray()[0];
  }
  dispose(): void {
    this.logits.dispose();
    this.loss?.dispose();
  }
}

function rows(a: number[][] | undefined, what: string, B?: number, T?: number): { data: number[]; B: number; T: number } {
  if (!Array.isArray(a) || !a.length || !a.every((r) => Array.isArray(r)))
    throw new Error(`forward: ${what} must be a non-empty array of rows (number[][])`);
  const t = a[0].length;
  if (!t || a.some((r) => r.length !== t)) throw new Error(`forward: ${what} rows must all have the same, non-zero length (pad them)`);
  if ((B !== undefined && a.length !== B) || (T !== undefined && t !== T))
    throw new Error(`forward: ${what} is [${a.length}, ${t}], the input ids are [${B}, ${T}]`);
  return { data: a.flat(), B: a.length, T: t };
}

export class Decoder {
  readonly config: DecoderConfig;
  readonly weights: DecoderWeights;
  readonly device: string;
  readonly dtype: FloatDType;
  /** sha256 of the weights as stored (names and bytes). */
  readonly weightHash: string;
  readonly modelName: string;
  readonly dir?: string;
  private readonly invFreq: Tensor | null;

  constructor(config: DecoderConfig, weights: DecoderWeights, o: { device: string; dtype: FloatDType; weightHash?: string; modelName?: string; dir?: string }) {
    this.config = config;
    this.weights = weights;
    this.device = o.device;
    this.dtype = o.dtype;
    this.weightHash = o.weightHash ?? '';
    this.modelName = o.modelName ?? config.modelType;
    this.dir = o.dir;
    this.invFreq = config.rope ? tensor(config.rope.invFreq, [config.rope.invFreq.length], { device: o.device }) : null;
  }

  /** Parameters of the frozen model (tied tensors counted once). */
  parameterCount(): number {
    let n = 0;
    for (const t of new Set(this.weights.all.values())) n += t.size;
    return n;
  }

  forward(inputs: DecoderInputs, opts: DecoderForwardOptions = {}): DecoderOutput {
    const s = new Scope();
    try {
      return this.run(s, inputs, opts);
    } finally {
      s.dispose();
    }
  }

  private run(s: Scope, inputs: DecoderInputs, opts: DecoderForwardOptions): DecoderOutput {
    const cfg = this.config;
    const dev = this.device;
    const ids = rows(inputs?.inputIds, 'inputIds');
    const { B, T } = ids;
    for (const id of ids.data)
      if (!Number.isInteger(id) || id < 0 || id >= cfg.vocabSize) throw new Error(`forward: token id ${id} is outside [0, ${cfg.vocabSize})`);
    const mask = inputs.attentionMask ? rows(inputs.attentionMask, 'attentionMask', B, T).data : new Array(B * T).fill(1);
    let pos: number[];
    if (inputs.positionIds) pos = rows(inputs.positionIds, 'positionIds', B, T).data;
    else {
      pos = new Array(B * T);
      for (let b = 0; b < B; b++) for (let t = 0, n = 0; t < T; t++) pos[b * T + t] = mask[b * T + t] ? n++ : Math.max(0, n - 1);
    }
    const maxPos = cfg.family === 'gpt2' ? cfg.maxPositions : Number.MAX_SAFE_INTEGER;
    for (const p of pos) if (!Number.isInteger(p) || p < 0 || p >= maxPos) throw new Error(`forward: position ${p} is outside [0, ${maxPos})`);
    if (cfg.slidingWindow !== null && T > cfg.slidingWindow)
      throw new Error(`forward: ${T} tokens exceed the sliding window of ${cfg.slidingWindow} (config.json sliding_window), which is not supported`);

    const idsT = s.t(tensor(ids.data, [B, T], { dtype: 'int32', device: dev }));
    const posT = s.t(tensor(pos, [B, T], { dtype: 'int32', device: dev }));
    const keyMask = s.t(tensor(mask, [B, T], { device: dev }));
    const w = this.weights;
    let x = s.t(embedding(w.tokens, idsT));
    if (w.positions) x = s.t(add(x, s.t(embedding(w.positions, posT))));
    for (const l of w.layers) {
      x = s.t(add(x, this.attention(s, this.norm(s, x, l.norm1), l, posT, keyMask, B, T)));
      const m = this.norm(s, x, l.norm2);
      const hidden = l.gate
        ? s.t(mul(s.t(activation(proj(s, m, l.gate), cfg.act)), proj(s, m, l.up)))
        : s.t(activation(proj(s, m, l.up), cfg.act));
      x = s.t(add(x, proj(s, hidden, l.down)));
    }
    const h = this.norm(s, x, w.finalNorm);
    const logits = matmul(h, w.lmHead, { transB: true }); // [B, T, V], owned by the output
    const out = new DecoderOutput(logits);
    if (opts.labels) out.loss = this.loss(s, logits, rows(opts.labels, 'labels', B, T).data, B, T);
    return out;
  }

  private norm(s: Scope, x: Tensor, n: NormWeights): Tensor {
    const eps = this.config.eps;
    if (this.config.norm === 'rms') {
      const r = rmsNorm(x, n.weight, { eps });
      s.t(r.rstd);
      return s.t(r.out);
    }
    const r = layerNorm(x, n.weight, n.bias!, { eps });
    s.t(r.mean);
    s.t(r.rstd);
    return s.t(r.out);
  }

  /** Causal self-attention with grouped-query heads; x [B, T, H] → [B, T, H] after o. */
  private attention(s: Scope, x: Tensor, l: DecoderLayerWeights, pos: Tensor, keyMask: Tensor, B: number, T: number): Tensor {
    const cfg = this.config;
    const [Hq, Hkv, dh] = [cfg.numHeads, cfg.numKvHeads, cfg.headDim];
    const G = Hq / Hkv;
    const view = (t: Tensor, shape: number[]) => s.t(t.reshape(shape));
    let q = view(proj(s, x, l.q), [B, T, Hq, dh]);
    let k = view(proj(s, x, l.k), [B, T, Hkv, dh]);
    const v = view(proj(s, x, l.v), [B, T, Hkv, dh]);
    if (this.invFreq) {
      q = s.t(rope(q, pos, this.invFreq));
      k = s.t(rope(k, pos, this.invFreq));
    }
    // [B, Hq, T, dh] is [B, Hkv, G, T, dh]: each K/V head against its G query heads' rows
    const qh = view(s.t(transpose12(q)), [B * Hkv, G * T, dh]);
    const kh = view(s.t(transpose12(k)), [B * Hkv, T, dh]);
    const vh = view(s.t(transpose12(v)), [B * Hkv, T, dh]);
    const scores = view(s.t(matmul(qh, kh, { transB: true })), [B, Hq, T, T]);
    const probs = s.t(maskedSoftmax(scores, { scale: 1 / Math.sqrt(dh), keyMask, causal: true }));
    const ctx = view(s.t(matmul(view(probs, [B * Hkv, G * T, T]), vh)), [B, Hq, T, dh]);
    return proj(s, view(s.t(transpose12(ctx)), [B, T, Hq * dh]), l.o);
  }

  /** Causal-LM loss: position t predicts labels[t + 1]; the last position and -100 labels do not count. */
  private loss(s: Scope, logits: Tensor, labels: number[], B: number, T: number): Tensor {
    const V = this.config.vocabSize;
    const shifted = new Int32Array(B * T).fill(-100);
    for (let b = 0; b < B; b++)
      for (let t = 0; t + 1 < T; t++) {
        const l = labels[b * T + t + 1];
        if (l !== -100 && (!Number.isInteger(l) || l < 0 || l >= V)) throw new Error(`forward: label ${l} is outside [0, ${V}) (and not -100)`);
        shifted[b * T + t] = l;
      }
    const lab = s.t(tensor(shifted, [B * T], { dtype: 'int32', device: this.device }));
    const r = softmaxCrossEntropy(s.t(logits.reshape([B * T, V])), lab, { ignoreIndex: -100 });
    s.t(r.dLogits);
    return r.loss;
  }

  dispose(): void {
    for (const t of new Set(this.weights.all.values())) t.dispose();
    this.invFreq?.dispose();
  }
}

/** x · Wᵀ (+ b) for x [..., in]. */
function proj(s: Scope, x: Tensor, p: Proj): Tensor {
  const y = s.t(matmul(x, p.weight, { transB: true }));
  return p.bias ? s.t(add(y, p.bias)) : y;
}
