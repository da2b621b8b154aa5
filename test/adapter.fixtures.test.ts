// The CPU adapter op (forward + backward, fp32) against float64 PyTorch autograd references.
// Fixtures: test/fixtures/adapter.json, written by `/usr/bin/python3 scripts/gen_adapter_fixtures.py`.
import * as fs from 'fs';
import * as path from 'path';
import { adapterBackward, adapterForward, tensor } from '../lib';
import type { Activation, AdapterWeights } from '../lib/methods/bottleneck/functional';
import { expectClose } from './helpers';

interface AdapterCase {
  name: string;
  activation: Activation;
  scalingMode: 'fixed' | 'learned' | 'channel';
  scaling: number | number[];
  residualGiven: boolean;
  xShape: number[];
  d: number;
  r: number;
  x: number[];
  downWeight: number[];
  downBias: number[];
  upWeight: number[];
  upBias: number[];
  residual?: number[];
  dOut: number[];
  out: number[];
  dx: number[];
  dDownWeight: number[];
  dDownBias: number[];
  dUpWeight: number[];
  dUpBias: number[];
  dScaling?: number[];
}

interface FixtureFile {
  generator: string;
  torch: string;
  cases: AdapterCase[];
}

const ROOT = path.join(__dirname, '..');
const FIXTURE = path.join(__dirname, 'fixtures', 'adapter.json');
const fixtures = JSON.parse(fs.readFileSync(FIXTURE, 'utf8')) as FixtureFile;

const RTOL = 1e-5;

/** rtol 1e-5, atol 1e-5 · max|expected| of the array (so entries near zero don't fail spuriously). */
function checkArray(label: string, actual: ArrayLike<number>, expected: number[]): void {
  let maxAbs = 0;
  for (const v of expected) maxAbs = Math.max(maxAbs, Math.abs(v));
  try {
    expectClose(actual, expected, RTOL, RTOL * maxAbs);
  } catch (e) {
    throw new Error(`${label}: ${(e as Error).message}`);
  }
}

describe('adapter fixtures (float64 PyTorch reference)', () => {
  test('fixture file names its generator, and the generator exists', () => {
    expect(fixtures.generator).toBe('scripts/gen_adapter_fixtures.py');
    expect(fs.existsSync(path.join(ROOT, fixtures.generator))).toBe(true);
    expect(typeof fixtures.torch).toBe('string');
  });

  test('has at least 30 cases', () => {
    expect(Array.isArray(fixtures.cases)).toBe(true);
    expect(fixtures.cases.length).toBeGreaterThanOrEqual(30);
  });

  for (const c of fixtures.cases) {
    test(c.name, () => {
      const { d, r, xShape } = c;
      expect(xShape[xShape.length - 1]).toBe(d);

      const x = tensor(c.x, xShape);
      const weights: AdapterWeights = {
        downWeight: tensor(c.downWeight, [r, d]),
        downBias: tensor(c.downBias, [r]),
        upWeight: tensor(c.upWeight, [d, r]),
        upBias: tensor(c.upBias, [d]),
      };
      let scalingNumber: number | undefined;
      if (c.scalingMode === 'fixed') {
        expect(typeof c.scaling).toBe('number');
        scalingNumber = c.scaling as number;
      } else {
        const s = c.scaling as number[];
        expect(s.length).toBe(c.scalingMode === 'learned' ? 1 : d);
        weights.scaling = tensor(s, [s.length]);
      }
      const residual = c.residualGiven ? tensor(c.residual as number[], xShape) : undefined;

      const { out, saved } = adapterForward(x, weights, {
        activation: c.activation,
        ...(scalingNumber !== undefined ? { scaling: scalingNumber } : {}),
        ...(residual ? { residual } : {}),
      });
      expect(out.shape).toEqual(xShape);
      checkArray('out', out.toArray(), c.out);

      const g = adapterBackward(tensor(c.dOut, xShape), saved);
      expect(g.dx.shape).toEqual(xShape);
      expect(g.dDownWeight.shape).toEqual([r, d]);
      expect(g.dDownBias.shape).toEqual([r]);
      expect(g.dUpWeight.shape).toEqual([d, r]);
      expect(g.dUpBias.shape).toEqual([d]);
      checkArray('dx', g.dx.toArray(), c.dx);
      checkArray('dDownWeight', g.dDownWeight.toArray(), c.dDownWeight);
      checkArray('dDownBias', g.dDownBias.toArray(), c.dDownBias);
      checkArray('dUpWeight', g.dUpWeight.toArray(), c.dUpWeight);
      checkArray('dUpBias', g.dUpBias.toArray(), c.dUpBias);

      if (c.scalingMode === 'fixed') {
        expect(c.dScaling).toBeUndefined();
        expect(g.dScaling).toBeUndefined();
      } else {
        expect(c.dScaling).toBeDefined();
        expect(g.dScaling).toBeDefined();
        const len = c.scalingMode === 'learned' ? 1 : d;
        expect(g.dScaling!.shape).toEqual([len]);
        checkArray('dScaling', g.dScaling!.toArray(), c.dScaling as number[]);
      }
    });
  }
});
