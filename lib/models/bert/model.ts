// A frozen encoder (BERT, RoBERTa, DistilBERT) with AdapterHub-style adapters and heads:
// forward, backward to the trainable tensors only, and the adapter management calls.
import { embedding, embeddingBackward, layerNorm, layerNormBackward, dropout as dropoutOp, dropoutBackward, softmaxCrossEntropy } from '../../nn';
import { activation, add, cast, stack } from '../../ops';
import { FloatDType, Tensor, tensor } from '../../tensor';
import { activationOf, AdapterConfigInput, BnConfig } from '../../methods/bottleneck/config';
import { AdapterEntry, AdapterRegistry, RESERVED_NAMES } from '../../adapted/registry';
import { Dropout, encoderLayer, LayerRun, LayerWeights, Linear, linear, LnAccumulate, Norm, SiteAdapter } from './blocks';
import type { EncoderConfig, WeightNames } from './config';
import { ClassificationHead, HeadConfig } from '../../heads/classification';
import {
  loadAdapter as loadAdapterFiles, loadHead as loadHeadFiles, saveAdapter as saveAdapterFiles, saveHead as saveHeadFiles,
  LoadAdapterOptions, LoadedAdapter, LoadedHead, LoadHeadOptions, SaveAdapterOptions, SaveHeadOptions,
} from '../../adapterhub/files';
import { ModelInputs, prepareInputs, replicateRows } from './inputs';
import { Fuse, parallelChannels } from '../../adapted/composition';
import type { Composition } from '../../adapted/composition';

import { saveFusion as saveFusionFiles } from '../../adapterhub/fusionFiles';
import { runDeferred } from '../../core/deferred';
import { Scope } from '../../core/scope';
import { ComposedModel } from '../../adapted/composedModel';
import { allFinite, firstNonFinite, NonFiniteError, throwingProbe } from '../../core/finite';
import type { Probe } from '../../core/finite';

export interface EmbeddingWeights { word: Tensor; position: Tensor; tokenType?: Tensor; ln: Norm }

export interface BackboneWeights {
  embeddings: EmbeddingWeights;
  layers: LayerWeights[];
  pooler?: Linear;
  /** Every loaded tensor by its canonical checkpoint name. */
  all: Map<string, Tensor>;
}

export interface ForwardOptions {
  training?: boolean;
  labels?: number[];
  /** Keep only each layer's input and recompute the layer in backward (same gradients, less memory). */
  checkpointing?: boolean;
  /** Dropout seed of this step (default: a counter of the model). */
  seed?: number;
  /**
   * Serving: one adapter per sequence (null: none), all in one batch, instead of the active
   * adapter. Each adapter site runs the batched op once for all of them. The adapters must
   * share one configuration; forward only. With heads named like the adapters, rowLogits
   * holds each sequence's logits from its own head.
   */
  adapters?: (string | null)[];
  /**
   * Check the outputs for NaN/±Infinity (default true): the loss, the logits and the last hidden
   * state, for the price of one reduction. When they are not finite, forward throws a
   * NonFiniteError naming the layer and op where such values first appear (found by a second pass).
   */
  checkFinite?: boolean;
}

export class ForwardResult {
  lastHiddenState: Tensor;
  poolerOutput?: Tensor;
  logits?: Tensor;
  loss?: Tensor; // fp32 [1], the mean loss
  /** With per-row adapters: each sequence's logits from the head named like its adapter (null: none). */
  rowLogits?: (Float32Array | null)[];
  /** @internal */ _backward?: (dLast?: Tensor) => void;
  /** @internal */ _readRows?: () => void;
  /** @internal */ _scope: Scope;
  /** @internal */ _done = false;

  constructor(last: Tensor, scope: Scope) {
    this.lastHiddenState = last;
    this._scope = scope;
  }

  get lossValue(): number | undefined {
    return this.loss?.toArray()[0];
  }

  /** Frees the outputs and what was kept for backward. */
  dispose(): void {
    this._scope.dispose();
    for (const t of [this.lastHiddenState, this.poolerOutput, this.logits, this.loss]) t?.dispose();
    this._backward = undefined;
    this._done = true;
  }
}

export class Backbone extends ComposedModel {
  readonly config: EncoderConfig;
  readonly names: WeightNames;
  readonly device: string;
  readonly dtype: FloatDType;
  readonly weights: BackboneWeights;
  private readonly heads = new Map<string, ClassificationHead>();
  private activeHead: string | null = null;
  private trainLayerNorms = false;
  private step = 0;
  private seedBase: number;
  /** sha256 of the backbone's weights as stored (names and bytes): its identity in adapter files. */
  readonly weightHash: string;
  /** config.json's _name_or_path, else the directory's name. */
  readonly modelName: string;
  /** The directory it was loaded from, when loaded from disk. */
  readonly dir?: string;

  constructor(
    config: EncoderConfig, names: WeightNames, weights: BackboneWeights,
    o: { device: string; dtype: FloatDType; seed?: number; weightHash?: string; modelName?: string; dir?: string },
  ) {
    super();
    this.weightHash = o.weightHash ?? '';
    this.modelName = o.modelName ?? config.modelType;
    this.dir = o.dir;
    this.config = config;
    this.names = names;
    this.weights = weights;
    this.device = o.device;
    this.dtype = o.dtype;
    this.seedBase = o.seed ?? 20240;
    this.adapters = new AdapterRegistry({
      numLayers: config.numLayers, hiddenSize: config.hiddenSize, device: o.device, dtype: o.dtype,
      adapterPrefix: (i, site, name) => names.adapterPrefix(i, site, name), seedOf: (n) => this.seedBase + 1000 * n,
      fusionDropout: config.attentionDropout,
    });
  }

  /** Frozen backbone parameters (the embeddings, every layer, the pooler). */
  parameterCount(): number {
    let n = 0;
    for (const t of this.weights.all.values()) n += t.size;
    return n;
  }

  // ---- adapters (lib/adapted/registry.ts) ----

  addAdapter(name: string, config: AdapterConfigInput = 'seq_bn', opts: { seed?: number } = {}): void {
    this.adapters.add(name, config, opts);
  }

  adapterConfig(name: string): BnConfig {
    return { ...this.adapters.entry(name, 'adapterConfig').config };
  }

  adapterNames(): string[] {
    return this.adapters.names();
  }

  /**
   * Trains `name`: it becomes active and its parameters (with the heads') are the trainable
   * ones; with trainLayerNorms the backbone's LayerNorm weights and biases train too.
   */
  trainAdapter(name: string | Composition, opts: { trainLayerNorms?: boolean } = {}): void {
    if (typeof name === 'string' && /^[A-Za-z0-9_-]+$/.test(name)) this.adapters.train(name);
    else this.adapters.trainSetup(name); // a composition: every adapter in it trains
    this.trainLayerNorms = !!opts.trainLayerNorms;
  }

  /** The backbone's LayerNorm weights and biases, by checkpoint name. */
  layerNormParameters(): Map<string, Tensor> {
    return new Map([...this.weights.all].filter(([k]) => /(LayerNorm|layer_norm)\.(weight|bias)$/.test(k)));
  }

  private lnName(t: Tensor): string {
    for (const [k, v] of this.weights.all) if (v === t) return k;
    throw new Error('internal: a LayerNorm tensor without a name');
  }

  setActiveAdapter(name: string | null): void {
    this.adapters.setActive(name);
  }

  get active(): string | null {
    return this.adapters.active;
  }

  // ---- compositions and fusions (lib/adapted/composition.ts, fusion.ts, compose.ts) ----

  /**
   * Saves a fusion as AdapterHub does (adapter_fusion_config.json, model_adapter_fusion.safetensors); with
   * `head`, that head's files go beside it (save_adapter_fusion(with_head=True)).
   */
  saveFusion(dir: string, name: string, opts: { head?: string; labels?: (string | number)[] } = {}): void {
    saveFusionFiles(this, dir, name, opts);
  }

  /**
   * AdapterHub's train_adapter_fusion: the composition (Fuse(a, b), its string form, or the adapter names)
   * becomes active and only its fusion layers (and the heads) get gradients, unless unfreezeAdapters.
   */
  trainFusion(setup: string[] | Composition, opts: { unfreezeAdapters?: boolean } = {}): void {
    this.adapters.trainFusion(Array.isArray(setup) ? Fuse(...setup) : setup, !!opts.unfreezeAdapters);
    this.trainLayerNorms = false;
  }

  // ---- routed mixtures of adapters (lib/adapted/mixture.ts) ----

  /** The Parallel block's channel count of the active composition (1: none). */
  private parallelChannels(): number {
    const a = this.adapters.activeSetup;
    return a === null ? 1 : parallelChannels(a);
  }

  deleteAdapter(name: string): void {
    this.adapters.delete(name);
  }

  /** The adapter's tensors by AdapterHub name, e.g. bert.encoder.layer.3.output.adapters.<name>.adapter_down.0.weight. */
  adapterParameters(name: string): Map<string, Tensor> {
    return this.adapters.parameters(name);
  }

  summary(): string {
    const total = this.parameterCount();
    const lines = [`backbone: ${this.config.modelType}, ${this.config.numLayers} layers, hidden ${this.config.hiddenSize}, ${total.toLocaleString('en-US')} parameters (frozen)`];
    for (const [name, e] of this.adapters.all()) {
      let n = 0;
      for (const t of this.adapterParameters(name).values()) n += t.size;
      const kind = e.config.is_parallel ? 'par_bn' : e.config.mh_adapter ? 'double_seq_bn' : 'seq_bn';
      const flags = [name === this.adapters.active ? 'active' : '', name === this.adapters.trained ? 'training' : ''].filter(Boolean).join(', ');
      lines.push(`adapter ${name} (${kind}, ${e.sites.size} modules${flags ? `, ${flags}` : ''}): ${n.toLocaleString('en-US')} parameters, ${((100 * n) / total).toFixed(3)}% of the backbone`);
    }
    for (const [name, h] of this.heads) {
      let n = 0;
      for (const t of h.parameters().values()) n += t.size;
      lines.push(`head ${name} (classification, ${h.numLabels} labels${name === this.activeHead ? ', active' : ''}): ${n.toLocaleString('en-US')} parameters`);
    }
    return lines.join('\n');
  }

  // ---- heads ----

  addClassificationHead(name: string, cfg: HeadConfig, opts: { seed?: number } = {}): void {
    if (typeof name !== 'string' || !/^[A-Za-z0-9_-]+$/.test(name))
      throw new Error(`addClassificationHead: name must be letters, digits, '_' or '-'`);
    if (RESERVED_NAMES.has(name)) throw new Error(`addClassificationHead: '${name}' cannot name a head`);
    if (this.heads.has(name)) throw new Error(`addClassificationHead: a head named '${name}' already exists`);
    this.heads.set(name, new ClassificationHead(name, this.config.hiddenSize, cfg, {
      device: this.device, dtype: this.dtype, seed: opts.seed ?? this.seedBase + 77 + 10 * this.heads.size, dropout: this.config.hiddenDropout,
    }));
    this.activeHead = name;
  }

  setActiveHead(name: string | null): void {
    if (name !== null && !this.heads.has(name)) throw new Error(`setActiveHead: no head named '${name}'`);
    this.activeHead = name;
  }

  head(name: string): ClassificationHead | undefined {
    return this.heads.get(name);
  }

  deleteHead(name: string): void {
    const h = this.heads.get(name);
    if (!h) throw new Error(`deleteHead: no head named '${name}'`);
    h.dispose();
    this.heads.delete(name);
    if (this.activeHead === name) this.activeHead = null;
  }

  // ---- trainable tensors ----

  /** Every trainable tensor: the trained adapter's and every head's, by AdapterHub name. */
  namedParameters(): Map<string, Tensor> {
    const m = this.adapters.trainableParameters();
    for (const h of this.heads.values()) for (const [k, t] of h.parameters()) m.set(k, t);
    if (this.trainLayerNorms) for (const [k, t] of this.layerNormParameters()) m.set(k, t);
    return m;
  }

  /** Their gradients (fp32), same keys; a tensor without a gradient yet is absent. */
  grads(): Map<string, Tensor> {
    return this.adapters.grads();
  }

  zeroGrad(): void {
    this.adapters.zeroGrad();
  }

  private accumulate(name: string, g: Tensor): void {
    this.adapters.accumulate(name, g);
  }

  // ---- forward and backward ----

  /** Per-row adapters: a SiteAdapter per (layer, site) running every listed adapter in one batched op. */
  private batchedSites(names: (string | null)[], T: number, s: Scope): (layer: number, site: 'mh' | 'output') => SiteAdapter | null {
    if (!Array.isArray(names)) throw new Error('forward: adapters must be an array with one adapter name (or null) per sequence');
    const distinct = [...new Set(names.filter((n): n is string => n !== null))];
    const entries = distinct.map((n) => this.adapters.entry(n, 'forward'));
    const shapeOf = (e: AdapterEntry) => JSON.stringify({
      parallel: e.config.is_parallel, lnBefore: e.config.original_ln_before, act: activationOf(e.config.non_linearity),
      sites: [...e.sites.entries()].map(([k, v]) => [k, v.layer.bottleneckSize]).sort(),
    });
    if (new Set(entries.map(shapeOf)).size > 1)
      throw new Error(`forward: per-row adapters must share one configuration (placement, sites, bottleneck sizes, non-linearity); ${distinct.join(', ')} differ`);
    for (const e of entries)
      if (typeof e.config.scaling !== 'number') throw new Error(`forward: adapter '${e.name}' has a learned scaling, which per-row serving does not support`);
    const rows = new Int32Array(names.length * T);
    names.forEach((n, b) => rows.fill(n === null ? -1 : distinct.indexOf(n), b * T, (b + 1) * T));
    const scales = entries.map((e) => e.config.scaling as number);
    return (layer, site) => {
      const sites = entries.map((e) => e.sites.get(`${layer}.${site}`));
      if (!sites.length || !sites[0]) return null;
      const stacked = (k: string) => s.t(stack(sites.map((st) => st!.layer.parameters().get(k)!)));
      const first = sites[0].layer.parameters();
      return {
        config: entries[0].config,
        weights: { downWeight: first.get('adapter_down.0.weight')!, downBias: first.get('adapter_down.0.bias')!, upWeight: first.get('adapter_up.weight')!, upBias: first.get('adapter_up.bias')! },
        activation: sites[0].layer.activation, scaling: 1, dropout: null,
        batched: {
          weights: { downWeight: stacked('adapter_down.0.weight'), downBias: stacked('adapter_down.0.bias'), upWeight: stacked('adapter_up.weight'), upBias: stacked('adapter_up.bias') },
          rows, scales,
        },
      };
    };
  }

  forward(inputs: ModelInputs, opts: ForwardOptions = {}): ForwardResult {
    const seedBase = this.forwardSeed(opts);
    return this.checked(this.run(inputs, opts, seedBase, null), inputs, opts, seedBase);
  }

  /**
   * forward() with its CPU kernels run on a worker thread: the event loop goes on meanwhile (see
   * runDeferred). Same result, same errors; on CUDA the same as forward().
   */
  async forwardAsync(inputs: ModelInputs, opts: ForwardOptions = {}): Promise<ForwardResult> {
    const seedBase = this.forwardSeed(opts);
    const res = await runDeferred(() => this.run(inputs, opts, seedBase, null));
    return this.checked(res, inputs, opts, seedBase);
  }

  /** backward() with its CPU kernels run on a worker thread (see forwardAsync). */
  async backwardAsync(res: ForwardResult, dLastHiddenState?: Tensor): Promise<void> {
    await runDeferred(() => this.backward(res, dLastHiddenState));
  }

  /** This forward's dropout seed; the active fusions lower their temperature (once per forward). */
  private forwardSeed(opts: ForwardOptions): number {
    this.adapters.beginForward();
    return (opts.seed ?? this.seedBase + 7919 * ++this.step) % 2 ** 31;
  }

  /** res if its outputs are finite; else the first non-finite intermediate as a NonFiniteError. */
  private checked(res: ForwardResult, inputs: ModelInputs, opts: ForwardOptions, seedBase: number): ForwardResult {
    res._readRows?.();
    res._readRows = undefined;
    if (opts.checkFinite === false || outputsFinite(res)) return res;
    // Again with the same inputs and dropout seeds, looking at every intermediate in order.
    let located: NonFiniteError | null = null;
    try {
      this.run(inputs, opts, seedBase, (layer) => throwingProbe('forward', layer)).dispose();
    } catch (e) {
      if (!(e instanceof NonFiniteError)) throw e;
      located = e;
    }
    if (!located) return res; // only Σx² overflowed in the check: every value is finite
    res.dispose();
    throw located;
  }

  /** One forward pass; `probeOf(layer)` (null: none) sees every intermediate as it is made. */
  private run(inputs: ModelInputs, opts: ForwardOptions, seedBase: number, probeOf: ((layer: number | null) => Probe) | null): ForwardResult {
    const s = new Scope();
    try {
      return this.runIn(s, inputs, opts, seedBase, probeOf);
    } catch (e) {
      s.dispose(); // an error mid-pass frees what the pass made
      throw e;
    }
  }

  private runIn(s: Scope, inputs: ModelInputs, opts: ForwardOptions, seedBase: number, probeOf: ((layer: number | null) => Probe) | null): ForwardResult {
    const training = !!opts.training;
    const prepared = prepareInputs(this.config, inputs);
    // Parallel(a, b, ...): the batch runs once per channel (AdapterHub replicates it at the first
    // adapter site; every layer below computes the same values for each copy, so copying the inputs
    // gives the same result); channel i holds rows i·B .. (i+1)·B of the outputs
    const channels = this.parallelChannels();
    if (channels > 1 && (opts.labels || opts.adapters)) throw new Error('forward: a Parallel composition returns one hidden state per channel; it takes no labels and no per-row adapters');
    const { B, T, idArr, maskArr, pos, typeArr } = channels > 1 ? replicateRows(prepared, channels) : prepared;
    const dev = this.device;
    const cfg = this.config;
    const H = cfg.hiddenSize;
    const outer = probeOf?.(null);
    const see = (op: string, t: Tensor) => (outer?.(op, t), t);
    const seedOf = (layer: number, site: number) => seedBase * 1024 + layer * 16 + site;
    const drop = (p: number, layer: number, site: number): Dropout | null => (training && p > 0 ? { p, seed: seedOf(layer, site) } : null);
    const idsT = s.t(tensor(idArr, [B, T], { dtype: 'int32', device: dev }));
    const keyMask = s.t(tensor(maskArr, [B, T], { dtype: 'float32', device: dev }));
    const emb = this.weights.embeddings;
    let e = s.t(embedding(emb.word, idsT));
    e = s.t(add(e, s.t(embedding(emb.position, s.t(tensor(pos, [B, T], { dtype: 'int32', device: dev }))))));
    if (emb.tokenType) e = s.t(add(e, s.t(embedding(emb.tokenType, s.t(tensor(typeArr, [B, T], { dtype: 'int32', device: dev }))))));
    see('embeddings (word + position + token type)', e);
    const eln = layerNorm(e, emb.ln.weight, emb.ln.bias, { eps: cfg.layerNormEps });
    s.t(eln.mean); s.t(eln.rstd); s.t(eln.out);
    see('embeddings.LayerNorm', eln.out);
    let x = eln.out;
    const de = drop(cfg.hiddenDropout, 0, 15);
    if (de) x = s.t(dropoutOp(x, de.p, de.seed));

    let perRow: ((layer: number, site: 'mh' | 'output') => SiteAdapter | null) | null = null;
    if (opts.adapters !== undefined) {
      if (training || opts.labels) throw new Error('forward: per-row adapters serve inference only (no training, no labels)');
      if (opts.adapters.length !== B) throw new Error(`forward: adapters has ${opts.adapters.length} entries for ${B} sequences`);
      perRow = this.batchedSites(opts.adapters, T, s);
    }
    const lnGrad: LnAccumulate = (ln, dW, dB) => {
      this.accumulate(this.lnName(ln.weight), dW);
      this.accumulate(this.lnName(ln.bias), dB);
    };
    const runOf = (i: number): LayerRun => ({
      numHeads: cfg.numHeads, eps: cfg.layerNormEps, act: cfg.hiddenAct, keyMask,
      dropout: { attnProbs: drop(cfg.attentionDropout, i + 1, 0), attnOut: drop(cfg.hiddenDropout, i + 1, 1), ffnOut: drop(cfg.hiddenDropout, i + 1, 2) },
      mh: perRow ? perRow(i, 'mh') : this.adapters.composedSite(i, 'mh', training, seedOf(i + 1, 3)) ?? this.adapters.site(i, 'mh', training, seedOf(i + 1, 3)),
      output: perRow ? perRow(i, 'output') : this.adapters.composedSite(i, 'output', training, seedOf(i + 1, 4)) ?? this.adapters.site(i, 'output', training, seedOf(i + 1, 4)),
      lnGrad: this.trainLayerNorms ? lnGrad : undefined,
      probe: probeOf?.(i),
    });
    const backs: ((d: Tensor, needDx: boolean) => Tensor | null)[] = [];
    for (let i = 0; i < cfg.numLayers; i++) {
      const input = x;
      if (opts.checkpointing) {
        const ls = new Scope();
        const l = encoderLayer(ls, input, this.weights.layers[i], runOf(i));
        x = s.t(l.out);
        ls.dispose([l.out]);
        backs.push((d, needDx) => {
          const rs = new Scope(); // recompute the layer with the same dropout seeds, then go back through it
          const again = encoderLayer(rs, input, this.weights.layers[i], runOf(i));
          const dx = again.back(d, needDx);
          rs.dispose(dx ? [dx] : []);
          return dx ? s.t(dx) : null;
        });
      } else {
        const l = encoderLayer(s, input, this.weights.layers[i], runOf(i));
        x = l.out;
        backs.push(l.back);
      }
    }
    const last = x;
    const res = new ForwardResult(last, s);

    // the first token of each sequence, as a gather of rows of [B·T, H]
    const clsIdx = s.t(tensor(Int32Array.from({ length: B }, (_, b) => b * T), [B], { dtype: 'int32', device: dev }));
    const flat = s.t(last.reshape([B * T, H]));
    let cls: Tensor | null = null;
    const clsOf = () => (cls ??= s.t(embedding(flat, clsIdx)));
    if (this.weights.pooler) res.poolerOutput = see('pooler', activation(linear(s, clsOf(), this.weights.pooler), 'tanh'));

    if (opts.adapters) {
      // each sequence through the head named like its adapter
      res.rowLogits = opts.adapters.map(() => null);
      const rowHeads: { which: number[]; logits: Tensor; numLabels: number }[] = [];
      for (const name of new Set(opts.adapters)) {
        const h = name === null ? undefined : this.heads.get(name);
        if (!h) continue;
        const which = opts.adapters.flatMap((n, b) => (n === name ? [b] : []));
        const idx = s.t(tensor(Int32Array.from(which), [which.length], { dtype: 'int32', device: dev }));
        const logits = see(`head '${name}'`, h.forward(s, s.t(embedding(clsOf(), idx)), false, 0).logits);
        rowHeads.push({ which, logits, numLabels: h.numLabels });
      }
      // read once the pass has run (forwardAsync: after its kernels, off the JS thread)
      res._readRows = () => {
        for (const { which, logits, numLabels } of rowHeads) {
          const v = logits.toArray();
          which.forEach((b, j) => (res.rowLogits![b] = v.slice(j * numLabels, (j + 1) * numLabels)));
        }
      };
      res._backward = () => {
        throw new Error('backward: not available after a forward with per-row adapters (serving only)');
      };
      return res;
    }
    const head = this.activeHead ? this.heads.get(this.activeHead)! : null;
    let headBack: ReturnType<ClassificationHead['forward']>['back'] | null = null;
    let dLogits: Tensor | null = null;
    if (head) {
      const h = head.forward(s, clsOf(), training, seedOf(cfg.numLayers + 1, 0));
      headBack = h.back;
      res.logits = h.logits.to({}); // owned by the result, not the scope
      see(`head '${head.name}'`, res.logits);
      if (opts.labels) {
        const l = this.loss(head, res.logits, opts.labels);
        res.loss = l.loss;
        dLogits = s.t(l.dLogits);
        see('loss', res.loss);
      }
    } else if (opts.labels) throw new Error('forward: labels given but no head is active (addClassificationHead first)');

    res._backward = (dLast?: Tensor) => {
      let d: Tensor;
      if (dLast) {
        if (!(dLast instanceof Tensor) || dLast.shape.join() !== last.shape.join())
          throw new Error(`backward: dLastHiddenState must be a Tensor of shape [${last.shape}]`);
        d = dLast.dtype === this.dtype && dLast.device === dev ? dLast : s.t(dLast.to({ device: dev, dtype: this.dtype }));
      } else {
        if (!dLogits || !headBack) throw new Error('backward: the forward had no loss (give labels, or pass dLastHiddenState)');
        const dcls = headBack(dLogits, (name, g) => this.accumulate(name, g));
        const scattered = s.t(embeddingBackward(dcls, clsIdx, B * T));
        const typed = scattered.dtype === this.dtype ? scattered : s.t(cast(scattered, this.dtype));
        d = s.t(typed.reshape([B, T, H]));
      }
      // Only trained tensors need gradients: stop at the lowest layer holding a site of the
      // trained adapter — or go all the way to the embeddings' LayerNorm when LayerNorms train.
      const lowest = this.trainLayerNorms ? 0 : this.adapters.lowestTrainedLayer();
      for (let i = cfg.numLayers - 1; i >= lowest; i--) {
        const dx = backs[i](d, i > lowest || this.trainLayerNorms);
        if (!dx) break;
        d = dx;
      }
      if (this.trainLayerNorms) {
        const dLn = de ? s.t(dropoutBackward(d, de.p, de.seed)) : d;
        const g = layerNormBackward(dLn, e, undefined, emb.ln.weight, eln.mean, eln.rstd);
        for (const t of [g.dx, g.dWeight, g.dBias]) s.t(t);
        lnGrad(emb.ln, g.dWeight, g.dBias);
      }
    };
    return res;
  }

  private loss(head: ClassificationHead, logits: Tensor, labels: number[]): { loss: Tensor; dLogits: Tensor } {
    const B = logits.shape[0];
    if (!Array.isArray(labels) || labels.length !== B) throw new Error(`forward: labels must be an array of ${B} numbers`);
    if (head.numLabels === 1) {
      // regression: mean squared error, computed on the host (B values)
      const y = logits.toArray();
      let sum = 0;
      const g = new Float32Array(B);
      for (let i = 0; i < B; i++) {
        const diff = y[i] - labels[i];
        sum += diff * diff;
        g[i] = (2 * diff) / B;
      }
      return { loss: tensor([sum / B], [1], { device: this.device }), dLogits: tensor(g, [B, 1], { device: this.device, dtype: logits.dtype }) };
    }
    for (const l of labels)
      if (!Number.isInteger(l) || l < 0 || l >= head.numLabels)
        throw new Error(`forward: label ${l} is outside [0, ${head.numLabels}) for head '${head.name}'`);
    const lab = tensor(Int32Array.from(labels), [B], { dtype: 'int32', device: this.device });
    try {
      return softmaxCrossEntropy(logits, lab);
    } finally {
      lab.dispose();
    }
  }

  /** Gradients of the trainable tensors from res.loss, or from a given gradient of the last hidden state. */
  backward(res: ForwardResult, dLastHiddenState?: Tensor): void {
    if (!(res instanceof ForwardResult)) throw new Error('backward: pass the result of forward()');
    if (res._done || !res._backward) throw new Error('backward: this forward result was already used or disposed');
    try {
      res._backward(dLastHiddenState);
    } finally {
      res._done = true;
      res._backward = undefined;
      res._scope.dispose([res.lastHiddenState]); // the outputs stay readable
    }
  }

  dispose(): void {
    this.zeroGrad();
    this.adapters.dispose();
    for (const n of [...this.heads.keys()]) this.deleteHead(n);
    for (const t of this.weights.all.values()) t.dispose();
  }

  // ---- adapter and head files (AdapterHub's format; see lib/adapterhub/files.ts) ----

  /** Writes adapter `name` (and its head, by default when one has the same name) to `dir`. */
  saveAdapter(dir: string, name: string, opts?: SaveAdapterOptions): void {
    saveAdapterFiles(this, dir, name, opts);
  }

  /** Adds the adapter saved in `dir` (by saveAdapter or AdapterHub), with its head when there is one. */
  loadAdapter(dir: string, opts?: LoadAdapterOptions): LoadedAdapter {
    return loadAdapterFiles(this, dir, opts);
  }

  saveHead(dir: string, name: string, opts?: SaveHeadOptions): void {
    saveHeadFiles(this, dir, name, opts);
  }

  loadHead(dir: string, opts?: LoadHeadOptions): LoadedHead {
    return loadHeadFiles(this, dir, opts);
  }
}

/** Whether the loss, the logits (per row too) and the last hidden state are finite. */
function outputsFinite(res: ForwardResult): boolean {
  if (res.loss && firstNonFinite(res.loss.toArray()) >= 0) return false;
  if (res.logits && firstNonFinite(res.logits.toArray()) >= 0) return false;
  if (res.rowLogits?.some((l) => l && firstNonFinite(l) >= 0)) return false;
  return allFinite(res.lastHiddenState);
}
