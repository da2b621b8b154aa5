// Every basic CUDA op against the CPU op on fresh random inputs, outputs poisoned first.
import { activation, activationGrad, add, cast, colSum, empty, fill, matmul, memoryStats, mul, randn, rand, rowSum, scale, synchronize, tensor, Tensor } from '../../lib';
import { describeGpu, expectClose, poisonNext } from '../helpers';

const dev = 'cuda:0';
const seed = () => Math.floor(Math.random() * 2 ** 31);
const tol = { float32: 1e-5, bfloat16: 1e-2, float16: 2e-3 } as const;

function both(shape: number[], dtype: 'float32' | 'bfloat16' | 'float16'): [Tensor, Tensor] {
  const c = randn(shape, { seed: seed(), dtype });
  return [c, c.to(dev)];
}

describeGpu('CUDA basic ops match the CPU', () => {
  for (const dtype of ['float32', 'bfloat16', 'float16'] as const) {
    for (const [M, N, K] of [[1, 1, 1], [37, 53, 29], [512, 384, 768], [1000, 3, 4096]])
      for (const tA of [false, true])
        for (const tB of [false, true])
          test(`matmul ${dtype} ${M}x${N}x${K} tA=${tA} tB=${tB}`, () => {
            const [a, ad] = both(tA ? [K, M] : [M, K], dtype);
            const [b, bd] = both(tB ? [N, K] : [K, N], dtype);
            poisonNext([M, N], dtype, dev);
            const g = matmul(ad, bd, { transA: tA, transB: tB }).toArray();
            const c = matmul(a, b, { transA: tA, transB: tB }).toArray();
            expectClose(g, c, tol[dtype], tol[dtype] * Math.sqrt(K));
          });

    test(`batched matmul ${dtype}`, () => {
      const [a, ad] = both([4, 33, 65], dtype);
      const [b, bd] = both([4, 17, 65], dtype);
      poisonNext([4, 33, 17], dtype, dev);
      expectClose(matmul(ad, bd, { transB: true }).toArray(), matmul(a, b, { transB: true }).toArray(), tol[dtype], tol[dtype] * 8);
    });

    test(`matmul with K = 0 gives zeros ${dtype}`, () => {
      // cuBLAS rejects the zero leading dimension of a row-major [M, 0] operand
      for (const tA of [false, true])
        for (const tB of [false, true]) {
          const a = empty(tA ? [0, 5] : [5, 0], { dtype, device: dev });
          const b = empty(tB ? [7, 0] : [0, 7], { dtype, device: dev });
          poisonNext([5, 7], dtype, dev);
          expect(Array.from(matmul(a, b, { transA: tA, transB: tB }).toArray())).toEqual(new Array(35).fill(0));
        }
      poisonNext([3, 4, 6], dtype, dev);
      const c = matmul(empty([3, 4, 0], { dtype, device: dev }), empty([3, 0, 6], { dtype, device: dev }));
      expect(Array.from(c.toArray())).toEqual(new Array(72).fill(0));
    });

    test(`elementwise ${dtype}`, () => {
      const [a, ad] = both([123, 457], dtype);
      const [b, bd] = both([123, 457], dtype);
      const [bias, biasd] = both([457], dtype);
      const cases: [() => Tensor, () => Tensor][] = [
        [() => add(a, b, { alpha: -0.75 }), () => add(ad, bd, { alpha: -0.75 })],
        [() => add(a, bias), () => add(ad, biasd)],
        [() => mul(a, b), () => mul(ad, bd)],
        [() => mul(a, bias), () => mul(ad, biasd)],
        [() => scale(a, 3.5), () => scale(ad, 3.5)],
      ];
      for (const [cpu, gpu] of cases) {
        poisonNext([123, 457], dtype, dev);
        expectClose(gpu().toArray(), cpu().toArray(), tol[dtype], 1e-6);
      }
    });

    test(`activation and activationGrad ${dtype}`, () => {
      const [x, xd] = both([77, 1001], dtype);
      const [dy, dyd] = both([77, 1001], dtype);
      for (const name of ['relu', 'gelu', 'gelu_tanh', 'silu', 'identity'] as const) {
        poisonNext([77, 1001], dtype, dev);
        expectClose(activation(xd, name).toArray(), activation(x, name).toArray(), tol[dtype], 1e-6);
        poisonNext([77, 1001], dtype, dev);
        expectClose(activationGrad(xd, dyd, name).toArray(), activationGrad(x, dy, name).toArray(), tol[dtype], 1e-6);
      }
    });

    test(`rowSum and colSum ${dtype}`, () => {
      for (const shape of [[1, 1], [7, 4099], [3001, 64], [2, 5, 33]]) {
        const [x, xd] = both(shape, dtype);
        const rows = shape.slice(0, -1);
        poisonNext(rows, dtype, dev);
        expectClose(rowSum(xd).toArray(), rowSum(x).toArray(), tol[dtype], tol[dtype] * 10);
        poisonNext([shape[shape.length - 1]], dtype, dev);
        expectClose(colSum(xd).toArray(), colSum(x).toArray(), tol[dtype], tol[dtype] * 10);
      }
    });
  }

  test('stack on CUDA equals stack on the CPU', () => {
    const parts = [0, 1, 2].map((i) => randn([37, 5], { seed: seed() + i, dtype: 'bfloat16' }));
    poisonNext([3, 37, 5], 'bfloat16', dev);
    expect(Array.from(stack(parts.map((p) => p.to(dev))).toArray())).toEqual(Array.from(stack(parts).toArray()));
  });

  test('casts between every float dtype', () => {
    const [x, xd] = both([1000, 33], 'float32');
    for (const to of ['bfloat16', 'float16', 'float32'] as const) {
      poisonNext([1000, 33], to, dev);
      expect(Array.from(cast(xd, to).toArray())).toEqual(Array.from(cast(x, to).toArray()));
    }
  });

  test('fill and seeded random fills draw the CPU numbers', () => {
    for (const dtype of ['float32', 'bfloat16'] as const) {
      const s = seed();
      expectClose(randn([100003], { seed: s, device: dev, dtype }).toArray(), randn([100003], { seed: s, dtype }).toArray(), 1e-5, 1e-5);
      expect(Array.from(rand([4097], { seed: s, device: dev, dtype }).toArray()))
        .toEqual(Array.from(rand([4097], { seed: s, dtype }).toArray()));
      // bounds other than [0, 1): the same rounding steps as the CPU (no fused multiply-add)
      const u = { low: -0.37, high: 0.81 };
      expect(Array.from(rand([100003], { seed: s, device: dev, dtype, ...u }).toArray()))
        .toEqual(Array.from(rand([100003], { seed: s, dtype, ...u }).toArray()));
      const t = randn([333], { device: dev, dtype });
      fill(t, -1.5);
      expect(Array.from(t.toArray()).every((v) => v === -1.5)).toBe(true);
    }
  });

  test('transfers: host↔device, device↔device, async reads, copyFrom', async () => {
    const x = randn([257, 31], { seed: seed() });
    const d = x.to(dev);
    expect(d.device).toBe(dev);
    expect(Array.from(await d.data())).toEqual(Array.from(x.toArray()));
    const d2 = d.to({ dtype: 'bfloat16' }).to({ dtype: 'float32' });
    expect(Array.from(d2.toArray())).toEqual(Array.from(x.to({ dtype: 'bfloat16' }).toArray()));
    const y = tensor(new Float32Array(257 * 31), [257, 31], { device: dev });
    y.copyFrom(d);
    expect(Array.from(y.toArray())).toEqual(Array.from(x.toArray()));
    y.copyFrom(x.toArray());
    expect(Array.from(y.to('cpu').toArray())).toEqual(Array.from(x.toArray()));
  });

  test('rowSum over more rows than one capped grid of warps covers (grid-stride loop)', () => {
    const [x, xd] = both([4500000, 2], 'float32');
    poisonNext([4500000], 'float32', dev);
    expectClose(rowSum(xd).toArray(), rowSum(x).toArray(), 1e-5, 1e-5);
  });

  test('matmul rejects more than 2^31 - 1 rows instead of truncating them', () => {
    const a = empty([65536, 32769, 0], { device: dev });
    expect(() => matmul(a, empty([0, 2], { device: dev }))).toThrow(/matmul: op\(a\) .* at most 2\^31 - 1/);
  });

  test('bad inputs on CUDA: device mix gives an error, not a crash', () => {
    const c = randn([4, 4]);
    const g = randn([4, 4], { device: dev });
    expect(() => matmul(c, g)).toThrow(/matmul: argument 'b' is on cuda:0 but 'a' is on cpu/);
    expect(() => add(g, c)).toThrow(/add: argument 'b' is on cpu but 'a' is on cuda:0/);
  });

  test('10,000 device tensors created and disposed return to the baseline; the cache is reused', () => {
    synchronize(dev);
    const base = memoryStats(dev);
    for (let i = 0; i < 10000; i++) randn([1 + (i % 1000)], { device: dev, seed: i }).dispose();
    synchronize(dev);
    const after = memoryStats(dev);
    expect(after.allocatedBytes).toBe(base.allocatedBytes);
    expect(after.liveTensors).toBe(base.liveTensors);
    expect(after.reservedBytes).toBeLessThan(base.reservedBytes + 4 * 1024 * 1024);
  });
});
