// The adapters of one model (encoder or decoder): AdapterHub bottleneck adapters by name, each a
// BottleneckAdapter per (layer, site) under AdapterHub's tensor names; which one is active (runs
// in the forward) and which one trains (gets gradients); the accumulated gradients of everything
// that trains (the models add their heads' and LayerNorms' through accumulate()).
import type { FloatDType, Tensor } from '../tensor';
import { add, cast } from '../ops';
import { activationOf, AdapterConfigInput, BnConfig, bottleneckSize, resolveConfig } from '../methods/bottleneck/config';
import type { Activation, AdapterWeights, StackedAdapterWeights } from '../methods/bottleneck/functional';
import { stack } from '../ops';
import type { Scope } from '../core/scope';
import { BottleneckAdapter } from '../methods/bottleneck/layer';
import { tensor } from '../tensor';
import { CompositionBlock, Fuse, parseComposition, validateComposition } from './composition';
import type { Composition } from './composition';
import type { ComposeContext, FusionRun } from './compose';
import { FusionConfigInput, FusionEntry, FusionLayer, fusionTensors, resolveFusionConfig, valueRegularization } from './fusion';
import { MixtureConfig, MixtureEntry, newGate, resolveMixtureConfig } from './mixture';
import { Mixture } from './composition';

export type SiteName = 'mh' | 'output';

export interface AdapterEntry {
  name: string;
  config: BnConfig;
  /** Key `${layer}.mh` or `${layer}.output`. */
  sites: Map<string, { prefix: string; layer: BottleneckAdapter }>;
}

/** Gradients of an adapter at one site, as adapterBackward returns them. */
export interface SiteGradients { dDownWeight: Tensor; dDownBias: Tensor; dUpWeight: Tensor; dUpBias: Tensor; dScaling?: Tensor }

/** One adapter at one site of one layer, ready to run: what the models' blocks take. */
export interface SiteRun {
  config: BnConfig;
  weights: AdapterWeights;
  activation: Activation;
  scaling: number;
  dropout: { p: number; seed: number } | null;
  /** Receives the adapter's gradients; absent when the adapter does not train. */
  accumulate?: (g: SiteGradients) => void;
}

/** What the registry needs of its model. */
export interface AdapterHostShape {
  numLayers: number;
  hiddenSize: number;
  device: string;
  dtype: FloatDType;
  /** AdapterHub's tensor name prefix of an adapter site. */
  adapterPrefix(layer: number, site: SiteName, name: string): string;
  /** The first initialisation seed of the n-th adapter added (n from 1). */
  seedOf(n: number): number;
  /** Config fields the model cannot run: throws naming them. */
  checkConfig?(cfg: BnConfig): void;
  /** The dropout of AdapterFusion's scores when its config sets none (BERT: attention_probs_dropout_prob). */
  fusionDropout?: number;
}

/** A composed site, ready to run (lib/adapted/compose.ts). */
export interface ComposedSite {
  setup: CompositionBlock;
  ctx: ComposeContext;
}

/** Names that would collide with object internals wherever names key a plain object or a map's JSON. */
export const RESERVED_NAMES = new Set(['__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'toString', 'valueOf']);
/** A bottleneck wider than this many times the hidden size is a mistake (AdapterHub's widest is 2×). */
const MAX_BOTTLENECK_FACTOR = 16;

export class AdapterRegistry {
  private readonly entries = new Map<string, AdapterEntry>();
  private activeName: string | null = null;
  /** A composition block when one is active (activeName is then null). */
  private activeBlock: CompositionBlock | null = null;
  private trainedName: string | null = null;
  /** Adapters that get gradients besides trainedName (a composition trained with trainAdapter). */
  private readonly trainedSet = new Set<string>();
  private readonly fusions = new Map<string, FusionEntry>();
  private readonly trainedFusions = new Set<string>();
  private readonly mixtures = new Map<string, MixtureEntry>();
  private readonly trainedMixtures = new Set<string>();
  /** Σ over sites of the load-balancing losses of the last forward (times balanceWeight). */
  private balanceLoss = 0;
  private readonly gradients = new Map<string, Tensor>();

  constructor(private readonly host: AdapterHostShape) {}

  add(name: string, config: AdapterConfigInput, opts: { seed?: number } = {}): void {
    const h = this.host;
    if (typeof name !== 'string' || !/^[A-Za-z0-9_-]+$/.test(name))
      throw new Error(`addAdapter: name must be letters, digits, '_' or '-'; got '${String(name)}'`);
    if (this.entries.has(name)) throw new Error(`addAdapter: an adapter named '${name}' already exists`);
    if (RESERVED_NAMES.has(name)) throw new Error(`addAdapter: '${name}' cannot name an adapter`);
    const cfg = resolveConfig(config);
    const L = h.numLayers;
    const bad = cfg.leave_out.find((i) => !Number.isInteger(i) || i < 0 || i >= L);
    if (bad !== undefined) throw new Error(`addAdapter: leave_out holds ${bad}; the backbone has layers 0..${L - 1}`);
    h.checkConfig?.(cfg);
    for (let i = 0; i < L; i++) {
      const r = bottleneckSize(cfg, h.hiddenSize, i);
      if (r > MAX_BOTTLENECK_FACTOR * h.hiddenSize)
        throw new Error(`addAdapter: reduction_factor ${JSON.stringify(cfg.reduction_factor)} gives a bottleneck of ${r} at layer ${i}, `
          + `over ${MAX_BOTTLENECK_FACTOR}× the hidden size ${h.hiddenSize}`);
    }
    const act = activationOf(cfg.non_linearity);
    const init = cfg.init_weights === 'mam_adapter' ? 'mam' : cfg.init_weights;
    const sites = new Map<string, { prefix: string; layer: BottleneckAdapter }>();
    let seed = opts.seed ?? h.seedOf(this.entries.size + 1);
    for (let i = 0; i < L; i++) {
      if (cfg.leave_out.includes(i)) continue;
      for (const site of ['mh', 'output'] as const) {
        if (site === 'mh' ? !cfg.mh_adapter : !cfg.output_adapter) continue;
        const layer = new BottleneckAdapter({
          hiddenSize: h.hiddenSize, bottleneckSize: bottleneckSize(cfg, h.hiddenSize, i), activation: act, init,
          scaling: cfg.scaling, dropout: cfg.dropout, device: h.device, dtype: h.dtype, seed: seed++,
        });
        sites.set(`${i}.${site}`, { prefix: h.adapterPrefix(i, site, name), layer });
      }
    }
    this.entries.set(name, { name, config: cfg, sites });
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  entry(name: string, op: string): AdapterEntry {
    const e = this.entries.get(name);
    if (!e) throw new Error(`${op}: no adapter named '${name}' (have: ${[...this.entries.keys()].join(', ') || 'none'})`);
    return e;
  }

  all(): IterableIterator<[string, AdapterEntry]> {
    return this.entries.entries();
  }

  /** The adapter's tensors by AdapterHub name. */
  parameters(name: string): Map<string, Tensor> {
    const m = new Map<string, Tensor>();
    for (const s of this.entry(name, 'adapterParameters').sites.values()) for (const [k, t] of s.layer.parameters()) m.set(`${s.prefix}.${k}`, t);
    return m;
  }

  get active(): string | null {
    return this.activeName;
  }

  /** What runs: an adapter name, a composition block, or null. */
  get activeSetup(): Composition | null {
    return this.activeBlock ?? this.activeName;
  }

  get trained(): string | null {
    return this.trainedName;
  }

  setActive(name: string | null, op = 'setActiveAdapter'): void {
    if (name !== null) this.entry(name, op);
    this.activeName = name;
    this.activeBlock = null;
  }

  /**
   * Activates a composition (a block, its string form such as 'Stack(a, Fuse(b, c))', or one adapter
   * name): every adapter and fusion in it must exist.
   */
  setActiveSetup(setup: Composition | null, op = 'setActiveAdapters'): void {
    const parsed = typeof setup === 'string' ? parseComposition(setup) : setup;
    if (parsed === null || typeof parsed === 'string') return this.setActive(parsed, op);
    if (!(parsed instanceof CompositionBlock)) throw new Error(`${op}: pass an adapter name, a composition block or its string form`);
    validateComposition(parsed);
    for (const n of parsed.flatten()) this.entry(n, op);
    for (const f of fusesOf(parsed)) this.fusionEntry(f.name, op);
    if (parsed.kind === 'Mixture') this.mixtureEntry(parsed.name, op);
    this.activeName = null;
    this.activeBlock = parsed.kind === 'Stack' && parsed.children.length === 1 && typeof parsed.children[0] === 'string' ? null : parsed;
    if (!this.activeBlock) this.activeName = parsed.children[0] as string;
  }

  /** `name` trains: it becomes active and the gradients start from zero. */
  train(name: string): void {
    this.entry(name, 'trainAdapter');
    this.trainedName = name;
    this.trainedSet.clear();
    this.trainedFusions.clear();
    this.trainedMixtures.clear();
    this.activeName = name;
    this.activeBlock = null;
    this.zeroGrad();
  }

  /** Every adapter of a composition trains (AdapterHub's train_adapter(Stack(...))), and it becomes active. */
  trainSetup(setup: Composition): void {
    this.setActiveSetup(setup, 'trainAdapter');
    const names = this.activeBlock ? [...this.activeBlock.flatten()] : [this.activeName!];
    this.trainedName = names.length === 1 ? names[0] : null;
    this.trainedSet.clear();
    this.trainedFusions.clear();
    this.trainedMixtures.clear();
    for (const n of names) this.trainedSet.add(n);
    this.zeroGrad();
  }

  /**
   * AdapterHub's train_adapter_fusion: the composition becomes active and its fusion layers train; the
   * adapters stay frozen unless `unfreezeAdapters`.
   */
  trainFusion(setup: Composition, unfreezeAdapters = false): void {
    let s = typeof setup === 'string' ? parseComposition(setup) : setup;
    if (Array.isArray(s)) s = Fuse(...(s as string[]));
    if (typeof s === 'string') s = Fuse(s);
    this.setActiveSetup(s, 'trainFusion');
    const fuses = fusesOf(s as CompositionBlock);
    if (!fuses.length) throw new Error(`trainFusion: ${s} has no Fuse block`);
    this.trainedName = null;
    this.trainedSet.clear();
    this.trainedFusions.clear();
    this.trainedMixtures.clear();
    if (unfreezeAdapters) for (const n of (s as CompositionBlock).flatten()) this.trainedSet.add(n);
    for (const f of fuses) this.trainedFusions.add(f.name);
    this.zeroGrad();
  }

  /** Everything that trains here (the trained adapters and fusions), by AdapterHub name. */
  trainableParameters(): Map<string, Tensor> {
    const m = new Map<string, Tensor>();
    const names = new Set([...this.trainedSet, ...(this.trainedName ? [this.trainedName] : [])]);
    for (const n of names) for (const [k, t] of this.parameters(n)) m.set(k, t);
    for (const f of this.trainedFusions) for (const [k, t] of this.fusionParameters(f)) m.set(k, t);
    for (const x of this.trainedMixtures) for (const [k, t] of this.mixtureParameters(x)) m.set(k, t);
    return m;
  }

  private trains(name: string): boolean {
    return name === this.trainedName || this.trainedSet.has(name);
  }

  // ---- fusions ----

  /**
   * AdapterHub's add_adapter_fusion: a fusion layer at each site where all its adapters have one
   * (their mh_adapter / output_adapter settings must agree), named by the adapters joined with ','.
   */
  addFusion(setup: Composition | string[], config?: FusionConfigInput, opts: { seed?: number; name?: string } = {}): string {
    const block = Array.isArray(setup) ? Fuse(...setup) : typeof setup === 'string' ? parseComposition(setup) : setup;
    const fuse = typeof block === 'string' ? Fuse(block) : block.kind === 'Fuse' ? block : null;
    if (!fuse) throw new Error(`addFusion: pass the adapters to fuse (names or Fuse(...)), got ${String(block)}`);
    const adapters = fuse.children.map((c) => (typeof c === 'string' ? c : c.last()));
    const name = opts.name ?? fuse.name;
    if (this.fusions.has(name)) throw new Error(`addFusion: a fusion named '${name}' already exists`);
    const entries = adapters.map((n) => this.entry(n, 'addFusion'));
    const cfg = resolveFusionConfig(config);
    const h = this.host;
    const sites = new Map<string, { prefix: string; layer: FusionLayer }>();
    let seed = opts.seed ?? h.seedOf(100 + this.fusions.size);
    for (const where of ['mh', 'output'] as const) {
      const flags = entries.map((e) => (where === 'mh' ? e.config.mh_adapter : e.config.output_adapter));
      if (flags.some((f) => f !== flags[0])) throw new Error(`addFusion: all fused adapters must agree on ${where === 'mh' ? 'mh_adapter' : 'output_adapter'}`);
      if (!flags[0]) continue;
      for (let i = 0; i < h.numLayers; i++) {
        const layer = new FusionLayer(cfg, h.hiddenSize, { device: h.device, dtype: h.dtype, seed });
        seed += 3;
        sites.set(`${i}.${where}`, { prefix: this.fusionPrefix(i, where, name), layer });
      }
    }
    this.fusions.set(name, { name, adapters, config: cfg, sites });
    return name;
  }

  fusionNames(): string[] {
    return [...this.fusions.keys()];
  }

  fusionEntry(name: string, op: string): FusionEntry {
    const e = this.fusions.get(name);
    if (!e) throw new Error(`${op}: no fusion named '${name}' (have: ${[...this.fusions.keys()].join(', ') || 'none'}; addFusion first)`);
    return e;
  }

  /** A fusion's tensors by AdapterHub name. */
  fusionParameters(name: string): Map<string, Tensor> {
    return fusionTensors(this.fusionEntry(name, 'fusionParameters'));
  }

  deleteFusion(name: string): void {
    const e = this.fusionEntry(name, 'deleteFusion');
    for (const s of e.sites.values()) s.layer.dispose();
    this.fusions.delete(name);
    if (this.activeBlock && fusesOf(this.activeBlock).some((f) => f.name === name)) this.activeBlock = null;
    if (this.trainedFusions.delete(name)) this.zeroGrad();
  }

  // ---- routed mixtures (mixture.ts) ----

  /**
   * A routed mixture over a pool of adapters that share one configuration and bottleneck: a gate at each
   * site where they all have a module. Returns the block that activates it.
   */
  addMixture(name: string, adapters: string[], config: Partial<MixtureConfig> = {}, opts: { seed?: number } = {}): CompositionBlock {
    if (typeof name !== 'string' || !/^[A-Za-z0-9_-]+$/.test(name)) throw new Error(`addMixture: name must be letters, digits, '_' or '-'; got '${String(name)}'`);
    if (this.mixtures.has(name)) throw new Error(`addMixture: a mixture named '${name}' already exists`);
    if (!Array.isArray(adapters) || adapters.length < 2) throw new Error('addMixture: the pool needs at least two adapters');
    const entries = adapters.map((n) => this.entry(n, 'addMixture'));
    const shape = (e: AdapterEntry) => JSON.stringify([e.config.is_parallel, e.config.original_ln_before, e.config.residual_before_ln,
      activationOf(e.config.non_linearity), [...e.sites.entries()].map(([k, v]) => [k, v.layer.bottleneckSize]).sort()]);
    if (new Set(entries.map(shape)).size > 1)
      throw new Error(`addMixture: the pool's adapters must share one configuration (placement, sites, bottleneck sizes, non-linearity); ${adapters.join(', ')} differ`);
    for (const e of entries) if (typeof e.config.scaling !== 'number') throw new Error(`addMixture: '${e.name}' has a learned scaling, which the batched op does not take`);
    const cfg = resolveMixtureConfig(config);
    const sites = new Map<string, { name: string; gate: Tensor }>();
    let seed = opts.seed ?? this.host.seedOf(200 + this.mixtures.size);
    for (const key of entries[0].sites.keys()) {
      const [layer, where] = key.split('.') as [string, SiteName];
      const p = this.host.adapterPrefix(Number(layer), where, '');
      sites.set(key, { name: `${p.slice(0, p.length - 'adapters.'.length)}adapter_mixture.${name}.gate.weight`,
        gate: newGate(adapters.length, this.host.hiddenSize, { device: this.host.device, dtype: this.host.dtype, seed: seed++ }) });
    }
    this.mixtures.set(name, { name, adapters: [...adapters], config: cfg, sites });
    return Mixture(name, adapters);
  }

  mixtureEntry(name: string, op: string): MixtureEntry {
    const e = this.mixtures.get(name);
    if (!e) throw new Error(`${op}: no mixture named '${name}' (have: ${[...this.mixtures.keys()].join(', ') || 'none'})`);
    return e;
  }

  mixtureNames(): string[] {
    return [...this.mixtures.keys()];
  }

  /** The gates' tensors by name (….adapter_mixture.<name>.gate.weight per site). */
  mixtureParameters(name: string): Map<string, Tensor> {
    return new Map([...this.mixtureEntry(name, 'mixtureParameters').sites.values()].map((s) => [s.name, s.gate]));
  }

  deleteMixture(name: string): void {
    const e = this.mixtureEntry(name, 'deleteMixture');
    for (const s of e.sites.values()) s.gate.dispose();
    this.mixtures.delete(name);
    if (this.activeBlock?.kind === 'Mixture' && this.activeBlock.name === name) this.activeBlock = null;
    if (this.trainedMixtures.delete(name)) this.zeroGrad();
  }

  /** The mixture becomes active and its gates train (and its adapters, with trainAdapters). */
  trainMixture(name: string, trainAdapters = false): void {
    const e = this.mixtureEntry(name, 'trainMixture');
    this.activeName = null;
    this.activeBlock = Mixture(name, e.adapters);
    this.trainedName = null;
    this.trainedSet.clear();
    this.trainedFusions.clear();
    this.trainedMixtures.clear();
    this.trainedMixtures.add(name);
    if (trainAdapters) for (const n of e.adapters) this.trainedSet.add(n);
    this.zeroGrad();
  }

  /** The load-balancing loss of the last forward, summed over sites (times balanceWeight; 0 without a mixture). */
  get lastBalanceLoss(): number {
    return this.balanceLoss;
  }

  /** `<layer prefix>.adapter_fusion_layer.<name>`, beside the site's `adapters.<adapter>`. */
  fusionPrefix(layer: number, where: SiteName, name: string): string {
    const p = this.host.adapterPrefix(layer, where, '');
    return `${p.slice(0, p.length - 'adapters.'.length)}adapter_fusion_layer.${name}`;
  }

  /**
   * Called at the start of each forward: the fusions the active composition runs lower their
   * temperature (BertFusion lowers T on every forward), once per forward.
   */
  beginForward(): void {
    this.balanceLoss = 0;
    if (!this.activeBlock) return;
    for (const f of fusesOf(this.activeBlock)) for (const s of this.fusions.get(f.name)!.sites.values()) s.layer.advance();
  }

  /**
   * Adds the gradient of AdapterHub's fusion regularisation (0.01·Σ‖I − V‖² over the training fusions'
   * value matrices) to grads(), as its AdapterTrainer does once per step; returns the loss (0: none).
   */
  fusionRegularization(): number {
    let loss = 0;
    for (const n of this.trainedFusions) {
      const e = this.fusions.get(n)!;
      if (!e.config.regularization) continue;
      const r = valueRegularization(e);
      loss += r.loss;
      for (const [k, g] of r.grads) {
        const t = tensor(g, [g.length], { device: this.host.device });
        const shaped = t.reshape([...this.fusionParameters(n).get(k)!.shape]);
        this.accumulate(k, shaped);
        t.dispose();
        shaped.dispose();
      }
    }
    return loss;
  }

  delete(name: string): void {
    const e = this.entry(name, 'deleteAdapter');
    for (const f of this.fusions.values())
      if (f.adapters.includes(name)) throw new Error(`deleteAdapter: fusion '${f.name}' uses '${name}' (deleteFusion first)`);
    for (const x of this.mixtures.values())
      if (x.adapters.includes(name)) throw new Error(`deleteAdapter: mixture '${x.name}' uses '${name}' (deleteMixture first)`);
    if (this.activeBlock?.flatten().has(name)) this.activeBlock = null;
    this.trainedSet.delete(name);
    for (const s of e.sites.values()) s.layer.dispose();
    this.entries.delete(name);
    if (this.activeName === name) this.activeName = null;
    if (this.trainedName === name) {
      this.trainedName = null;
      this.zeroGrad();
    }
  }

  /** The active adapter at (layer, site), with gradients routed here when it is the trained one. */
  site(layer: number, where: SiteName, training: boolean, seed: number): SiteRun | null {
    if (!this.activeName) return null;
    return this.runOf(this.activeName, layer, where, training, seed);
  }

  /** The active composition at (layer, site), or null when none is active or none of its adapters is here. */
  composedSite(layer: number, where: SiteName, training: boolean, seed: number): ComposedSite | null {
    const block = this.activeBlock;
    if (!block) return null;
    const key = `${layer}.${where}`;
    if (![...block.flatten()].some((n) => this.entries.get(n)!.sites.has(key))) return null;
    let use = 0;
    return {
      setup: block,
      ctx: {
        seed,
        mixture: (name) => {
          const e = this.mixtureEntry(name, 'forward');
          const s = e.sites.get(key)!;
          return {
            config: e.config, gate: s.gate,
            pool: e.adapters.map((n) => this.runOf(n, layer, where, false, 0)!),
            accumulate: this.trainedMixtures.has(name) ? (g) => this.accumulate(s.name, g) : undefined,
            report: (loss) => { this.balanceLoss += loss; },
          };
        },
        adapter: (name) => this.runOf(name, layer, where, training, seed + 7919 * ++use),
        fusion: (name): FusionRun => {
          const e = this.fusionEntry(name, 'forward');
          const s = e.sites.get(key);
          if (!s) throw new Error(`forward: fusion '${name}' has no layer at layer ${layer} (${where})`);
          const p = e.config.dropout_prob ?? this.host.fusionDropout ?? 0;
          return {
            config: e.config, params: s.layer.params, temperature: s.layer.temperature,
            dropout: training && p > 0 ? { p, seed: seed + 104729 * ++use } : null,
            accumulate: this.trainedFusions.has(name) ? (param, g) => this.accumulate(`${s.prefix}.${param}`, g) : undefined,
          };
        },
      },
    };
  }

  private runOf(name: string, layer: number, where: SiteName, training: boolean, seed: number): SiteRun | null {
    const e = this.entries.get(name)!;
    const s = e.sites.get(`${layer}.${where}`);
    if (!s) return null;
    const p = s.layer.parameters();
    const weights: AdapterWeights = {
      downWeight: p.get('adapter_down.0.weight')!, downBias: p.get('adapter_down.0.bias')!,
      upWeight: p.get('adapter_up.weight')!, upBias: p.get('adapter_up.bias')!, scaling: p.get('scaling'),
    };
    const trained = this.trains(name);
    return {
      config: e.config, weights, activation: s.layer.activation,
      scaling: typeof e.config.scaling === 'number' ? e.config.scaling : 1,
      dropout: training && e.config.dropout > 0 ? { p: e.config.dropout, seed } : null,
      accumulate: trained ? (g) => {
        this.accumulate(`${s.prefix}.adapter_down.0.weight`, g.dDownWeight);
        this.accumulate(`${s.prefix}.adapter_down.0.bias`, g.dDownBias);
        this.accumulate(`${s.prefix}.adapter_up.weight`, g.dUpWeight);
        this.accumulate(`${s.prefix}.adapter_up.bias`, g.dUpBias);
        if (g.dScaling) this.accumulate(`${s.prefix}.scaling`, g.dScaling);
      } : undefined,
    };
  }

  /**
   * Several adapters at once (serving): `names` gives each row's adapter (null: none). They must share
   * one configuration. Returns, for one (layer, site), their weights stacked for adapterForwardBatched
   * (freed with `scope`), each row's index into the stack (-1: none, per token of `tokensPerRow`), or
   * null when none of them has this site.
   */
  batchedSite(names: (string | null)[], layer: number, where: SiteName, tokensPerRow: number, scope: Scope):
    { config: BnConfig; weights: StackedAdapterWeights; rows: Int32Array; scales: number[]; activation: Activation } | null {
    const distinct = [...new Set(names.filter((n): n is string => n !== null))];
    if (!distinct.length) return null;
    const entries = distinct.map((n) => this.entry(n, 'generate'));
    const shapeOf = (e: AdapterEntry) => JSON.stringify({
      parallel: e.config.is_parallel, lnBefore: e.config.original_ln_before, act: activationOf(e.config.non_linearity),
      sites: [...e.sites.entries()].map(([k, v]) => [k, v.layer.bottleneckSize]).sort(),
    });
    if (new Set(entries.map(shapeOf)).size > 1)
      throw new Error(`per-row adapters must share one configuration (placement, sites, bottleneck sizes, non-linearity); ${distinct.join(', ')} differ`);
    for (const e of entries)
      if (typeof e.config.scaling !== 'number') throw new Error(`per-row adapters: '${e.name}' has a learned scaling, which batched serving does not support`);
    const sites = entries.map((e) => e.sites.get(`${layer}.${where}`));
    if (!sites[0]) return null;
    const stacked = (k: string) => scope.t(stack(sites.map((st) => st!.layer.parameters().get(k)!)));
    const rows = new Int32Array(names.length * tokensPerRow);
    names.forEach((n, b) => rows.fill(n === null ? -1 : distinct.indexOf(n), b * tokensPerRow, (b + 1) * tokensPerRow));
    return {
      config: entries[0].config,
      weights: { downWeight: stacked('adapter_down.0.weight'), downBias: stacked('adapter_down.0.bias'), upWeight: stacked('adapter_up.weight'), upBias: stacked('adapter_up.bias') },
      rows, scales: entries.map((e) => e.config.scaling as number), activation: sites[0].layer.activation,
    };
  }

  /** The lowest layer holding a site of something trained that runs (numLayers when none). */
  lowestTrainedLayer(): number {
    let low = this.host.numLayers;
    const lowest = (keys: Iterable<string>) => {
      for (const key of keys) low = Math.min(low, Number(key.split('.')[0]));
    };
    if (this.activeBlock) {
      for (const n of this.activeBlock.flatten()) if (this.trains(n)) lowest(this.entries.get(n)!.sites.keys());
      for (const f of fusesOf(this.activeBlock)) if (this.trainedFusions.has(f.name)) lowest(this.fusions.get(f.name)!.sites.keys());
      if (this.activeBlock.kind === 'Mixture' && this.trainedMixtures.has(this.activeBlock.name)) lowest(this.mixtures.get(this.activeBlock.name)!.sites.keys());
      return low;
    }
    if (!this.activeName || !this.trains(this.activeName)) return low;
    lowest(this.entries.get(this.activeName)!.sites.keys());
    return low;
  }

  /** Adds g (any float dtype; copied, so the caller may free it) to the fp32 gradient of `name`. */
  accumulate(name: string, g: Tensor): void {
    const prev = this.gradients.get(name);
    const g32 = g.dtype === 'float32' ? g : cast(g, 'float32');
    const next = prev ? add(prev, g32) : g32 === g ? g.to({}) : g32;
    if (g32 !== g && prev) g32.dispose();
    prev?.dispose();
    this.gradients.set(name, next);
  }

  grads(): Map<string, Tensor> {
    return new Map(this.gradients);
  }

  zeroGrad(): void {
    for (const t of this.gradients.values()) t.dispose();
    this.gradients.clear();
  }

  dispose(): void {
    for (const n of this.mixtureNames()) this.deleteMixture(n);
    for (const n of this.fusionNames()) this.deleteFusion(n);
    for (const n of this.names()) this.delete(n);
    this.zeroGrad();
  }
}

/** Every Fuse block inside a composition (itself included). */
export function fusesOf(c: Composition): CompositionBlock[] {
  if (typeof c === 'string') return [];
  return [...(c.kind === 'Fuse' ? [c] : []), ...c.children.flatMap(fusesOf)];
}
