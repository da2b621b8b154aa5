// A float64 reference of the bottleneck adapter for tests on random inputs.
export type Act = 'relu' | 'gelu' | 'gelu_tanh' | 'silu' | 'identity';

function erf(x: number): number {
  // Abramowitz-Stegun 7.1.26 is too coarse for 1e-5 checks; use a series/continued fraction.
  const t = Math.abs(x);
  if (t < 2.5) {
    let sum = t;
    let term = t;
    for (let n = 1; n < 60; n++) {
      term *= (-t * t) / n;
      sum += term / (2 * n + 1);
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc continued fraction for large |x|
  let f = 0;
  for (let n = 60; n >= 1; n--) f = (n / 2) / (t + f);
  const erfc = Math.exp(-t * t) / Math.sqrt(Math.PI) / (t + f);
  return Math.sign(x) * (1 - erfc);
}

export function act(a: Act, x: number): number {
  switch (a) {
    case 'relu': return x > 0 ? x : 0;
    case 'gelu': return 0.5 * x * (1 + erf(x / Math.SQRT2));
    case 'gelu_tanh': return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
    case 'silu': return x / (1 + Math.exp(-x));
    default: return x;
  }
}

export interface RefInputs {
  x: ArrayLike<number>; N: number; d: number; r: number;
  dw: ArrayLike<number>; db: ArrayLike<number>; uw: ArrayLike<number>; ub: ArrayLike<number>;
  s: ArrayLike<number> | number; residual?: ArrayLike<number>; activation: Act;
  mask?: ArrayLike<number>; // dropout factor per element (0 or 1/(1-p)); default 1
}

export function refForward(p: RefInputs): { out: Float64Array; hPre: Float64Array; z: Float64Array } {
  const { N, d, r } = p;
  const hPre = new Float64Array(N * r);
  const z = new Float64Array(N * d);
  const out = new Float64Array(N * d);
  for (let n = 0; n < N; n++) {
    for (let j = 0; j < r; j++) {
      let s = p.db[j];
      for (let c = 0; c < d; c++) s += p.x[n * d + c] * p.dw[j * d + c];
      hPre[n * r + j] = s;
    }
    for (let c = 0; c < d; c++) {
      let s = p.ub[c];
      for (let j = 0; j < r; j++) s += act(p.activation, hPre[n * r + j]) * p.uw[c * r + j];
      z[n * d + c] = s;
      const sc = typeof p.s === 'number' ? p.s : p.s.length === 1 ? p.s[0] : p.s[c];
      const res = (p.residual ?? p.x)[n * d + c];
      out[n * d + c] = res + (p.mask ? p.mask[n * d + c] : 1) * sc * s;
    }
  }
  return { out, hPre, z };
}
