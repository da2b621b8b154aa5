// The fused bottleneck adapter as functions: forward returns what backward needs.
//   out = residual + dropout(s ⊙ (act(x·downᵀ + b_down)·upᵀ + b_up)),  residual = x unless given
import { native } from '../../backend';
import { handle, Tensor } from '../../tensor';

export type Activation = 'relu' | 'gelu' | 'gelu_tanh' | 'silu' | 'identity';
/** 'auto' picks the fused kernels where the shape fits (CUDA); the CPU has one path. */
export type AdapterPath = 'auto' | 'fused' | 'cublas';

export interface AdapterWeights {
  downWeight: Tensor; // [r, d]   (PyTorch nn.Linear layout)
  downBias: Tensor; // [r]
  upWeight: Tensor; // [d, r]
  upBias: Tensor; // [d]
  scaling?: Tensor; // [1] or [d] when scaling is learned; else opts.scaling
}

export interface AdapterOptions {
  activation?: Activation; // default 'relu'
  scaling?: number; // default 1 (ignored when weights.scaling is given)
  residual?: Tensor; // default x; parallel adapters pass the sub-layer output
  dropout?: number; // probability, applied to s ⊙ up-projection when training
  seed?: number; // dropout seed (Philox): the same seed draws the same mask on CPU and CUDA
  training?: boolean; // default false: no dropout
  path?: AdapterPath;
}

/** What backward needs: the inputs (by reference), h_pre [N, r] fp32, and the options. */
export interface AdapterSaved {
  readonly x: Tensor;
  readonly weights: AdapterWeights;
  readonly hPre: Tensor;
  readonly activation: Activation;
  readonly scaling: number;
  readonly dropout: number; // 0 when not training
  readonly seed: number;
  readonly residualIsX: boolean;
  readonly path: AdapterPath;
}

export interface AdapterGradients {
  /** Through the adapter, plus dOut when the residual is x. When a residual is given,
   *  its gradient is dOut itself (not returned separately). */
  dx: Tensor;
  dDownWeight: Tensor; // fp32, [r, d]
  dDownBias: Tensor; // fp32, [r]
  dUpWeight: Tensor; // fp32, [d, r]
  dUpBias: Tensor; // fp32, [d]
  dScaling?: Tensor; // fp32, like weights.scaling, when scaling is a tensor
  /** The path the backward ran on ('cpu', 'fused', 'fused-simt' or 'cublas'). */
  path: string;
}

const ACTIVATIONS: readonly string[] = ['relu', 'gelu', 'gelu_tanh', 'silu', 'identity'];
let dropoutSeedCounter = 0x5eed;

function checkOptions(op: string, o: AdapterOptions): void {
  if (o.activation !== undefined && !ACTIVATIONS.includes(o.activation))
    throw new Error(`${op}: activation must be one of ${ACTIVATIONS.join(', ')}; got '${String(o.activation)}'`);
  if (o.dropout !== undefined && !(o.dropout >= 0 && o.dropout < 1))
    throw new Error(`${op}: dropout must be in [0, 1); got ${String(o.dropout)}`);
  if (o.path !== undefined && !['auto', 'fused', 'cublas'].includes(o.path))
    throw new Error(`${op}: path must be 'auto', 'fused' or 'cublas'; got '${String(o.path)}'`);
}

function weightsOf(op: string, w: AdapterWeights): unknown[] {
  if (!w || typeof w !== 'object') throw new Error(`${op}: argument 'weights' must be an object of tensors`);
  return [
    handle(w.downWeight, op, 'downWeight'),
    handle(w.downBias, op, 'downBias'),
    handle(w.upWeight, op, 'upWeight'),
    handle(w.upBias, op, 'upBias'),
    w.scaling === undefined ? null : handle(w.scaling, op, 'scaling'),
  ];
}

export function adapterForward(
  x: Tensor,
  w: AdapterWeights,
  opts: AdapterOptions = {},
): { out: Tensor; saved: AdapterSaved; path: string } {
  const { res, saved } = forwardCall(x, w, opts, false);
  return { out: new Tensor(res.out), saved: { ...saved, hPre: new Tensor(res.hPre) }, path: res.path };
}

/**
 * adapterForward as a Promise: on the CPU the kernel runs on a worker thread while the event loop
 * goes on (on CUDA it is queued at once, as the synchronous form does). Do not change x, the weights
 * or the residual until it resolves; disposing them meanwhile is safe.
 */
export async function adapterForwardAsync(x: Tensor, w: AdapterWeights, opts: AdapterOptions = {}): Promise<{ out: Tensor; saved: AdapterSaved; path: string }> {
  const { res: pending, saved } = forwardCall(x, w, opts, true);
  const res = await pending;
  return { out: new Tensor(res.out), saved: { ...saved, hPre: new Tensor(res.hPre) }, path: res.path };
}

function forwardCall(x: Tensor, w: AdapterWeights, opts: AdapterOptions, async: boolean) {
  const op = 'adapterForward';
  checkOptions(op, opts);
  const activation = opts.activation ?? 'relu';
  const scaling = opts.scaling ?? 1;
  const dropout = opts.training ? opts.dropout ?? 0 : 0;
  const seed = opts.seed ?? (dropoutSeedCounter = (dropoutSeedCounter * 1103515245 + 12345) % 2 ** 31);
  const path = opts.path ?? 'auto';
  const res = native().adapterForward(
    handle(x, op, 'x'), ...weightsOf(op, w), scaling, activation, dropout, seed,
    opts.residual === undefined ? null : handle(opts.residual, op, 'residual'), path, async,
  );
  const saved = { x, weights: w, activation, scaling, dropout, seed, residualIsX: opts.residual === undefined, path };
  return { res, saved };
}

export function adapterBackward(dOut: Tensor, saved: AdapterSaved, opts: { path?: AdapterPath } = {}): AdapterGradients {
  return gradients(backwardCall(dOut, saved, opts, false));
}

/** adapterBackward as a Promise (see adapterForwardAsync). */
export async function adapterBackwardAsync(dOut: Tensor, saved: AdapterSaved, opts: { path?: AdapterPath } = {}): Promise<AdapterGradients> {
  return gradients(await backwardCall(dOut, saved, opts, true));
}

function backwardCall(dOut: Tensor, saved: AdapterSaved, opts: { path?: AdapterPath }, async: boolean) {
  const op = 'adapterBackward';
  if (!saved || !(saved.hPre instanceof Tensor)) throw new Error(`${op}: argument 'saved' must come from adapterForward`);
  const path = opts.path ?? saved.path;
  return native().adapterBackward(
    handle(saved.x, op, 'x'), ...weightsOf(op, saved.weights), saved.scaling, saved.activation, saved.dropout,
    saved.seed, handle(dOut, op, 'dOut'), handle(saved.hPre, op, 'hPre'), saved.residualIsX, path, async,
  );
}

function gradients(r: Record<string, any>): AdapterGradients {
  const g: AdapterGradients = {
    dx: new Tensor(r.dx),
    dDownWeight: new Tensor(r.dDownWeight),
    dDownBias: new Tensor(r.dDownBias),
    dUpWeight: new Tensor(r.dUpWeight),
    dUpBias: new Tensor(r.dUpBias),
    path: r.path,
  };
  if (r.dScaling) g.dScaling = new Tensor(r.dScaling);
  return g;
}

export interface StackedAdapterWeights {
  downWeight: Tensor; // [A, r, d]
  downBias: Tensor; // [A, r]
  upWeight: Tensor; // [A, d, r]
  upBias: Tensor; // [A, d]
}

/**
 * Many adapters in one batch: row n of x [N, d] goes through adapter rowAdapter[n]:
 * out = residual + s_k·f_k(x), residual = x unless given; a row with index -1 gets the
 * residual unchanged (x passes through). On CUDA this is one kernel launch whatever A is.
 * scaling: one number for all adapters or one per adapter.
 */
export function adapterForwardBatched(
  x: Tensor,
  w: StackedAdapterWeights,
  rowAdapter: Int32Array | ArrayLike<number>,
  opts: { activation?: Activation; scaling?: number | ArrayLike<number>; path?: AdapterPath; residual?: Tensor } = {},
): { out: Tensor; path: string } {
  const op = 'adapterForwardBatched';
  checkOptions(op, opts as AdapterOptions);
  if (!w || typeof w !== 'object') throw new Error(`${op}: argument 'weights' must be an object of tensors`);
  const A = handle(w.downWeight, op, 'downWeight').shape()[0] ?? 0;
  let scales: Float32Array;
  const s = opts.scaling ?? 1;
  if (typeof s === 'number') scales = new Float32Array(A).fill(s);
  else {
    scales = Float32Array.from(s);
    if (scales.length !== A) throw new Error(`${op}: scaling has ${scales.length} entries for ${A} adapters`);
  }
  if (!rowAdapter || typeof (rowAdapter as ArrayLike<number>).length !== 'number')
    throw new Error(`${op}: argument 'rowAdapter' must be an Int32Array`);
  const rows = rowAdapter instanceof Int32Array ? rowAdapter : Int32Array.from(rowAdapter);
  const r = native().adapterForwardBatched(
    handle(x, op, 'x'), handle(w.downWeight, op, 'downWeight'), handle(w.downBias, op, 'downBias'),
    handle(w.upWeight, op, 'upWeight'), handle(w.upBias, op, 'upBias'), rows, scales, opts.activation ?? 'relu',
    opts.path ?? 'auto', opts.residual === undefined ? null : handle(opts.residual, op, 'residual'),
  );
  return { out: new Tensor(r.out), path: r.path };
}
