// Gradient clipping by the global L2 norm (torch.nn.utils.clip_grad_norm_), on top of two
// multi-tensor native ops: sumOfSquares and scaleInPlace (one call per device each).
import { native } from '../backend';
import { handle, Tensor } from '../tensor';

type TensorList = Map<string, Tensor> | readonly Tensor[];

function listOf(grads: TensorList, op: string): Tensor[] {
  if (grads instanceof Map) return [...grads.values()];
  if (Array.isArray(grads)) return [...grads];
  throw new Error(`${op}: argument 'grads' must be a Map<string, Tensor> or an array of tensors`);
}

/** The native handles of tensors grouped by device, in first-seen order. */
function byDevice(tensors: readonly Tensor[], op: string, name: string): unknown[][] {
  const groups = new Map<string, unknown[]>();
  tensors.forEach((t, i) => {
    const h = handle(t, op, `${name}[${i}]`);
    if (t.dtype === 'int32') throw new Error(`${op}: argument '${name}[${i}]' must be a floating-point tensor, got int32`);
    const g = groups.get(t.device);
    if (g) g.push(h);
    else groups.set(t.device, [h]);
  });
  return [...groups.values()];
}

/**
 * Σ x² over every element of every tensor (float32/bfloat16/float16; squares in fp32,
 * a deterministic fixed-order reduction: one launch per CUDA device).
 */
export function sumOfSquares(tensors: readonly Tensor[]): number {
  const op = 'sumOfSquares';
  if (!Array.isArray(tensors)) throw new Error(`${op}: argument 'tensors' must be an array of tensors`);
  let total = 0;
  for (const g of byDevice(tensors, op, 'tensors')) total += native().sumOfSquares(g);
  return total;
}

/** x ← s·x in place for every tensor (one launch per CUDA device). */
export function scaleInPlace(tensors: readonly Tensor[], s: number): void {
  const op = 'scaleInPlace';
  if (!Array.isArray(tensors)) throw new Error(`${op}: argument 'tensors' must be an array of tensors`);
  if (typeof s !== 'number' || !Number.isFinite(s)) throw new Error(`${op}: argument 's' must be a finite number, got ${String(s)}`);
  for (const g of byDevice(tensors, op, 'tensors')) native().scaleInPlace(g, s);
}

/** ‖g‖₂ over all the gradients together (as if concatenated). */
export function globalGradNorm(grads: TensorList): number {
  const op = 'globalGradNorm';
  let total = 0;
  for (const g of byDevice(listOf(grads, op), op, 'grads')) total += native().sumOfSquares(g);
  return Math.sqrt(total);
}

/**
 * torch.nn.utils.clip_grad_norm_: computes the global norm, and when
 * coef = maxNorm / (norm + eps) is below 1 scales every gradient in place by coef.
 * Returns the norm before clipping. A non-finite norm (inf/NaN gradients) is returned
 * without scaling anything: check it and skip the step.
 */
export function clipGradNorm(grads: TensorList, maxNorm: number, eps = 1e-6): number {
  const op = 'clipGradNorm';
  if (typeof maxNorm !== 'number' || !Number.isFinite(maxNorm) || maxNorm < 0)
    throw new Error(`${op}: argument 'maxNorm' must be a finite number >= 0, got ${String(maxNorm)}`);
  if (typeof eps !== 'number' || !Number.isFinite(eps) || eps < 0)
    throw new Error(`${op}: argument 'eps' must be a finite number >= 0, got ${String(eps)}`);
  const groups = byDevice(listOf(grads, op), op, 'grads');
  let total = 0;
  for (const g of groups) total += native().sumOfSquares(g);
  const norm = Math.sqrt(total);
  if (!Number.isFinite(norm)) return norm;
  const coef = maxNorm / (norm + eps);
  if (coef < 1) for (const g of groups) native().scaleInPlace(g, coef);
  return norm;
}
