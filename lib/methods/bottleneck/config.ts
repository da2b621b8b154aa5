// AdapterHub bottleneck configs: the same names, fields and defaults, so configs and
// adapter_config.json files move between this package and AdapterHub.
import type { Activation } from './functional';

export type ConfigName = 'seq_bn' | 'double_seq_bn' | 'par_bn';
const ALIASES: Record<string, ConfigName> = {
  seq_bn: 'seq_bn', pfeiffer: 'seq_bn', double_seq_bn: 'double_seq_bn', houlsby: 'double_seq_bn',
  par_bn: 'par_bn', parallel: 'par_bn',
};

/** AdapterHub's BnConfig fields (snake_case, as adapter_config.json stores them). */
export interface BnConfig {
  architecture: 'bottleneck';
  mh_adapter: boolean;
  output_adapter: boolean;
  reduction_factor: number | Record<string, number>;
  non_linearity: string;
  original_ln_before: boolean;
  original_ln_after: boolean;
  residual_before_ln: boolean;
  is_parallel: boolean;
  scaling: number | 'learned' | 'channel';
  init_weights: 'bert' | 'mam_adapter' | 'houlsby';
  leave_out: number[];
  ln_before: boolean;
  ln_after: boolean;
  adapter_residual_before_ln: boolean;
  use_gating: boolean;
  dropout: number;
}

const BASE: Omit<BnConfig, 'mh_adapter' | 'output_adapter' | 'reduction_factor' | 'non_linearity' | 'original_ln_before' | 'is_parallel' | 'scaling' | 'init_weights'> = {
  architecture: 'bottleneck', original_ln_after: true, residual_before_ln: true, leave_out: [], ln_before: false,
  ln_after: false, adapter_residual_before_ln: false, use_gating: false, dropout: 0,
};

export const DEFAULT_CONFIGS: Record<ConfigName, BnConfig> = {
  seq_bn: { ...BASE, mh_adapter: false, output_adapter: true, reduction_factor: 16, non_linearity: 'relu', original_ln_before: true, is_parallel: false, scaling: 1, init_weights: 'bert' },
  double_seq_bn: { ...BASE, mh_adapter: true, output_adapter: true, reduction_factor: 16, non_linearity: 'swish', original_ln_before: false, is_parallel: false, scaling: 1, init_weights: 'bert' },
  par_bn: { ...BASE, mh_adapter: false, output_adapter: true, reduction_factor: 2, non_linearity: 'relu', original_ln_before: false, is_parallel: true, scaling: 4, init_weights: 'mam_adapter' },
};

/** What users pass to addAdapter: a config name, or a name plus camelCase overrides, or AdapterHub fields. */
export type AdapterConfigInput =
  | string
  | ({ config?: string; type?: string } & {
      reductionFactor?: number | Record<string, number>;
      nonLinearity?: string;
      scaling?: number | 'learned' | 'channel';
      initWeights?: 'bert' | 'mam' | 'mam_adapter' | 'houlsby';
      leaveOut?: number[];
      dropout?: number;
    } & Partial<BnConfig>);

export function configName(s: string): ConfigName {
  const c = ALIASES[s];
  if (!c) throw new Error(`adapter config '${s}' is unknown; use one of ${Object.keys(ALIASES).join(', ')}`);
  return c;
}

export function resolveConfig(input: AdapterConfigInput): BnConfig {
  if (typeof input === 'string') return { ...DEFAULT_CONFIGS[configName(input)] };
  if (!input || typeof input !== 'object') throw new Error('adapter config must be a name or an object');
  // The base config by name: `config`, or `type`/`architecture` holding a config name (not 'bottleneck').
  const named = input.config ?? (input as { type?: string }).type ??
    (typeof input.architecture === 'string' && input.architecture !== 'bottleneck' ? input.architecture : undefined);
  const base = named !== undefined ? DEFAULT_CONFIGS[configName(named)] : inferBase(input);
  const out: BnConfig = { ...base };
  const given = { ...input } as Record<string, unknown>;
  if (given.architecture !== 'bottleneck') delete given.architecture;
  for (const k of Object.keys(BASE).concat(Object.keys(DEFAULT_CONFIGS.seq_bn)) as (keyof BnConfig)[])
    if (given[k] !== undefined) (out as unknown as Record<string, unknown>)[k] = given[k];
  if (input.reductionFactor !== undefined) out.reduction_factor = input.reductionFactor;
  if (input.nonLinearity !== undefined) out.non_linearity = input.nonLinearity;
  if (input.scaling !== undefined) out.scaling = input.scaling;
  if (input.initWeights !== undefined) out.init_weights = input.initWeights === 'mam' ? 'mam_adapter' : input.initWeights;
  if (input.leaveOut !== undefined) out.leave_out = input.leaveOut;
  if (input.dropout !== undefined) out.dropout = input.dropout;
  validate(out);
  return out;
}

function inferBase(c: Partial<BnConfig>): BnConfig {
  if (c.is_parallel) return DEFAULT_CONFIGS.par_bn;
  if (c.mh_adapter) return DEFAULT_CONFIGS.double_seq_bn;
  return DEFAULT_CONFIGS.seq_bn;
}

export function validate(c: BnConfig): void {
  const where = 'adapter config';
  if (!c.residual_before_ln || !c.original_ln_after)
    throw new Error(`${where}: only residual_before_ln=true with original_ln_after=true is supported`);
  if (c.ln_before || c.ln_after || c.use_gating || c.adapter_residual_before_ln)
    throw new Error(`${where}: ln_before, ln_after, use_gating and adapter_residual_before_ln are not supported`);
  if (!c.mh_adapter && !c.output_adapter) throw new Error(`${where}: neither mh_adapter nor output_adapter is set`);
  activationOf(c.non_linearity);
  const rfs = typeof c.reduction_factor === 'number' ? [c.reduction_factor] : Object.values(c.reduction_factor ?? {});
  if (!rfs.length || rfs.some((v) => !(typeof v === 'number' && v > 0)))
    throw new Error(`${where}: reduction_factor must be a positive number or a map of them`);
  if (typeof c.scaling === 'number' ? !Number.isFinite(c.scaling) : !['learned', 'channel'].includes(c.scaling))
    throw new Error(`${where}: scaling must be a number, 'learned' or 'channel'`);
  if (!['bert', 'mam_adapter', 'houlsby'].includes(c.init_weights))
    throw new Error(`${where}: init_weights must be 'bert', 'mam_adapter' or 'houlsby'`);
  if (!Array.isArray(c.leave_out) || c.leave_out.some((v) => !Number.isInteger(v)))
    throw new Error(`${where}: leave_out must be a list of layer indices`);
}

/** AdapterHub's non_linearity names → the kernels' activation. */
export function activationOf(name: string): Activation {
  if (typeof name !== 'string') throw new Error(`adapter config: non_linearity must be a string, got ${JSON.stringify(name)}`);
  switch (name.toLowerCase()) {
    case 'relu': return 'relu';
    case 'swish': case 'silu': return 'silu';
    case 'gelu': case 'gelu_orig': return 'gelu';
    case 'gelu_new': case 'gelu_tanh': return 'gelu_tanh';
    case 'linear': case 'identity': return 'identity';
    default:
      throw new Error(`adapter config: non_linearity '${name}' is not supported (relu, swish, gelu, gelu_new, linear)`);
  }
}

/** The bottleneck size at layer i: hidden / reduction factor (per-layer map with a 'default'). */
export function bottleneckSize(c: BnConfig, hidden: number, layer: number): number {
  const rf = typeof c.reduction_factor === 'number'
    ? c.reduction_factor
    : c.reduction_factor[String(layer)] ?? c.reduction_factor.default;
  if (rf === undefined) throw new Error(`adapter config: no reduction_factor for layer ${layer} and no 'default'`);
  return Math.max(1, Math.floor(hidden / rf));
}
