// The comparison the parity suites share: every element within rtol of the reference tensor's largest
// magnitude, failing with the worst element named (a reference of zeros proves nothing and fails too).
export function expectNear(what: string, actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number, peer = 'AdapterHub/transformers'): void {
  expect(actual.length).toBe(expected.length);
  let scale = 0;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]));
  expect(scale).toBeGreaterThan(0);
  let worst = 0;
  let at = 0;
  for (let i = 0; i < expected.length; i++) {
    if (!Number.isFinite(actual[i])) throw new Error(`${what}[${i}] is ${actual[i]}`);
    const e = Math.abs(actual[i] - expected[i]) / scale;
    if (e > worst) [worst, at] = [e, i];
  }
  if (worst > rtol)
    throw new Error(`${what}: element ${at} is ${actual[at]}, ${peer} give(s) ${expected[at]} (error ${worst.toExponential(2)} of max |ref| ${scale.toExponential(3)}, allowed ${rtol})`);
}
