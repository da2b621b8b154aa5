// Non-finite values (NaN, ±Infinity) in a forward pass. Every forward checks its outputs cheaply
// (the loss, the logits, and Σx² of the last hidden state: one reduction, a few numbers read);
// only when that fails does a second pass, with the same inputs and dropout seeds, look at every
// intermediate in order to name the layer and op where the values first appear.
import { sumOfSquares } from '../optim/clip';
import type { Tensor } from '../tensor';

/**
 * Looks at an intermediate tensor as a forward makes it, by the name of the op that made it
 * (Hugging Face module names: 'attention.self.query', 'output.LayerNorm', ...): how the second pass
 * finds where non-finite values first appear. Absent in normal runs.
 */
export type Probe = (op: string, t: Tensor) => void;

/** Thrown by forward (and by train, for the loss or the gradients) when values are not finite. */
export class NonFiniteError extends Error {
  /** The encoder layer where they first appear; null before the layers (embeddings) or after them. */
  readonly layer: number | null;
  /** The op, by Hugging Face module name ('embeddings.LayerNorm', 'output.dense', 'loss', ...). */
  readonly op: string;

  constructor(message: string, layer: number | null, op: string) {
    super(message);
    this.name = 'NonFiniteError';
    this.layer = layer;
    this.op = op;
  }
}

/** Index of the first NaN or ±Infinity, or -1. */
export function firstNonFinite(a: ArrayLike<number>): number {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return i;
  return -1;
}

/**
 * Whether every element of t is finite, from Σx² on the device. A false "no" is possible when
 * values are so large that their squares overflow float32 (|x| > ~1e19); the locating pass then
 * finds nothing and the forward stands.
 */
export function allFinite(t: Tensor): boolean {
  return Number.isFinite(sumOfSquares([t]));
}

function describe(a: ArrayLike<number>, i: number, shape: readonly number[]): string {
  return `${a[i]} at element ${i} of [${shape.join(', ')}]`;
}

export function nonFiniteError(where: string, layer: number | null, op: string, detail: string): NonFiniteError {
  return new NonFiniteError(
    `${where}: non-finite values (${detail}) first appear in ${layer === null ? '' : `layer ${layer}, `}${op}; every value before it `
      + 'is finite. The weights may be corrupt or too large (a damaged checkpoint), or training diverged (lower the learning rate; '
      + 'train({ skipNonFinite: true }) skips such steps)',
    layer, op,
  );
}

/** A probe for the locating pass: reads each tensor and throws at the first non-finite value. */
export function throwingProbe(where: string, layer: number | null): Probe {
  return (op: string, t: Tensor) => {
    if (t.dtype === 'int32') return;
    const a = t.toArray();
    const i = firstNonFinite(a);
    if (i >= 0) throw nonFiniteError(where, layer, op, describe(a, i, t.shape));
  };
}
