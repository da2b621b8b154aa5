// AdamW exactly as torch.optim.AdamW (amsgrad off, maximize off, the single-tensor
// formula order), over every parameter in one native call per device (one CUDA launch).
// Moments are fp32; a bfloat16/float16 parameter keeps an fp32 master copy that is
// updated, and the parameter is refreshed from it (rounded) after every step.
import { native } from '../backend';
import { handle, Tensor, zeros } from '../tensor';

export interface AdamWOptions {
  lr: number;
  /** Default [0.9, 0.999]. */
  betas?: [number, number];
  /** Default 1e-8. */
  eps?: number;
  /** Decoupled weight decay; default 0.01 (torch's default). */
  weightDecay?: number;
  /** Parameters that get no weight decay; default defaultNoDecay (biases and LayerNorm weights). */
  noDecay?: (name: string) => boolean;
}

/** Biases and LayerNorm weights: names ending in '.bias' (or 'bias') or containing 'LayerNorm', 'layer_norm', '_ln'. */
export function defaultNoDecay(name: string): boolean {
  return name === 'bias' || name.endsWith('.bias') || name.includes('LayerNorm') || name.includes('layer_norm') ||
    name.includes('_ln');
}

export interface AdamWEntryState {
  expAvg: Float32Array;
  expAvgSq: Float32Array;
  /** The fp32 master weights of a bfloat16/float16 parameter (absent for float32 ones). */
  master?: Float32Array;
  /** Steps this parameter took (a step without its gradient does not count, as in torch). */
  step: number;
}

export interface AdamWState {
  /** step() calls made. */
  step: number;
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
  entries: Record<string, AdamWEntryState>;
}

type NumberList = ArrayLike<number> | Record<string, number>;

/**
 * What loadState accepts: AdamWState with any array-like numbers (number[], typed arrays, or
 * the {"0": .., "1": ..} objects that JSON.stringify makes of typed arrays).
 */
export interface AdamWStateInput {
  step: number;
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
  entries: Record<string, { expAvg: NumberList; expAvgSq: NumberList; master?: NumberList | null; step: number }>;
}

/** Hyper-parameters of one adamwStep call; weightDecay and step per tensor or one for all. */
export interface AdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number | number[];
  /** 1-based step count of each tensor (after this step). */
  step: number | number[];
}

/**
 * One AdamW step over many tensors in place (the native op; AdamW below manages the state).
 * params float32/bfloat16/float16; grads any float dtype of the params' shapes; expAvg,
 * expAvgSq fp32; master[i] the fp32 master of a non-fp32 params[i], null for fp32 ones.
 * Tensors may be on several devices (index i on one device): one call per device.
 */
export function adamwStep(
  params: readonly Tensor[], grads: readonly Tensor[], expAvg: readonly Tensor[], expAvgSq: readonly Tensor[],
  master: readonly (Tensor | null)[] | null, hp: AdamWHyper,
): void {
  const op = 'adamwStep';
  const list = (a: readonly (Tensor | null)[] | null, name: string, nullable = false) => {
    if (!Array.isArray(a)) throw new Error(`${op}: argument '${name}' must be an array of tensors`);
    return a.map((t, i) => (nullable && t == null ? null : handle(t, op, `${name}[${i}]`)));
  };
  native().adamwStep(list(params, 'params'), list(grads, 'grads'), list(expAvg, 'expAvg'), list(expAvgSq, 'expAvgSq'),
    master == null ? null : list(master, 'master', true), hp);
}

interface Slot {
  param: Tensor;
  expAvg: Tensor;
  expAvgSq: Tensor;
  master: Tensor | null;
  step: number;
  decay: boolean;
}

function finite(v: unknown, op: string, name: string, lo: number, hi = Infinity, hiOpen = false): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi || (hiOpen && v === hi)) {
    const range = hi === Infinity ? `>= ${lo}` : `in [${lo}, ${hi}${hiOpen ? ')' : ']'}`;
    throw new Error(`${op}: argument '${name}' must be a finite number ${range}, got ${String(v)}`);
  }
  return v;
}

function count(v: unknown, op: string, name: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0)
    throw new Error(`${op}: argument '${name}' must be an integer >= 0, got ${String(v)}`);
  return v;
}

const shapeStr = (s: readonly number[]) => `[${s.join(', ')}]`;

export class AdamW {
  private readonly slots = new Map<string, Slot>();
  private steps = 0;
  private lr: number;
  private betas: [number, number];
  private eps: number;
  private weightDecay: number;
  private disposed = false;

  constructor(params: Map<string, Tensor>, opts: AdamWOptions) {
    const op = 'AdamW';
    if (!(params instanceof Map)) throw new Error(`${op}: argument 'params' must be a Map<string, Tensor>`);
    if (opts == null || typeof opts !== 'object') throw new Error(`${op}: argument 'opts' must be an object with lr`);
    this.lr = finite(opts.lr, op, 'lr', 0);
    const betas = opts.betas ?? [0.9, 0.999];
    if (!Array.isArray(betas) || betas.length !== 2) throw new Error(`${op}: argument 'betas' must be [beta1, beta2]`);
    this.betas = [finite(betas[0], op, 'betas[0]', 0, 1, true), finite(betas[1], op, 'betas[1]', 0, 1, true)];
    this.eps = finite(opts.eps ?? 1e-8, op, 'eps', 0);
    this.weightDecay = finite(opts.weightDecay ?? 0.01, op, 'weightDecay', 0);
    const noDecay = opts.noDecay ?? defaultNoDecay;
    if (typeof noDecay !== 'function') throw new Error(`${op}: argument 'noDecay' must be a function (name) => boolean`);
    const created: Tensor[] = [];
    try {
      for (const [name, p] of params) {
        if (typeof name !== 'string') throw new Error(`${op}: argument 'params' must have string keys`);
        handle(p, op, `params['${name}']`);
        if (p.disposed) throw new Error(`${op}: param '${name}' is disposed`);
        if (p.dtype === 'int32') throw new Error(`${op}: param '${name}' must be a floating-point tensor, got int32`);
        const shape = [...p.shape];
        const expAvg = zeros(shape, { device: p.device });
        created.push(expAvg);
        const expAvgSq = zeros(shape, { device: p.device });
        created.push(expAvgSq);
        const master = p.dtype === 'float32' ? null : p.to({ dtype: 'float32' });
        if (master) created.push(master);
        this.slots.set(name, { param: p, expAvg, expAvgSq, master, step: 0, decay: !noDecay(name) });
      }
    } catch (e) {
      for (const t of created) t.dispose();
      throw e;
    }
  }

  /** step() calls made so far (restored by loadState). */
  get stepCount(): number {
    return this.steps;
  }

  /** The parameter names, in the order given. */
  get names(): string[] {
    return [...this.slots.keys()];
  }

  /** Whether parameter `name` gets weight decay. */
  decays(name: string): boolean {
    const s = this.slots.get(name);
    if (!s) throw new Error(`AdamW.decays: unknown param '${name}'`);
    return s.decay;
  }

  /**
   * One step with these gradients (same keys as the params; a param without a gradient is
   * skipped and its own step count does not advance, as in torch). `lr` overrides the
   * learning rate for this step only (schedules).
   */
  step(grads: Map<string, Tensor>, lr?: number): void {
    const op = 'AdamW.step';
    if (this.disposed) throw new Error(`${op}: the optimizer was disposed`);
    if (!(grads instanceof Map)) throw new Error(`${op}: argument 'grads' must be a Map<string, Tensor>`);
    const stepLr = lr === undefined ? this.lr : finite(lr, op, 'lr', 0);
    const used: [string, Slot, Tensor][] = [];
    for (const [name, g] of grads) {
      const s = this.slots.get(name);
      if (!s) throw new Error(`${op}: argument 'grads' has unknown key '${String(name)}' (not a param of this optimizer)`);
      handle(g, op, `grads['${name}']`);
      if (g.dtype === 'int32') throw new Error(`${op}: grad '${name}' must be a floating-point tensor, got int32`);
      if (g.shape.length !== s.param.shape.length || g.shape.some((d, i) => d !== s.param.shape[i]))
        throw new Error(`${op}: grad '${name}' has shape ${shapeStr(g.shape)} but the param has ${shapeStr(s.param.shape)}`);
      if (g.device !== s.param.device)
        throw new Error(`${op}: grad '${name}' is on ${g.device} but the param is on ${s.param.device}`);
      used.push([name, s, g]);
    }
    // One native call per device.
    const groups = new Map<string, [string, Slot, Tensor][]>();
    for (const u of used) {
      const d = u[1].param.device;
      const list = groups.get(d);
      if (list) list.push(u);
      else groups.set(d, [u]);
    }
    for (const group of groups.values()) {
      adamwStep(
        group.map((u) => u[1].param), group.map((u) => u[2]), group.map((u) => u[1].expAvg),
        group.map((u) => u[1].expAvgSq), group.map((u) => u[1].master),
        {
          lr: stepLr, beta1: this.betas[0], beta2: this.betas[1], eps: this.eps,
          weightDecay: group.map((u) => (u[1].decay ? this.weightDecay : 0)),
          step: group.map((u) => u[1].step + 1),
        },
      );
      for (const u of group) u[1].step++;
    }
    this.steps++;
  }

  /** Host copies of the optimizer state (Float32Arrays: safetensors-friendly). */
  state(): AdamWState {
    if (this.disposed) throw new Error('AdamW.state: the optimizer was disposed');
    // Views made here, so that `instanceof Float32Array` holds where the addon's arrays come
    // from another realm (jest's vm contexts).
    const host = (t: Tensor) => {
      const a = t.toArray();
      return new Float32Array(a.buffer, a.byteOffset, a.length);
    };
    const entries: Record<string, AdamWEntryState> = {};
    for (const [name, s] of this.slots) {
      const e: AdamWEntryState = { expAvg: host(s.expAvg), expAvgSq: host(s.expAvgSq), step: s.step };
      if (s.master) e.master = host(s.master);
      entries[name] = e;
    }
    return {
      step: this.steps, lr: this.lr, betas: [this.betas[0], this.betas[1]], eps: this.eps,
      weightDecay: this.weightDecay, entries,
    };
  }

  /**
   * Restores a state() (hyper-parameters, step counts, moments, masters). Every param needs
   * an entry and every entry a param, with matching sizes. A bfloat16/float16 param with a
   * master in the state is set to that master (rounded); without one its master is taken
   * from the param.
   */
  loadState(s: AdamWStateInput): void {
    const op = 'AdamW.loadState';
    if (this.disposed) throw new Error(`${op}: the optimizer was disposed`);
    if (s == null || typeof s !== 'object') throw new Error(`${op}: argument 'state' must be an object from state()`);
    const steps = count(s.step, op, 'step');
    const lr = finite(s.lr, op, 'lr', 0);
    if (!Array.isArray(s.betas) || s.betas.length !== 2) throw new Error(`${op}: argument 'betas' must be [beta1, beta2]`);
    const betas: [number, number] = [finite(s.betas[0], op, 'betas[0]', 0, 1, true), finite(s.betas[1], op, 'betas[1]', 0, 1, true)];
    const eps = finite(s.eps, op, 'eps', 0);
    const weightDecay = finite(s.weightDecay, op, 'weightDecay', 0);
    if (s.entries == null || typeof s.entries !== 'object') throw new Error(`${op}: argument 'entries' must be an object`);
    for (const name of Object.keys(s.entries))
      if (!this.slots.has(name)) throw new Error(`${op}: argument 'entries' has unknown param '${name}'`);
    const arrays = (v: unknown, name: string, key: string, n: number): ArrayLike<number> => {
      if (v == null || typeof v !== 'object') throw new Error(`${op}: entry '${name}' needs '${key}' as an array of numbers`);
      let a = v as ArrayLike<number>;
      // JSON.stringify writes a Float32Array as {"0": .., "1": ..}: read that back too
      if (typeof a.length !== 'number') a = { ...(v as Record<string, number>), length: Object.keys(v).length };
      if (a.length !== n) throw new Error(`${op}: entry '${name}' has ${a.length} values in '${key}', the param has ${n}`);
      for (let i = 0; i < n; i++)
        if (typeof a[i] !== 'number') throw new Error(`${op}: entry '${name}' has a non-number at '${key}'[${i}]`);
      return a;
    };
    const plan: [Slot, ArrayLike<number>, ArrayLike<number>, ArrayLike<number> | null, number][] = [];
    for (const [name, slot] of this.slots) {
      const e = s.entries[name];
      if (e == null || typeof e !== 'object') throw new Error(`${op}: argument 'entries' has no entry for param '${name}'`);
      const n = slot.param.size;
      const ea = arrays(e.expAvg, name, 'expAvg', n);
      const es = arrays(e.expAvgSq, name, 'expAvgSq', n);
      let m: ArrayLike<number> | null = null;
      if (e.master != null) {
        if (!slot.master) throw new Error(`${op}: entry '${name}' has a master copy but the param is float32 (its own master)`);
        m = arrays(e.master, name, 'master', n);
      }
      plan.push([slot, ea, es, m, count(e.step, op, `entries['${name}'].step`)]);
    }
    for (const [slot, ea, es, m, step] of plan) {
      slot.expAvg.copyFrom(ea);
      slot.expAvgSq.copyFrom(es);
      if (slot.master) {
        if (m) {
          slot.master.copyFrom(m);
          slot.param.copyFrom(slot.master);
        } else slot.master.copyFrom(slot.param);
      }
      slot.step = step;
    }
    this.steps = steps;
    this.lr = lr;
    this.betas = betas;
    this.eps = eps;
    this.weightDecay = weightDecay;
  }

  /** Frees the moments and masters (not the params). Idempotent. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const s of this.slots.values()) {
      s.expAvg.dispose();
      s.expAvgSq.dispose();
      s.master?.dispose();
    }
  }
}
