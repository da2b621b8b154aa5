// AdapterFusion layers (AdapterHub's BertFusion): their configuration ('dynamic', 'static' or the
// fields), and one layer per adapter site — query and key projections with bias, a value projection
// without bias (initialised to the identity plus 1e-6 when value_initialized), the temperature that
// falls by T/1000 on every forward from 50 (temperature: true) or stays 1.
import { randn, Tensor, tensor } from '../tensor';
import type { FloatDType } from '../tensor';

export interface FusionConfig {
  key: boolean;
  query: boolean;
  value: boolean;
  query_before_ln: boolean;
  regularization: boolean;
  residual_before: boolean;
  temperature: boolean;
  value_before_softmax: boolean;
  value_initialized: boolean | string;
  dropout_prob: number | null;
}

const STATIC: FusionConfig = {
  key: true, query: true, value: false, query_before_ln: false, regularization: false, residual_before: false,
  temperature: false, value_before_softmax: true, value_initialized: false, dropout_prob: null,
};
const DYNAMIC: FusionConfig = { ...STATIC, value: true, regularization: true, value_initialized: true };
export const FUSION_CONFIGS: Record<string, FusionConfig> = { static: STATIC, dynamic: DYNAMIC };

export type FusionConfigInput = 'dynamic' | 'static' | (Partial<FusionConfig> & { base?: 'dynamic' | 'static' });

/** A full fusion config from a name, or fields over a base ('dynamic' unless given), checked. */
export function resolveFusionConfig(input: FusionConfigInput | undefined, where = 'addFusion'): FusionConfig {
  if (input === undefined) return { ...DYNAMIC };
  if (typeof input === 'string') {
    const c = FUSION_CONFIGS[input];
    if (!c) throw new Error(`${where}: unknown fusion config '${input}' (dynamic, static, or an object of fields)`);
    return { ...c };
  }
  if (!input || typeof input !== 'object') throw new Error(`${where}: the fusion config must be 'dynamic', 'static' or an object`);
  const { base, ...fields } = input;
  const out: FusionConfig = { ...(base === 'static' ? STATIC : DYNAMIC) };
  for (const [k, v] of Object.entries(fields)) {
    if (!(k in out)) throw new Error(`${where}: unknown fusion config field '${k}'`);
    if (k === 'dropout_prob') {
      if (v !== null && !(typeof v === 'number' && v >= 0 && v < 1)) throw new Error(`${where}: dropout_prob must be null or in [0, 1)`);
    } else if (k === 'value_initialized') {
      if (typeof v !== 'boolean' && typeof v !== 'string') throw new Error(`${where}: value_initialized must be true or false`);
    } else if (typeof v !== 'boolean') throw new Error(`${where}: ${k} must be true or false`);
    (out as unknown as Record<string, unknown>)[k] = v;
  }
  return out;
}

/** The parameter names of one fusion layer, as AdapterHub names them below `adapter_fusion_layer.<name>`. */
export function fusionParamNames(c: FusionConfig): string[] {
  return [
    ...(c.query ? ['query.weight', 'query.bias'] : []),
    ...(c.key ? ['key.weight', 'key.bias'] : []),
    ...(c.value ? ['value.weight'] : []),
  ];
}

/** One fusion layer at one site: its tensors and its temperature. */
export class FusionLayer {
  readonly params = new Map<string, Tensor>();
  /** BertFusion's T: 50 falling by 0.05 per forward to 1 with temperature, else 1. */
  private T: number;
  private readonly reduction: number;

  constructor(readonly config: FusionConfig, H: number, o: { device: string; dtype: FloatDType; seed: number }) {
    this.T = config.temperature ? 50 : 1;
    this.reduction = this.T / 1000;
    let seed = o.seed;
    const linear = (name: string, bias: boolean) => {
      this.params.set(`${name}.weight`, randn([H, H], { std: 0.02, seed: seed++, device: o.device, dtype: o.dtype }));
      if (bias) this.params.set(`${name}.bias`, tensor(new Float32Array(H), [H], { device: o.device, dtype: o.dtype }));
    };
    if (config.query) linear('query', true);
    if (config.key) linear('key', true);
    if (config.value) {
      if (config.value_initialized) {
        const v = new Float32Array(H * H).fill(1e-6);
        for (let i = 0; i < H; i++) v[i * H + i] = 1;
        this.params.set('value.weight', tensor(v, [H, H], { device: o.device, dtype: o.dtype }));
      } else linear('value', false);
    }
  }

  /** The temperature of the forward in progress (set by advance()). */
  temperature = 1;

  /**
   * Called once at the start of each model forward: fixes this forward's temperature and lowers the next
   * one, as BertFusion lowers self.T after every use (a recomputed layer reuses the same value).
   */
  advance(): void {
    this.temperature = this.T;
    this.T = Math.max(this.T - this.reduction, 1);
  }

  dispose(): void {
    for (const t of this.params.values()) t.dispose();
    this.params.clear();
  }
}

/** One AdapterFusion: its adapters, config and a layer per site (key `${layer}.${site}`) with its tensor-name prefix. */
export interface FusionEntry {
  name: string;
  adapters: string[];
  config: FusionConfig;
  sites: Map<string, { prefix: string; layer: FusionLayer }>;
}

/** The tensors of a fusion by AdapterHub name (`<prefix>.query.weight`, ...). */
export function fusionTensors(e: FusionEntry): Map<string, Tensor> {
  const m = new Map<string, Tensor>();
  for (const s of e.sites.values()) for (const [k, t] of s.layer.params) m.set(`${s.prefix}.${k}`, t);
  return m;
}

/** AdapterHub's fusion regularisation: 0.01·Σ‖I − V‖² over the value matrices, and its gradient 0.02·(V − I) per matrix. */
export function valueRegularization(e: FusionEntry): { loss: number; grads: Map<string, Float32Array> } {
  let loss = 0;
  const grads = new Map<string, Float32Array>();
  for (const s of e.sites.values()) {
    const v = s.layer.params.get('value.weight');
    if (!v) continue;
    const H = v.shape[0];
    const a = v.toArray();
    const g = new Float32Array(a.length);
    for (let i = 0; i < a.length; i++) {
      const d = a[i] - (Math.floor(i / H) === i % H ? 1 : 0);
      loss += 0.01 * d * d;
      g[i] = 0.02 * d;
    }
    grads.set(`${s.prefix}.value.weight`, g);
  }
  return { loss, grads };
}
