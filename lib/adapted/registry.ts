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
}

/** Names that would collide with object internals wherever names key a plain object or a map's JSON. */
export const RESERVED_NAMES = new Set(['__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'toString', 'valueOf']);
/** A bottleneck wider than this many times the hidden size is a mistake (AdapterHub's widest is 2×). */
const MAX_BOTTLENECK_FACTOR = 16;

export class AdapterRegistry {
  private readonly entries = new Map<string, AdapterEntry>();
  private activeName: string | null = null;
  private trainedName: string | null = null;
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

  get trained(): string | null {
    return this.trainedName;
  }

  setActive(name: string | null, op = 'setActiveAdapter'): void {
    if (name !== null) this.entry(name, op);
    this.activeName = name;
  }

  /** `name` trains: it becomes active and the gradients start from zero. */
  train(name: string): void {
    this.entry(name, 'trainAdapter');
    this.trainedName = name;
    this.activeName = name;
    this.zeroGrad();
  }

  delete(name: string): void {
    const e = this.entry(name, 'deleteAdapter');
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
    const e = this.entries.get(this.activeName)!;
    const s = e.sites.get(`${layer}.${where}`);
    if (!s) return null;
    const p = s.layer.parameters();
    const weights: AdapterWeights = {
      downWeight: p.get('adapter_down.0.weight')!, downBias: p.get('adapter_down.0.bias')!,
      upWeight: p.get('adapter_up.weight')!, upBias: p.get('adapter_up.bias')!, scaling: p.get('scaling'),
    };
    const trained = this.activeName === this.trainedName;
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

  /** The lowest layer holding a site of the trained, active adapter (numLayers when none). */
  lowestTrainedLayer(): number {
    let low = this.host.numLayers;
    if (!this.activeName || this.activeName !== this.trainedName) return low;
    for (const key of this.entries.get(this.activeName)!.sites.keys()) low = Math.min(low, Number(key.split('.')[0]));
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
    for (const n of this.names()) this.delete(n);
    this.zeroGrad();
  }
}
