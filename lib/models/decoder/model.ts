// A frozen decoder-only language model (GPT-2, LLaMA family) with AdapterHub bottleneck adapters:
// token ids → logits over the vocabulary, the causal-LM loss on labels (-100 ignored), and a
// backward that computes gradients for the trained adapter only.
//
//   GPT-2:  x = wte[ids] + wpe[pos];  per layer  x = site_mh(o(attn(LN₁ x)), x),  x = site_out(mlp(LN₂ x), x)
//   LLaMA:  x = embed[ids];           the same with RMSNorm and the gated MLP down(silu(gate) ⊙ up)
//   then the final norm and logits = x · lm_headᵀ. A site without an adapter is the plain residual.
//
// Attention is causal with the padding mask, rotary embeddings (LLaMA family) at each token's
// position, grouped-query heads (layers.ts). Positions default to the count of real tokens before
// each one, so left padding is invisible. The backbone has no dropout here (eval behaviour).
import type { AdapterConfigInput, BnConfig } from '../../methods/bottleneck/config';
import { AdapterRegistry } from '../../adapted/registry';
import { embedding, embeddingBackward, softmaxCrossEntropy } from '../../nn';
import { add, cast, matmul, scale } from '../../ops';
import { runDeferred } from '../../core/deferred';
import { Scope } from '../../core/scope';
import { ComposedModel } from '../../adapted/composedModel';
import { Fuse, parallelChannels } from '../../adapted/composition';
import type { Composition } from '../../adapted/composition';

import { saveFusion as saveFusionFiles } from '../../adapterhub/fusionFiles';
import { FloatDType, Tensor, tensor } from '../../tensor';
import type { DecoderConfig } from './config';
import type { GgufFile } from '../../io/gguf';
import { allFinite, NonFiniteError, throwingProbe } from '../../core/finite';
import type { Probe } from '../../core/finite';
import { Tokenizer } from '../../train/tokenizer';
import type { ChatMessage } from '../../train/chat';
import { generate as generateIds, generateText, GenerateOptions } from '../../generation/generate';
import {
  loadAdapter as loadAdapterFiles, saveAdapter as saveAdapterFiles, LoadAdapterOptions, LoadedAdapter, SaveAdapterOptions,
} from '../../adapterhub/files';
import { attention, DecoderLayerWeights, mlp, norm, NormWeights, residual } from './layers';

export type { DecoderLayerWeights, NormWeights, Proj } from './layers';

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
  /** [B][T] positions (default: the number of real tokens before each token, within its segment). */
  positionIds?: number[][];
  /**
   * [B][T] packed sequences: several examples in one row, each with its own id (e.g. 0, 0, 0, 1, 1, 2);
   * a token attends only within its segment, positions restart at each, and no token is predicted
   * across a boundary. Uses the fused attention op.
   */
  segmentIds?: number[][];
}

export interface DecoderForwardOptions {
  /** [B][T] target ids for the causal-LM loss (shifted inside: position t predicts labels[t+1]); -100 is ignored. */
  labels?: number[][];
  /** Adapter dropout when the adapter's config has one (the backbone has none). */
  training?: boolean;
  /** Dropout seed of this step. */
  seed?: number;
  /** Keep only each layer's input and recompute the layer in backward (same gradients, less memory). */
  checkpointing?: boolean;
  /**
   * Keep the [B, T, vocab] logits (default true). With labels and keepLogits: false, the LM head and the
   * loss run over chunks of rows, so no full-size logits (nor their gradient) ever exist: the memory of a
   * large vocabulary drops to one chunk's. Training uses this.
   */
  keepLogits?: boolean;
  /** Rows per chunk when keepLogits is false (default: about 4M logits per chunk). */
  lossChunkRows?: number;
  /**
   * Check the loss and logits for NaN/±Infinity (default true). When they are not finite, forward
   * throws a NonFiniteError naming the layer and block where such values first appear.
   */
  checkFinite?: boolean;
}

export class DecoderOutput {
  private readonly _logits: Tensor | null;
  /** fp32 [1]: the mean cross-entropy over the labels that count. */
  loss?: Tensor;
  /** @internal */ _backward?: () => void;
  /** @internal */ _scope: Scope;
  constructor(logits: Tensor | null, scope: Scope) {
    this._logits = logits;
    this._scope = scope;
  }
  /** [B, T, vocab] (float32 on the CPU; the model's dtype on CUDA). Not kept by a forward with keepLogits: false. */
  get logits(): Tensor {
    if (!this._logits) throw new Error('logits: this forward did not keep them (keepLogits: false computes the loss vocabulary chunk by chunk)');
    return this._logits;
  }
  /** Whether the logits were kept. */
  get hasLogits(): boolean {
    return this._logits !== null;
  }
  get lossValue(): number | undefined {
    return this.loss?.toArray()[0];
  }
  /** Frees the outputs and what was kept for backward. */
  dispose(): void {
    this._scope.dispose();
    this._logits?.dispose();
    this.loss?.dispose();
    this._backward = undefined;
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

export class Decoder extends ComposedModel {
  readonly config: DecoderConfig;
  readonly weights: DecoderWeights;
  readonly device: string;
  readonly dtype: FloatDType;
  /** sha256 of the weights as stored (names and bytes). */
  readonly weightHash: string;
  readonly modelName: string;
  readonly dir?: string;
  /** The GGUF file it was loaded from (its tokenizer and chat template live there). */
  readonly gguf?: GgufFile;
  private readonly invFreq: Tensor | null;
  private step = 0;
  /**
   * How attention runs: 'fused' (one op, no [T, T] matrix: the CUDA kernels need a head size <= 128),
   * 'unfused' (matmul, masked softmax, matmul), or 'auto' (fused on CUDA where it fits, unfused on the
   * CPU, where BLAS makes the matmuls faster). Same results either way.
   */
  attentionPath: 'auto' | 'fused' | 'unfused' = 'auto';

  constructor(config: DecoderConfig, weights: DecoderWeights, o: { device: string; dtype: FloatDType; weightHash?: string; modelName?: string; dir?: string; gguf?: GgufFile }) {
    super();
    this.gguf = o.gguf;
    this.config = config;
    this.weights = weights;
    this.device = o.device;
    this.dtype = o.dtype;
    this.weightHash = o.weightHash ?? '';
    this.modelName = o.modelName ?? config.modelType;
    this.dir = o.dir;
    this.invFreq = config.rope ? tensor(config.rope.invFreq, [config.rope.invFreq.length], { device: o.device }) : null;
    this.adapters = new AdapterRegistry({
      numLayers: config.numLayers, hiddenSize: config.hiddenSize, device: o.device, dtype: o.dtype,
      adapterPrefix: (i, site, name) => this.names.adapterPrefix(i, site, name), seedOf: (n) => 4242 + 1000 * n,
      checkConfig: (cfg) => {
        for (const field of ['ln_before', 'ln_after', 'use_gating', 'adapter_residual_before_ln'] as const)
          if (cfg[field]) throw new Error(`addAdapter: ${field}: true is not supported on decoders`);
      },
    });
  }

  /** The tokenizer of a model loaded from a GGUF file (from its metadata), else undefined: use Tokenizer.fromDir(model.dir). */
  ggufTokenizer(): Tokenizer | undefined {
    return this.gguf ? Tokenizer.fromGgufMetadata(this.gguf.metadata, this.gguf.file) : undefined;
  }

  /** The model's own tokenizer: the GGUF file's, else tokenizer.json of its directory; undefined when it has neither. */
  async ownTokenizer(): Promise<Tokenizer | undefined> {
    return this.ggufTokenizer() ?? (this.dir ? await Tokenizer.fromDir(this.dir) : undefined);
  }

  /** Parameters of the frozen model (tied tensors counted once). */
  parameterCount(): number {
    let n = 0;
    for (const t of new Set(this.weights.all.values())) n += t.size;
    return n;
  }

  /** The checkpoint prefix of layer i ('transformer.h.3', 'model.layers.3'), as AdapterHub names adapter tensors. */
  layerPrefix(i: number): string {
    return this.config.family === 'gpt2' ? `transformer.h.${i}` : `model.layers.${i}`;
  }

  /** AdapterHub's names: the model prefix and each adapter site's (for the adapter files). */
  get names(): { prefix: string; adapterPrefix(layer: number, site: 'mh' | 'output', name: string): string } {
    return {
      prefix: this.config.family === 'gpt2' ? 'transformer' : 'model',
      adapterPrefix: (i, site, name) => `${this.layerPrefix(i)}.${site === 'mh' ? 'attention_adapters' : 'output_adapters'}.adapters.${name}`,
    };
  }

  /** Saves adapter `name` in AdapterHub's format (adapter_config.json, adapter.safetensors), replacing `dir` as a whole. */
  saveAdapter(dir: string, name: string, opts?: SaveAdapterOptions): void {
    saveAdapterFiles(this, dir, name, opts);
  }

  /** Loads an adapter saved by this package or by AdapterHub (save_adapter) for this architecture. */
  loadAdapter(dir: string, opts?: LoadAdapterOptions): LoadedAdapter {
    return loadAdapterFiles(this, dir, opts);
  }

  // ---- adapters (lib/adapted/registry.ts) ----

  /** Adds a bottleneck adapter (AdapterHub's seq_bn, double_seq_bn, par_bn and their options) at AdapterHub's sites. */
  addAdapter(name: string, config: AdapterConfigInput = 'seq_bn', opts: { seed?: number } = {}): void {
    this.adapters.add(name, config, opts);
  }

  adapterNames(): string[] {
    return this.adapters.names();
  }

  adapterConfig(name: string): BnConfig {
    return { ...this.adapters.entry(name, 'adapterConfig').config };
  }

  /** The adapter's tensors by AdapterHub's names ('model.layers.0.output_adapters.adapters.x.adapter_up.weight'). */
  adapterParameters(name: string): Map<string, Tensor> {
    return this.adapters.parameters(name);
  }

  // ---- routed mixtures of adapters (lib/adapted/mixture.ts) ----

  /** Trains `name` (or every adapter of a composition): it becomes active and its tensors are the trainable ones. */
  trainAdapter(name: string | Composition): void {
    if (typeof name === 'string' && /^[A-Za-z0-9_-]+$/.test(name)) this.adapters.train(name);
    else this.adapters.trainSetup(name);
  }

  /** The adapter the forward runs (null: none, the plain model). */
  setActiveAdapter(name: string | null): void {
    this.adapters.setActive(name);
  }

  get active(): string | null {
    return this.adapters.active;
  }

  // ---- compositions and fusions: as on encoders (Backbone); Parallel in forward, not in generate ----

  trainFusion(setup: string[] | Composition, opts: { unfreezeAdapters?: boolean } = {}): void {
    this.adapters.trainFusion(Array.isArray(setup) ? Fuse(...setup) : setup, !!opts.unfreezeAdapters);
  }

  saveFusion(dir: string, name: string): void {
    saveFusionFiles(this, dir, name);
  }

  deleteAdapter(name: string): void {
    this.adapters.delete(name);
  }

  /** @internal The active adapter or composition at a layer's site, for inference (generation). */
  adapterSite(layer: number, where: 'mh' | 'output') {
    return this.adapters.composedSite(layer, where, false, 0) ?? this.adapters.site(layer, where, false, 0);
  }

  /** @internal The start of a generation pass (prefill, decode step): fusion temperatures fall once per pass. */
  beginPass(): void {
    if (this.channels() > 1)
      throw new Error('generate: a Parallel composition gives one output per channel; generate with one of its adapters, or Stack/Fuse/Average');
    this.adapters.beginForward();
  }

  /** The active composition's Parallel channel count (1: none). */
  private channels(): number {
    return this.adapters.activeSetup === null ? 1 : parallelChannels(this.adapters.activeSetup);
  }

  private forwardSeed(opts: DecoderForwardOptions): number {
    this.adapters.beginForward();
    return opts.seed ?? 7919 * ++this.step;
  }

  /**
   * Parallel(a, b, …): the batch once per channel (AdapterHub replicates it at the first adapter site; the
   * layers below compute the same values for every copy); channel i holds rows i·B … of the outputs.
   */
  private parallelInputs(inputs: DecoderInputs, opts: DecoderForwardOptions): DecoderInputs {
    const n = this.channels();
    if (n === 1) return inputs;
    if (opts.labels) throw new Error('forward: a Parallel composition gives one output per channel; it takes no labels');
    const rep = <T>(rows: T[][] | undefined) => (rows ? Array.from({ length: n }, () => rows).flat() : undefined);
    return { ...inputs, inputIds: rep(inputs.inputIds)!, attentionMask: rep(inputs.attentionMask), positionIds: rep(inputs.positionIds), segmentIds: rep(inputs.segmentIds) };
  }

  /** @internal Per-row adapters at a layer's site, stacked for the batched op (generation). */
  batchedAdapterSite(names: (string | null)[], layer: number, where: 'mh' | 'output', tokensPerRow: number, scope: Scope) {
    return this.adapters.batchedSite(names, layer, where, tokensPerRow, scope);
  }

  /** @internal The rotary inverse frequencies on the model's device (null for learned positions). */
  ropeFrequencies(): Tensor | null {
    return this.invFreq;
  }

  /**
   * Generates with the KV cache (lib/generation): token ids (one prompt, or several of any lengths) →
   * the new token ids per prompt; a string or chat messages → the new text (the tokenizer from
   * options, else the GGUF file's, else tokenizer.json of the model's directory).
   */
  async generate(input: number[] | number[][] | string | ChatMessage[], opts: GenerateOptions & { tokenizer?: Tokenizer } = {}): Promise<number[][] | string> {
    if (Array.isArray(input) && (input.length === 0 || typeof input[0] === 'number' || Array.isArray(input[0]))) {
      const prompts = input.length && Array.isArray(input[0]) ? (input as number[][]) : [input as number[]];
      return generateIds(this, prompts, opts);
    }
    const tokenizer = opts.tokenizer ?? (await this.ownTokenizer());
    if (!tokenizer) throw new Error('generate: pass a tokenizer (the model has no GGUF file or directory to take one from)');
    return generateText(this, tokenizer, input as string | ChatMessage[], opts);
  }

  /** The trainable tensors (the trained adapter's), by name. */
  namedParameters(): Map<string, Tensor> {
    return this.adapters.trainableParameters();
  }

  /** Accumulated gradients (fp32) of the trainable tensors, by name. */
  grads(): Map<string, Tensor> {
    return this.adapters.grads();
  }

  zeroGrad(): void {
    this.adapters.zeroGrad();
  }

  // ---- forward and backward ----

  forward(inputs: DecoderInputs, opts: DecoderForwardOptions = {}): DecoderOutput {
    const seed = this.forwardSeed(opts);
    inputs = this.parallelInputs(inputs, opts);
    return this.checked(this.pass(inputs, { ...opts, seed }, null), inputs, opts, seed);
  }

  /**
   * forward() with its CPU kernels run on a worker thread: the event loop goes on meanwhile (see
   * runDeferred). Same result, same errors; on CUDA the same as forward().
   */
  async forwardAsync(inputs: DecoderInputs, opts: DecoderForwardOptions = {}): Promise<DecoderOutput> {
    const seed = this.forwardSeed(opts);
    inputs = this.parallelInputs(inputs, opts);
    const out = await runDeferred(() => this.pass(inputs, { ...opts, seed }, null));
    return this.checked(out, inputs, opts, seed);
  }

  /** backward() with its CPU kernels run on a worker thread (see forwardAsync). */
  async backwardAsync(out: DecoderOutput): Promise<void> {
    await runDeferred(() => this.backward(out));
  }

  /** out if its loss and logits are finite; else the first non-finite block output as a NonFiniteError. */
  private checked(out: DecoderOutput, inputs: DecoderInputs, opts: DecoderForwardOptions, seed: number): DecoderOutput {
    if (opts.checkFinite === false) return out;
    const finite = (!out.loss || Number.isFinite(out.loss.toArray()[0])) && (!out.hasLogits || allFinite(out.logits));
    if (finite) return out;
    // again with the same inputs and seeds, looking at each block's output in order
    let located: NonFiniteError | null = null;
    try {
      this.pass(inputs, { ...opts, seed }, throwingProbe).dispose();
    } catch (e) {
      if (!(e instanceof NonFiniteError)) throw e;
      located = e;
    }
    if (!located) return out; // only Σx² overflowed in the check
    out.dispose();
    throw located;
  }

  private pass(inputs: DecoderInputs, opts: DecoderForwardOptions, probe: ((where: string, layer: number | null) => Probe) | null): DecoderOutput {
    const s = new Scope();
    try {
      return this.run(s, inputs, opts, probe);
    } catch (e) {
      s.dispose();
      throw e;
    }
  }

  private run(s: Scope, inputs: DecoderInputs, opts: DecoderForwardOptions, probeOf: ((where: string, layer: number | null) => Probe) | null): DecoderOutput {
    const see = (layer: number | null, op: string, t: Tensor) => (probeOf?.('forward', layer)(op, t), t);
    const cfg = this.config;
    const dev = this.device;
    const ids = rows(inputs?.inputIds, 'inputIds');
    const { B, T } = ids;
    for (const id of ids.data)
      if (!Number.isInteger(id) || id < 0 || id >= cfg.vocabSize) throw new Error(`forward: token id ${id} is outside [0, ${cfg.vocabSize})`);
    const mask = inputs.attentionMask ? rows(inputs.attentionMask, 'attentionMask', B, T).data : new Array(B * T).fill(1);
    const seg = inputs.segmentIds ? rows(inputs.segmentIds, 'segmentIds', B, T).data : null;
    if (seg && seg.some((v) => !Number.isInteger(v) || v < -(2 ** 31) || v >= 2 ** 31)) throw new Error('forward: segmentIds must be int32 integers');
    if (seg && this.attentionPath === 'unfused') throw new Error("forward: segmentIds need the fused attention path (attentionPath 'auto' or 'fused')");
    let pos: number[];
    if (inputs.positionIds) pos = rows(inputs.positionIds, 'positionIds', B, T).data;
    else {
      pos = new Array(B * T);
      for (let b = 0; b < B; b++)
        for (let t = 0, n = 0; t < T; t++) {
          if (seg && t > 0 && seg[b * T + t] !== seg[b * T + t - 1]) n = 0; // a new segment starts at position 0
          pos[b * T + t] = mask[b * T + t] ? n++ : Math.max(0, n - 1);
        }
    }
    const maxPos = cfg.family === 'gpt2' ? cfg.maxPositions : Number.MAX_SAFE_INTEGER;
    for (const p of pos) if (!Number.isInteger(p) || p < 0 || p >= maxPos) throw new Error(`forward: position ${p} is outside [0, ${maxPos})`);
    if (cfg.slidingWindow !== null && T > cfg.slidingWindow)
      throw new Error(`forward: ${T} tokens exceed the sliding window of ${cfg.slidingWindow} (config.json sliding_window), which is not supported`);
    const labels = opts.labels ? rows(opts.labels, 'labels', B, T).data : null;
    const training = !!opts.training;
    const seedBase = (opts.seed ?? 0) % 2 ** 31;

    const fused = seg !== null || this.attentionPath === 'fused'
      || (this.attentionPath === 'auto' && this.device !== 'cpu' && cfg.headDim <= 128);
    const run = {
      B, T, invFreq: this.invFreq, fused,
      positions: s.t(tensor(pos, [B, T], { dtype: 'int32', device: dev })),
      keyMask: s.t(tensor(mask, [B, T], { device: dev })),
      segments: seg ? s.t(tensor(seg, [B, T], { dtype: 'int32', device: dev })) : undefined,
    };
    const w = this.weights;
    let x = s.t(embedding(w.tokens, s.t(tensor(ids.data, [B, T], { dtype: 'int32', device: dev }))));
    if (w.positions) x = s.t(add(x, s.t(embedding(w.positions, run.positions))));
    see(null, 'embeddings', x);
    const gpt2 = cfg.family === 'gpt2';
    const backs: ((d: Tensor, needDx: boolean) => Tensor | null)[] = [];
    /** Layer i on input x in scope ls: its output and its backward (dOut, needDx) → dx | null. */
    const layer = (ls: Scope, i: number, input: Tensor) => {
      const l = w.layers[i];
      const n1 = norm(ls, cfg, input, l.norm1);
      see(i, gpt2 ? 'ln_1' : 'input_layernorm', n1.out);
      const att = attention(ls, cfg, n1.out, l, run);
      see(i, gpt2 ? 'attn' : 'self_attn', att.out);
      const mhSite = this.adapters.composedSite(i, 'mh', training, seedBase * 64 + 2 * i) ?? this.adapters.site(i, 'mh', training, seedBase * 64 + 2 * i);
      const A = residual(ls, att.out, input, mhSite);
      see(i, mhSite ? 'attention_adapters (residual + adapter)' : 'attention residual', A.out);
      const n2 = norm(ls, cfg, A.out, l.norm2);
      see(i, gpt2 ? 'ln_2' : 'post_attention_layernorm', n2.out);
      const m = mlp(ls, cfg, n2.out, l);
      see(i, 'mlp', m.out);
      const outSite = this.adapters.composedSite(i, 'output', training, seedBase * 64 + 2 * i + 1) ?? this.adapters.site(i, 'output', training, seedBase * 64 + 2 * i + 1);
      const O = residual(ls, m.out, A.out, outSite);
      see(i, outSite ? 'output_adapters (residual + adapter)' : 'mlp residual', O.out);
      const hasMh = mhSite !== null;
      const back = (d: Tensor, needDx: boolean): Tensor | null => {
        const o = O.back(d);
        if (!needDx && !hasMh) return null; // the lowest adapted layer: only its adapters' gradients were needed
        const dA = ls.t(add(o.dx, n2.back(m.back(o.dh))));
        const a = A.back(dA);
        if (!needDx) return null;
        return ls.t(add(a.dx, n1.back(att.back(a.dh))));
      };
      return { out: O.out, back };
    };
    for (let i = 0; i < cfg.numLayers; i++) {
      const input = x;
      if (opts.checkpointing) {
        // keep only the layer's input; the backward runs the layer again (same seeds) and goes back through it
        const ls = new Scope();
        const L = layer(ls, i, input);
        x = s.t(L.out);
        ls.dispose([L.out]);
        backs.push((d, needDx) => {
          const rs = new Scope();
          try {
            const again = layer(rs, i, input);
            const dx = again.back(d, needDx);
            rs.dispose(dx ? [dx] : []);
            return dx ? s.t(dx) : null;
          } catch (e) {
            rs.dispose();
            throw e;
          }
        });
      } else {
        const L = layer(s, i, input);
        x = L.out;
        backs.push(L.back);
      }
    }
    const fin = norm(s, cfg, x, w.finalNorm);
    see(null, gpt2 ? 'ln_f' : 'norm', fin.out);
    const V = cfg.vocabSize;
    let shifted: Int32Array | null = null;
    if (labels) {
      shifted = new Int32Array(B * T).fill(-100);
      for (let b = 0; b < B; b++)
        for (let t = 0; t + 1 < T; t++) {
          const l = labels[b * T + t + 1];
          if (l !== -100 && (!Number.isInteger(l) || l < 0 || l >= V)) throw new Error(`forward: label ${l} is outside [0, ${V}) (and not -100)`);
          // never predict across a packed boundary
          shifted[b * T + t] = seg && seg[b * T + t] !== seg[b * T + t + 1] ? -100 : l;
        }
    }
    const keep = opts.keepLogits !== false || !shifted;
    const logits = keep ? matmul(fin.out, w.lmHead, { transB: true }) : null; // [B, T, V], owned by the output
    const out = new DecoderOutput(logits, s);
    if (logits) see(null, 'lm_head', logits);
    if (!shifted) return out;
    let dHidden: Tensor; // the loss's gradient w.r.t. the final norm's output, [B·T, H]
    if (logits) {
      const ce = softmaxCrossEntropy(s.t(logits.reshape([B * T, V])), s.t(tensor(shifted, [B * T], { dtype: 'int32', device: dev })));
      out.loss = ce.loss;
      see(null, 'loss', ce.loss);
      const dLogits = s.t(ce.dLogits);
      dHidden = s.t(matmul(dLogits, w.lmHead));
    } else {
      // chunks of rows: logits_c = h_c·Wᵀ, the chunk's mean loss and gradient re-weighted by its share
      // of the counted labels, dh_c = dLogits_c·W; every chunk's logits are freed before the next
      const H = cfg.hiddenSize;
      const rowsPerChunk = opts.lossChunkRows ?? Math.max(1, Math.floor((1 << 22) / V)); // ~4M logits (16 MB fp32) at a time
      if (!Number.isInteger(rowsPerChunk) || rowsPerChunk < 1) throw new Error(`forward: lossChunkRows must be a positive integer, got ${rowsPerChunk}`);
      const counted = shifted.reduce((n, l) => n + (l !== -100 ? 1 : 0), 0);
      const h = s.t(fin.out.reshape([B * T, H]));
      let acc: Tensor | null = null; // fp32 [B·T, H]: each chunk's rows scattered in place
      let lossSum: Tensor | null = null; // Σ chunk loss · its label count, on the device (no read mid-pass)
      for (let r0 = 0; r0 < B * T; r0 += rowsPerChunk) {
        const r1 = Math.min(B * T, r0 + rowsPerChunk);
        const cs = new Scope();
        try {
          const idx = cs.t(tensor(Int32Array.from({ length: r1 - r0 }, (_, i) => r0 + i), [r1 - r0], { dtype: 'int32', device: dev }));
          const hc = cs.t(embedding(h, idx)); // rows r0..r1 of h
          const lc = cs.t(matmul(hc, w.lmHead, { transB: true }));
          see(null, 'lm_head', lc);
          const lab = shifted.subarray(r0, r1);
          const n = lab.reduce((k, l) => k + (l !== -100 ? 1 : 0), 0);
          const ce = softmaxCrossEntropy(lc, cs.t(tensor(lab, [r1 - r0], { dtype: 'int32', device: dev })));
          cs.t(ce.loss);
          cs.t(ce.dLogits);
          const weighted = scale(ce.loss, n);
          const part = cs.t(scale(cs.t(matmul(ce.dLogits, w.lmHead)), counted > 0 ? n / counted : 0));
          const placed = embeddingBackward(part, idx, B * T); // fp32, zero outside rows r0..r1
          [acc, lossSum] = [accumulate(acc, placed), accumulate(lossSum, weighted)];
        } finally {
          cs.dispose();
        }
      }
      out.loss = scale(lossSum!, counted ? 1 / counted : 0);
      lossSum!.dispose();
      see(null, 'loss', out.loss);
      const a = s.t(acc!);
      dHidden = a.dtype === this.dtype ? a : s.t(cast(a, this.dtype));
    }
    out._backward = () => {
      const lowest = this.adapters.lowestTrainedLayer();
      if (lowest >= cfg.numLayers) throw new Error('backward: no adapter is being trained (trainAdapter(name) first, and keep it active)');
      let d = fin.back(s.t(dHidden.reshape([B, T, cfg.hiddenSize])));
      for (let i = cfg.numLayers - 1; i >= lowest; i--) {
        const dx = backs[i](d, i > lowest);
        if (!dx) break;
        d = dx;
      }
    };
    return out;
  }

  /** Gradients of the trained adapter's tensors from out.loss, accumulated into grads(). */
  backward(out: DecoderOutput): void {
    if (!(out instanceof DecoderOutput)) throw new Error('backward: pass the result of forward()');
    if (!out._backward) throw new Error('backward: this output has no loss (pass labels to forward) or was already used');
    try {
      out._backward();
    } finally {
      out._backward = undefined;
      out._scope.dispose(); // the logits and the loss stay readable
    }
  }

  dispose(): void {
    this.adapters.dispose();
    for (const t of new Set(this.weights.all.values())) t.dispose();
    this.invFreq?.dispose();
  }
}

/** sum + t, freeing both (the first call returns t itself). */
function accumulate(sum: Tensor | null, t: Tensor): Tensor {
  if (!sum) return t;
  const next = add(sum, t);
  sum.dispose();
  t.dispose();
  return next;
}
