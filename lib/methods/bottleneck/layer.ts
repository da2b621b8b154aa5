// BottleneckAdapter: the trainable layer around the fused op, with AdapterHub's
// parameter names and initialisations.
import { defaultDevice } from '../../backend';
import { add } from '../../ops';
import { FloatDType, rand, randn, Tensor, tensor, zeros, ones } from '../../tensor';
import { Activation, adapterBackward, adapterForward, AdapterPath, AdapterSaved, AdapterWeights } from './functional';

export type AdapterInit = 'mam' | 'bert' | 'houlsby';
export type AdapterScaling = number | 'learned' | 'channel';

export interface BottleneckAdapterConfig {
  hiddenSize: number;
  /** bottleneck = max(1, floor(hiddenSize / reductionFactor)), as AdapterHub computes it. */
  reductionFactor?: number;
  bottleneckSize?: number;
  activation?: Activation; // default 'relu'
  init?: AdapterInit; // default 'mam'
  scaling?: AdapterScaling; // default 1
  dropout?: number; // default 0
  device?: string; // default defaultDevice()
  dtype?: FloatDType; // default float32
  seed?: number; // initialisation and dropout seed
  path?: AdapterPath;
}

export const PARAM_NAMES = {
  downWeight: 'adapter_down.0.weight',
  downBias: 'adapter_down.0.bias',
  upWeight: 'adapter_up.weight',
  upBias: 'adapter_up.bias',
  scaling: 'scaling',
} as const;

/** N(0, std) truncated to [-bound, bound] by redrawing the values outside (as torch.nn.init.trunc_normal_). */
function truncatedNormal(shape: number[], std: number, bound: number, seed: number): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  let todo = Array.from({ length: n }, (_, i) => i);
  for (let round = 0; todo.length > 0; round++) {
    const draw = randn([todo.length], { seed: seed + 7919 * round, std }).toArray();
    const left: number[] = [];
    todo.forEach((idx, j) => (Math.abs(draw[j]) <= bound ? (out[idx] = draw[j]) : left.push(idx)));
    todo = left;
  }
  return out;
}

export class BottleneckAdapter {
  readonly hiddenSize: number;
  readonly bottleneckSize: number;
  readonly activation: Activation;
  readonly scalingMode: AdapterScaling;
  readonly dropout: number;
  readonly device: string;
  readonly dtype: FloatDType;
  readonly path: AdapterPath;
  /** Gradients, fp32, keyed like parameters(); accumulated by backward(). */
  readonly grads = new Map<string, Tensor>();
  private readonly weights: AdapterWeights;
  private saved: AdapterSaved | null = null;
  private dropoutSeed: number;

  constructor(cfg: BottleneckAdapterConfig) {
    const op = 'BottleneckAdapter';
    if (!cfg || !Number.isInteger(cfg.hiddenSize) || cfg.hiddenSize < 1)
      throw new Error(`${op}: hiddenSize must be a positive integer`);
    const d = cfg.hiddenSize;
    let r: number;
    if (cfg.bottleneckSize !== undefined) {
      if (!Number.isInteger(cfg.bottleneckSize) || cfg.bottleneckSize < 1)
        throw new Error(`${op}: bottleneckSize must be a positive integer`);
      r = cfg.bottleneckSize;
    } else {
      const rf = cfg.reductionFactor ?? 16;
      if (!(rf > 0)) throw new Error(`${op}: reductionFactor must be positive`);
      r = Math.max(1, Math.floor(d / rf));
    }
    this.hiddenSize = d;
    this.bottleneckSize = r;
    this.activation = cfg.activation ?? 'relu';
    this.scalingMode = cfg.scaling ?? 1;
    this.dropout = cfg.dropout ?? 0;
    this.device = cfg.device ?? defaultDevice();
    this.dtype = cfg.dtype ?? 'float32';
    this.path = cfg.path ?? 'auto';
    const seed = cfg.seed ?? Math.floor(Math.random() * 2 ** 31);
    this.dropoutSeed = seed + 1;
    if (typeof this.scalingMode === 'number' ? !Number.isFinite(this.scalingMode) : !['learned', 'channel'].includes(this.scalingMode))
      throw new Error(`${op}: scaling must be a number, 'learned' or 'channel'`);
    if (!(this.dropout >= 0 && this.dropout < 1)) throw new Error(`${op}: dropout must be in [0, 1)`);

    const init = cfg.init ?? 'mam';
    let down: Float32Array;
    let up: Float32Array;
    if (init === 'mam') {
      // kaiming_uniform_(a=√5) on [r, d]: U(-1/√d, 1/√d); up-projection zero: the adapter starts as the identity
      const b = 1 / Math.sqrt(d);
      down = rand([r, d], { seed, low: -b, high: b }).toArray();
      up = new Float32Array(d * r);
    } else if (init === 'bert') {
      down = randn([r, d], { seed, std: 0.02 }).toArray();
      up = randn([d, r], { seed: seed + 1, std: 0.02 }).toArray();
    } else if (init === 'houlsby') {
      down = truncatedNormal([r, d], 1e-2, 2e-2, seed);
      up = truncatedNormal([d, r], 1e-2, 2e-2, seed + 104729);
    } else throw new Error(`${op}: init must be 'mam', 'bert' or 'houlsby'; got '${String(init)}'`);
    const o = { device: this.device, dtype: this.dtype };
    this.weights = {
      downWeight: tensor(down, [r, d], o),
      downBias: zeros([r], o),
      upWeight: tensor(up, [d, r], o),
      upBias: zeros([d], o),
    };
    if (this.scalingMode === 'learned') this.weights.scaling = ones([1], o);
    else if (this.scalingMode === 'channel') this.weights.scaling = ones([d], o);
  }

  /** Trainable tensors by AdapterHub name. */
  parameters(): Map<string, Tensor> {
    const m = new Map<string, Tensor>([
      [PARAM_NAMES.downWeight, this.weights.downWeight],
      [PARAM_NAMES.downBias, this.weights.downBias],
      [PARAM_NAMES.upWeight, this.weights.upWeight],
      [PARAM_NAMES.upBias, this.weights.upBias],
    ]);
    if (this.weights.scaling) m.set(PARAM_NAMES.scaling, this.weights.scaling);
    return m;
  }

  parameterCount(): number {
    let n = 0;
    for (const t of this.parameters().values()) n += t.size;
    return n;
  }

  /** x: [N, d] or [B, T, d]. residual: the sub-layer output for parallel adapters (default x). */
  forward(x: Tensor, opts: { residual?: Tensor; training?: boolean } = {}): Tensor {
    const training = !!opts.training;
    const seed = this.dropoutSeed;
    if (training && this.dropout > 0) this.dropoutSeed = (this.dropoutSeed + 0x9e37) % 2 ** 31; // a new mask per step
    const { out, saved } = adapterForward(x, this.weights, {
      activation: this.activation,
      scaling: typeof this.scalingMode === 'number' ? this.scalingMode : 1,
      residual: opts.residual,
      dropout: this.dropout,
      seed,
      training,
      path: this.path,
    });
    this.saved?.hPre.dispose();
    this.saved = saved;
    return out;
  }

  /** Backward of the last forward: accumulates weight gradients into grads; returns dx. */
  backward(dOut: Tensor): Tensor {
    if (!this.saved) throw new Error('BottleneckAdapter.backward: call forward first');
    const g = adapterBackward(dOut, this.saved);
    const pairs: [string, Tensor | undefined][] = [
      [PARAM_NAMES.downWeight, g.dDownWeight],
      [PARAM_NAMES.downBias, g.dDownBias],
      [PARAM_NAMES.upWeight, g.dUpWeight],
      [PARAM_NAMES.upBias, g.dUpBias],
      [PARAM_NAMES.scaling, g.dScaling],
    ];
    for (const [name, grad] of pairs) {
      if (!grad) continue;
      const prev = this.grads.get(name);
      if (prev) {
        this.grads.set(name, add(prev, grad));
        prev.dispose();
        grad.dispose();
      } else this.grads.set(name, grad);
    }
    return g.dx;
  }

  zeroGrad(): void {
    for (const t of this.grads.values()) t.dispose();
    this.grads.clear();
  }

  dispose(): void {
    this.zeroGrad();
    this.saved?.hPre.dispose();
    this.saved = null;
    for (const t of this.parameters().values()) t.dispose();
  }
}
