// AdapterHub's default classification head on the first token: dropout, dense H→H, tanh,
// dropout, dense H→labels (parameters heads.<name>.1.* and heads.<name>.4.*).
import { dropout as dropoutOp, dropoutBackward } from '../nn';
import { activation, activationGrad, cast, colSum, matmul } from '../ops';
import { randn, Tensor, zeros, FloatDType } from '../tensor';
import { Linear, linear, linearBackward } from '../models/bert/blocks';
import { Scope } from '../core/scope';

export interface HeadConfig {
  numLabels: number;
  layers?: number; // AdapterHub's default 2 (the only one supported)
  dropout?: number; // default: the model's hidden dropout
}

export class ClassificationHead {
  readonly name: string;
  readonly numLabels: number;
  readonly dense: Linear;
  readonly out: Linear;
  readonly dropout: number;

  constructor(name: string, hidden: number, cfg: HeadConfig, o: { device: string; dtype: FloatDType; seed: number; dropout: number }) {
    if (!Number.isInteger(cfg?.numLabels) || cfg.numLabels < 1)
      throw new Error(`addClassificationHead: numLabels must be a positive integer`);
    if ((cfg.layers ?? 2) !== 2) throw new Error(`addClassificationHead: only layers: 2 (AdapterHub's default) is supported`);
    this.name = name;
    this.numLabels = cfg.numLabels;
    this.dropout = cfg.dropout ?? o.dropout;
    const t = { device: o.device, dtype: o.dtype };
    // BERT's _init_weights: N(0, 0.02) weights, zero biases
    this.dense = { weight: randn([hidden, hidden], { ...t, std: 0.02, seed: o.seed }), bias: zeros([hidden], t) };
    this.out = { weight: randn([cfg.numLabels, hidden], { ...t, std: 0.02, seed: o.seed + 1 }), bias: zeros([cfg.numLabels], t) };
  }

  parameters(): Map<string, Tensor> {
    const p = `heads.${this.name}`;
    return new Map([
      [`${p}.1.weight`, this.dense.weight], [`${p}.1.bias`, this.dense.bias],
      [`${p}.4.weight`, this.out.weight], [`${p}.4.bias`, this.out.bias],
    ]);
  }

  /** cls: [B, H] → logits [B, labels], and backward dlogits → dcls (gradients to `accumulate`). */
  forward(
    s: Scope, cls: Tensor, training: boolean, seed: number,
  ): { logits: Tensor; back: (dLogits: Tensor, accumulate: (name: string, g: Tensor) => void) => Tensor } {
    const p = training ? this.dropout : 0;
    const d1 = p > 0 ? s.t(dropoutOp(cls, p, seed)) : cls;
    const z = linear(s, d1, this.dense);
    const t = s.t(activation(z, 'tanh'));
    const d2 = p > 0 ? s.t(dropoutOp(t, p, seed + 1)) : t;
    const logits = linear(s, d2, this.out);
    const prefix = `heads.${this.name}`;
    const f32 = (x: Tensor) => (x.dtype === 'float32' ? x : s.t(cast(x, 'float32')));
    const back = (dLogits: Tensor, accumulate: (name: string, g: Tensor) => void): Tensor => {
      accumulate(`${prefix}.4.weight`, f32(s.t(matmul(dLogits, d2, { transA: true }))));
      accumulate(`${prefix}.4.bias`, f32(s.t(colSum(dLogits))));
      let dt = linearBackward(s, dLogits, this.out);
      if (p > 0) dt = s.t(dropoutBackward(dt, p, seed + 1));
      const dz = s.t(activationGrad(z, dt, 'tanh'));
      accumulate(`${prefix}.1.weight`, f32(s.t(matmul(dz, d1, { transA: true }))));
      accumulate(`${prefix}.1.bias`, f32(s.t(colSum(dz))));
      let dcls = linearBackward(s, dz, this.dense);
      if (p > 0) dcls = s.t(dropoutBackward(dcls, p, seed));
      return dcls;
    };
    return { logits, back };
  }

  dispose(): void {
    for (const t of this.parameters().values()) t.dispose();
  }
}
