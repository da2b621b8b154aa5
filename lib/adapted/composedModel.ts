// What the encoder (Backbone) and the Decoder share about compositions, fusions and routed mixtures:
// thin delegates to their AdapterRegistry (registry.ts) and the files (fusionFiles.ts, mixtureFiles.ts).
// The model-specific parts (training a fusion with heads, saving a fusion with a head) stay in each class.
import type { Tensor } from '../tensor';
import type { AdapterRegistry } from './registry';
import type { Composition, CompositionBlock } from './composition';
import type { FusionConfig, FusionConfigInput } from './fusion';
import type { MixtureConfig } from './mixture';
import { loadFusion as loadFusionFiles } from '../adapterhub/fusionFiles';
import type { FusionHost } from '../adapterhub/fusionFiles';
import { loadMixture as loadMixtureFiles, saveMixture as saveMixtureFiles } from './mixtureFiles';
import type { MixtureHost } from './mixtureFiles';

export abstract class ComposedModel {
  /** The model's adapters, fusions and mixtures (set by the subclass's constructor). */
  protected adapters!: AdapterRegistry;

  /**
   * Activates a composition of adapters, AdapterHub's set_active_adapters: a block (Stack, Parallel,
   * BatchSplit, Average, Fuse, nested as AdapterHub allows; or a Mixture) or its string form
   * ('Stack(a, Fuse(b, c))'), or one adapter name; null for none.
   */
  setActiveAdapters(setup: Composition | null): void {
    this.adapters.setActiveSetup(setup);
  }

  /** The active composition, adapter name, or null. */
  get activeAdapters(): Composition | null {
    return this.adapters.activeSetup;
  }

  // ---- AdapterFusion (fusion.ts) ----

  /**
   * AdapterHub's add_adapter_fusion: an AdapterFusion over the adapters (names, or Fuse(...)), named by
   * them joined with ','; config 'dynamic' (default), 'static' or fields. Returns its name.
   */
  addFusion(adapters: string[] | Composition, config?: FusionConfigInput, opts: { seed?: number; name?: string } = {}): string {
    return this.adapters.addFusion(adapters, config, opts);
  }

  fusionNames(): string[] {
    return this.adapters.fusionNames();
  }

  /** The adapters a fusion attends over, in order. */
  fusionAdapters(name: string): string[] {
    return [...this.adapters.fusionEntry(name, 'fusionAdapters').adapters];
  }

  fusionConfig(name: string): FusionConfig {
    return { ...this.adapters.fusionEntry(name, 'fusionConfig').config };
  }

  /** The fusion's tensors by AdapterHub name (….adapter_fusion_layer.<name>.query.weight, …). */
  fusionParameters(name: string): Map<string, Tensor> {
    return this.adapters.fusionParameters(name);
  }

  deleteFusion(name: string): void {
    this.adapters.deleteFusion(name);
  }

  /**
   * AdapterHub's fusion regularisation, once per training step: adds the gradient of 0.01·Σ‖I − V‖² over the
   * training fusions' value matrices to grads(); returns that loss (0 without a regularised fusion).
   */
  fusionRegularization(): number {
    return this.adapters.fusionRegularization();
  }

  /** Loads a fusion saved by AdapterHub or saveFusion (its adapters loaded first); returns its name. */
  loadFusion(dir: string, opts: { strict?: boolean } = {}): string {
    return loadFusionFiles(this as unknown as FusionHost, dir, opts);
  }

  // ---- routed mixtures (mixture.ts) ----

  /**
   * A routed mixture over a pool of adapters (one configuration and bottleneck): a learned gate per site sends
   * each token to its top-k adapters (topK 1 or 2), at most capacityFactor·N·k/A tokens per adapter, with a
   * load-balancing loss (balanceWeight). Returns the block to activate: setActiveAdapters(block).
   */
  addMixture(name: string, adapters: string[], config: Partial<MixtureConfig> = {}, opts: { seed?: number } = {}): CompositionBlock {
    return this.adapters.addMixture(name, adapters, config, opts);
  }

  mixtureNames(): string[] {
    return this.adapters.mixtureNames();
  }

  mixtureAdapters(name: string): string[] {
    return [...this.adapters.mixtureEntry(name, 'mixtureAdapters').adapters];
  }

  mixtureConfig(name: string): MixtureConfig {
    return { ...this.adapters.mixtureEntry(name, 'mixtureConfig').config };
  }

  /** The gates by name (….adapter_mixture.<name>.gate.weight, one [A, H] per site). */
  mixtureParameters(name: string): Map<string, Tensor> {
    return this.adapters.mixtureParameters(name);
  }

  deleteMixture(name: string): void {
    this.adapters.deleteMixture(name);
  }

  /** The mixture becomes active and its gates train (its adapters too with trainAdapters). */
  trainMixture(name: string, opts: { trainAdapters?: boolean } = {}): void {
    this.adapters.trainMixture(name, !!opts.trainAdapters);
  }

  /** The load-balancing loss of the last forward, summed over the mixture's sites (already in its gradients). */
  get balanceLoss(): number {
    return this.adapters.lastBalanceLoss;
  }

  /** Saves a mixture: its config, gates and adapters (mixtureFiles.ts). */
  saveMixture(dir: string, name: string): void {
    saveMixtureFiles(this as unknown as MixtureHost, dir, name);
  }

  /** Loads a mixture saveMixture wrote (its adapters too, unless loaded); returns the block to activate. */
  loadMixture(dir: string): CompositionBlock {
    return loadMixtureFiles(this as unknown as MixtureHost, dir);
  }
}
