// Shared test helpers: float64 references, tolerance checks, poisoning.
import { buildInfo } from '../lib';

export const cudaUsable = buildInfo().cudaUsable;
/** describe() when a GPU is usable, else describe.skip (reported as skipped, never passed). */
export const describeGpu = cudaUsable ? describe : describe.skip;

/** A seeded float64 generator (mulberry32 + Box-Muller) for test inputs. */
export function rng(seed: number): { uniform(): number; normal(): number; array(n: number, std?: number): Float64Array } {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = () => Math.sqrt(-2 * Math.log(uniform() + 1e-12)) * Math.cos(2 * Math.PI * uniform());
  return {
    uniform,
    normal,
    array(n: number, std = 1) {
      const a = new Float64Array(n);
      for (let i = 0; i < n; i++) a[i] = normal() * std;
      return a;
    },
  };
}

/**
 * Max over elements of |a - e| / (atol + rtol·|e|) must be ≤ 1. Reports the worst index.
 */
export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number, atol = rtol): void {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i];
    const e = expected[i];
    if (!Number.isFinite(a)) throw new Error(`element ${i} is ${a}, expected ${e}`);
    const r = Math.abs(a - e) / (atol + rtol * Math.abs(e));
    if (r > worst) {
      worst = r;
      at = i;
    }
  }
  if (worst > 1) throw new Error(`element ${at}: got ${actual[at]}, expected ${expected[at]} (rtol ${rtol}, atol ${atol}, ratio ${worst.toFixed(2)})`);
}

/** Relative error in the vector norm sense: ||a - e|| / ||e||. */
export function relErr(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    num += (actual[i] - expected[i]) ** 2;
    den += expected[i] ** 2;
  }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
}

/** Row-major float64 reference: op(A)·op(B). */
export function refMatmul(
  A: ArrayLike<number>, B: ArrayLike<number>, M: number, N: number, K: number, tA: boolean, tB: boolean,
): Float64Array {
  const C = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += (tA ? A[k * M + m] : A[m * K + k]) * (tB ? B[n * K + k] : B[k * N + n]);
      C[m * N + n] = s;
    }
  return C;
}

/** Rounds through bfloat16 (round to nearest even), as the tensors store it. */
export function roundBf16(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer);
  u[0] = (u[0] + 0x7fff + ((u[0] >>> 16) & 1)) & 0xffff0000;
  return f[0];
}

/**
 * Leaves a NaN-filled block of this size in the device's allocator cache, so the
 * next allocation of that size (an op's output) starts poisoned: an op that does
 * not write every element shows NaN.
 */
export function poisonNext(shape: number[], dtype: 'float32' | 'bfloat16' | 'float16', device: string): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { empty } = require('../lib') as typeof import('../lib');
  const t = empty(shape, { dtype, device });
  t.copyFrom(new Float32Array(t.size).fill(NaN));
  t.dispose();
}
