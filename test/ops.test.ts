import { activation, activationGrad, add, cast, colSum, fill, stack, matmul, mul, randn, rowSum, scale, sub, tensor, zeros } from '../lib';
import { act } from './adapterRef';
import { expectClose, refMatmul, rng, roundBf16 } from './helpers';

describe('matmul', () => {
  // M = 1: one-row products go through the BLAS's sgemv
  const shapes: [number, number, number][] = [[1, 1, 1], [1, 37, 53], [1, 300, 129], [3, 5, 7], [17, 13, 33], [64, 48, 96]];
  for (const [M, N, K] of shapes)
    for (const tA of [false, true])
      for (const tB of [false, true])
        test(`fp32 M=${M} N=${N} K=${K} transA=${tA} transB=${tB}`, () => {
          const r = rng(M * 1000 + N * 10 + K);
          const A = r.array(M * K);
          const B = r.array(K * N);
          const a = tensor(A, tA ? [K, M] : [M, K]);
          const b = tensor(B, tB ? [N, K] : [K, N]);
          const c = matmul(a, b, { transA: tA, transB: tB });
          expect(c.shape).toEqual([M, N]);
          expectClose(c.toArray(), refMatmul(new Float32Array(A), new Float32Array(B), M, N, K, tA, tB), 1e-5, 1e-5);
        });

  test('leading dimensions of a are flattened: [B, T, K] · [N, K]ᵀ', () => {
    const r = rng(3);
    const A = r.array(2 * 5 * 8);
    const W = r.array(6 * 8);
    const c = matmul(tensor(A, [2, 5, 8]), tensor(W, [6, 8]), { transB: true });
    expect(c.shape).toEqual([2, 5, 6]);
    expectClose(c.toArray(), refMatmul(new Float32Array(A), new Float32Array(W), 10, 6, 8, false, true), 1e-5);
  });

  test('batched [B, M, K] · [B, K, N]', () => {
    const r = rng(4);
    const [Bn, M, K, N] = [3, 4, 5, 6];
    const A = new Float32Array(r.array(Bn * M * K));
    const B = new Float32Array(r.array(Bn * K * N));
    const c = matmul(tensor(A, [Bn, M, K]), tensor(B, [Bn, N, K]), { transB: true });
    expect(c.shape).toEqual([Bn, M, N]);
    const out = c.toArray();
    for (let i = 0; i < Bn; i++)
      expectClose(out.subarray(i * M * N, (i + 1) * M * N),
        refMatmul(A.subarray(i * M * K), B.subarray(i * K * N), M, N, K, false, true), 1e-5);
  });

  for (const dtype of ['bfloat16', 'float16'] as const)
    test(`${dtype} operands accumulate in fp32`, () => {
      const r = rng(5);
      const [M, N, K] = [33, 17, 512];
      const a = tensor(r.array(M * K), [M, K], { dtype });
      const b = tensor(r.array(N * K), [N, K], { dtype });
      const c = matmul(a, b, { transB: true });
      expect(c.dtype).toBe(dtype);
      // reference from the rounded operands in float64; the result is rounded once to dtype
      const ref = refMatmul(a.toArray(), b.toArray(), M, N, K, false, true);
      expectClose(c.toArray(), ref, dtype === 'bfloat16' ? 1e-2 : 2e-3, 1e-2);
    });

  test('K = 0 gives zeros', () => {
    const c = matmul(zeros([3, 0]), zeros([0, 2]));
    expect(Array.from(c.toArray())).toEqual([0, 0, 0, 0, 0, 0]);
  });
});

describe('elementwise, sums, casts', () => {
  const r = rng(11);
  const A = new Float32Array(r.array(6 * 7));
  const B = new Float32Array(r.array(6 * 7));
  const bias = new Float32Array(r.array(7));

  test('add, sub, add with alpha, broadcast bias', () => {
    const a = tensor(A, [6, 7]);
    expectClose(add(a, tensor(B, [6, 7])).toArray(), A.map((v, i) => v + B[i]), 1e-6);
    expectClose(sub(a, tensor(B, [6, 7])).toArray(), A.map((v, i) => v - B[i]), 1e-6);
    expectClose(add(a, tensor(B, [6, 7]), { alpha: 0.5 }).toArray(), A.map((v, i) => v + 0.5 * B[i]), 1e-6);
    expectClose(add(a, tensor(bias, [7])).toArray(), A.map((v, i) => v + bias[i % 7]), 1e-6);
  });

  test('mul and scale', () => {
    const a = tensor(A, [6, 7]);
    expectClose(mul(a, tensor(B, [6, 7])).toArray(), A.map((v, i) => v * B[i]), 1e-6);
    expectClose(mul(a, tensor(bias, [7])).toArray(), A.map((v, i) => v * bias[i % 7]), 1e-6);
    expectClose(scale(a, -2.5).toArray(), A.map((v) => v * -2.5), 1e-6);
  });

  test('rowSum and colSum', () => {
    const x = tensor(A, [2, 3, 7]);
    const rs = rowSum(x);
    expect(rs.shape).toEqual([2, 3]);
    expectClose(rs.toArray(), Array.from({ length: 6 }, (_, i) => A.slice(i * 7, i * 7 + 7).reduce((s, v) => s + v, 0)), 1e-5);
    const cs = colSum(x);
    expect(cs.shape).toEqual([7]);
    expectClose(cs.toArray(), Array.from({ length: 7 }, (_, c) => { let s = 0; for (let i = 0; i < 6; i++) s += A[i * 7 + c]; return s; }), 1e-5);
  });

  test('bf16 elementwise computes in fp32 and rounds once', () => {
    const a = tensor(A, [6, 7], { dtype: 'bfloat16' });
    const b = tensor(B, [6, 7], { dtype: 'bfloat16' });
    const av = a.toArray();
    const bv = b.toArray();
    expect(Array.from(add(a, b).toArray())).toEqual(Array.from(av).map((v, i) => roundBf16(v + bv[i])));
  });

  test('activations and their gradients match float64 (gradient by central differences)', () => {
    const xs = Float64Array.from(A, (v) => v * 3);
    const x = tensor(xs, [6, 7]);
    const dy = tensor(B, [6, 7]);
    for (const name of ['relu', 'gelu', 'gelu_tanh', 'silu', 'identity'] as const) {
      const xv = x.toArray();
      expectClose(activation(x, name).toArray(), Array.from(xv, (v) => act(name, v)), 1e-6, 1e-7);
      const h = 1e-4;
      const num = Array.from(xv, (v, i) => B[i] * (act(name, v + h) - act(name, v - h)) / (2 * h));
      expectClose(activationGrad(x, dy, name).toArray(), num, 1e-5, 1e-5);
    }
    expect(() => activation(x, 'sigmoid' as never)).toThrow(/activation: argument 'activation' must be one of/);
    expect(() => activationGrad(x, randn([7]), 'relu')).toThrow(/activationGrad: argument 'dy' has shape \[7\], 'x' has \[6, 7\]/);
  });

  test('stack', () => {
    const t = stack([tensor([1, 2, 3], [3]), tensor([4, 5, 6], [3], {}), tensor([7, 8, 9], [3])]);
    expect(t.shape).toEqual([3, 3]);
    expect(Array.from(t.toArray())).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  test('cast and fill', () => {
    const a = tensor(A, [6, 7]);
    const h = cast(a, 'float16');
    expect(h.dtype).toBe('float16');
    expectClose(h.toArray(), A, 1e-3, 1e-4);
    fill(h, 0.25);
    expect(Array.from(h.toArray()).every((v) => v === 0.25)).toBe(true);
  });
});

describe('bad inputs throw errors naming the op and argument; nothing crashes', () => {
  const a = randn([4, 5], { seed: 1 });
  const b16 = randn([5, 3], { seed: 2, dtype: 'bfloat16' });
  const ids = tensor([1, 2, 3], [3], { dtype: 'int32' });
  const dead = randn([4, 5], { seed: 3 });
  dead.dispose();

  const cases: [string, () => unknown, RegExp][] = [
    ['matmul inner mismatch', () => matmul(a, randn([4, 3])), /matmul: inner dimensions differ/],
    ['matmul dtype mix', () => matmul(a, b16), /matmul: argument 'b' is bfloat16 but 'a' is float32/],
    ['matmul 1-D', () => matmul(tensor([1], [1]), a), /matmul: argument 'a' must have at least 2 dimensions/],
    ['matmul batch mismatch', () => matmul(randn([2, 3, 4]), randn([3, 4, 5])), /matmul: batched matmul needs/],
    ['matmul not a tensor', () => matmul([1, 2] as never, a), /matmul: argument 'a' must be a Tensor/],
    ['matmul disposed', () => matmul(a, dead, { transB: true }), /matmul: argument 'b' is a disposed tensor/],
    ['matmul rows past int32', () => matmul(zeros([65536, 32769, 0]), zeros([0, 2])), /matmul: op\(a\) \[65536, 32769, 0\] has 2147549184 rows; at most 2\^31 - 1/],
    ['matmul int32', () => matmul(ids.reshape([1, 3]), ids.reshape([3, 1])), /matmul: argument 'a' must be a floating-point tensor/],
    ['add shape', () => add(a, randn([4])), /add: argument 'b' has shape \[4\], which does not match or broadcast to \[4, 5\]/],
    ['add dtype', () => add(a, randn([4, 5], { dtype: 'float16' })), /add: argument 'b' is float16 but 'a' is float32/],
    ['add disposed', () => add(dead, a), /add: argument 'a' is a disposed tensor/],
    ['sub undefined', () => sub(a, undefined as never), /sub: argument 'b' must be a Tensor/],
    ['mul shape', () => mul(a, randn([5, 4])), /mul: argument 'b' has shape/],
    ['scale NaN', () => scale(a, NaN), /scale: argument 's' must be finite/],
    ['scale string', () => scale(a, 'x' as never), /scale: argument 's' must be a number/],
    ['rowSum int', () => rowSum(ids), /rowSum: argument 'x' must be a floating-point tensor/],
    ['rowSum scalar', () => rowSum(tensor([1], [])), /rowSum: argument 'x' must have at least 1 dimension/],
    ['colSum disposed', () => colSum(dead), /colSum: argument 'x' is a disposed tensor/],
    ['cast bad dtype', () => cast(a, 'int8' as never), /cast: invalid dtype 'int8'/],
    ['cast float to int', () => cast(a, 'int32'), /to: cannot convert float32 to int32/],
    ['fill NaN', () => fill(a, NaN), /fill: argument 'value' must be finite/],
    ['fill disposed', () => fill(dead, 1), /fill: argument 't' is a disposed tensor/],
    ['randn negative seed', () => randn([2], { seed: -1 }), /randomFill: argument 'seed' must be a non-negative integer/],
    ['randn bad device', () => randn([2], { device: 'cuda:7' }), /empty: device 'cuda:7'/],
    ['stack empty', () => stack([]), /stack: argument 'tensors' must be a non-empty array of tensors/],
    ['stack shapes', () => stack([randn([2]), randn([3])]), /stack: argument 'tensors\[1\]' has shape \[3\], 'tensors\[0\]' has \[2\]/],
    ['stack dtypes', () => stack([randn([2]), randn([2], { dtype: 'float16' })]), /stack: argument 'tensors\[1\]' is float16 but 'tensors\[0\]' is float32/],
    ['stack not tensors', () => stack([randn([2]), [1, 2] as never]), /stack: argument 'tensors\[1\]' must be a Tensor/],
    ['stack disposed', () => stack([dead]), /stack: argument 'tensors\[0\]' is a disposed tensor/],
  ];
  for (const [name, f, re] of cases) test(name, () => expect(f).toThrow(re));
});
