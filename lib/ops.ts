// Basic ops on tensors; each runs on the device its inputs live on.
import { native } from './backend';
import { checkDType, checkInt32, DType, handle, Tensor } from './tensor';

/** op(a) · op(b). a: [M, K] (or [..., M, K]), b: [K, N]; or batched [B, M, K] · [B, K, N]. */
export function matmul(a: Tensor, b: Tensor, opts: { transA?: boolean; transB?: boolean } = {}): Tensor {
  return new Tensor(native().matmul(handle(a, 'matmul', 'a'), handle(b, 'matmul', 'b'), !!opts.transA, !!opts.transB, false));
}

/**
 * matmul as a Promise: on the CPU the GEMM runs on a worker thread while the event loop goes on (on
 * CUDA it is queued at once). Do not change a or b until it resolves; disposing them is safe.
 */
export async function matmulAsync(a: Tensor, b: Tensor, opts: { transA?: boolean; transB?: boolean } = {}): Promise<Tensor> {
  return new Tensor(await native().matmul(handle(a, 'matmul', 'a'), handle(b, 'matmul', 'b'), !!opts.transA, !!opts.transB, true));
}

/** Tensors of one shape, dtype and device, stacked along a new first dimension: [A, ...shape]. */
export function stack(tensors: Tensor[]): Tensor {
  if (!Array.isArray(tensors)) throw new Error("stack: argument 'tensors' must be an array of tensors");
  return new Tensor(native().stack(tensors.map((t, i) => handle(t, 'stack', `tensors[${i}]`))));
}

/** a + alpha·b; b's shape equal to a's or a suffix of it (broadcast, e.g. a bias). */
export function add(a: Tensor, b: Tensor, opts: { alpha?: number } = {}): Tensor {
  return new Tensor(native().add(handle(a, 'add', 'a'), handle(b, 'add', 'b'), opts.alpha ?? 1));
}

export function sub(a: Tensor, b: Tensor): Tensor {
  return new Tensor(native().add(handle(a, 'sub', 'a'), handle(b, 'sub', 'b'), -1));
}

/** Elementwise a·b; b may broadcast as in add. */
export function mul(a: Tensor, b: Tensor): Tensor {
  return new Tensor(native().mul(handle(a, 'mul', 'a'), handle(b, 'mul', 'b')));
}

export function scale(a: Tensor, s: number): Tensor {
  return new Tensor(native().scale(handle(a, 'scale', 'a'), s));
}

export type ActivationName = 'relu' | 'gelu' | 'gelu_tanh' | 'silu' | 'identity' | 'tanh';

/** Elementwise non-linearity: relu, gelu (erf), gelu_tanh, silu, identity, tanh. */
export function activation(x: Tensor, name: ActivationName): Tensor {
  return new Tensor(native().activation(handle(x, 'activation', 'x'), name));
}

/** dy ⊙ act′(x): the gradient of activation(x) given the output gradient dy. */
export function activationGrad(x: Tensor, dy: Tensor, name: ActivationName): Tensor {
  return new Tensor(native().activationGrad(handle(x, 'activationGrad', 'x'), handle(dy, 'activationGrad', 'dy'), name));
}

/** Sums over the last dimension: [..., n] → [...]. */
export function rowSum(x: Tensor): Tensor {
  return new Tensor(native().rowSum(handle(x, 'rowSum', 'x')));
}

/** Sums over every dimension but the last: [..., n] → [n]. */
export function colSum(x: Tensor): Tensor {
  return new Tensor(native().colSum(handle(x, 'colSum', 'x')));
}

export function cast(x: Tensor, dtype: DType): Tensor {
  checkDType(dtype, 'cast');
  return x.to({ dtype });
}

/** Sets every element to value, in place. */
export function fill(t: Tensor, value: number): void {
  const h = handle(t, 'fill', 't');
  if (t.dtype === 'int32') checkInt32(value, 'fill', 'value');
  native().fill(h, value);
}

/** Seeded random fill in place: normal(mean, std) or uniform [low, high). */
export function randomFill(
  t: Tensor,
  seed: number,
  dist: { normal: { mean?: number; std?: number } } | { uniform: { low?: number; high?: number } },
): void {
  const h = handle(t, 'randomFill', 't');
  if ('normal' in dist) native().randomFill(h, seed, 'normal', dist.normal.mean ?? 0, dist.normal.std ?? 1);
  else native().randomFill(h, seed, 'uniform', dist.uniform.low ?? 0, dist.uniform.high ?? 1);
}
