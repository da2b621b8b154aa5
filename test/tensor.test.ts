import {
  buildInfo, defaultDevice, devices, empty, memoryStats, ones, rand, randn, Tensor, tensor, zeros,
} from '../lib';
import { expectClose, roundBf16 } from './helpers';

describe('build and devices', () => {
  test('buildInfo reports the build honestly', () => {
    const info = buildInfo();
    expect(info.napi).toBe(8);
    expect(typeof info.version).toBe('string');
    expect(typeof info.cudaCompiled).toBe('boolean');
    if (!info.cudaUsable) expect(info.cudaReason).toMatch(/\w/);
    expect(info.blas === null || typeof info.blas === 'string').toBe(true);
  });

  test('devices lists the CPU first and CUDA devices when usable', () => {
    const ds = devices();
    expect(ds[0]).toMatchObject({ id: 'cpu', kind: 'cpu' });
    const cuda = ds.filter((d) => d.kind === 'cuda');
    if (buildInfo().cudaUsable) {
      expect(cuda.length).toBeGreaterThan(0);
      expect(cuda[0].memoryBytes).toBeGreaterThan(0);
      expect(cuda[0].computeCapability).toMatch(/^\d+\.\d+$/);
    } else expect(cuda).toHaveLength(0);
  });

  test('defaultDevice follows CUDA availability and FUSED_ADAPTERS_DEVICE', () => {
    const old = process.env.FUSED_ADAPTERS_DEVICE;
    try {
      delete process.env.FUSED_ADAPTERS_DEVICE;
      expect(defaultDevice()).toBe(buildInfo().cudaUsable ? 'cuda:0' : 'cpu');
      process.env.FUSED_ADAPTERS_DEVICE = 'cpu';
      expect(defaultDevice()).toBe('cpu');
      process.env.FUSED_ADAPTERS_DEVICE = 'tpu';
      expect(() => defaultDevice()).toThrow(/FUSED_ADAPTERS_DEVICE: invalid device 'tpu'/);
    } finally {
      if (old === undefined) delete process.env.FUSED_ADAPTERS_DEVICE;
      else process.env.FUSED_ADAPTERS_DEVICE = old;
    }
  });
});

describe('tensor', () => {
  test('round-trips float32 data with its shape', () => {
    const t = tensor([1.5, -2, 3.25, 4, 5, 6], [2, 3]);
    expect(t.shape).toEqual([2, 3]);
    expect(t.dtype).toBe('float32');
    expect(t.device).toBe('cpu');
    expect(t.size).toBe(6);
    expect(Array.from(t.toArray())).toEqual([1.5, -2, 3.25, 4, 5, 6]);
  });

  test('bfloat16 and float16 round as PyTorch does (nearest even, subnormals, overflow)', () => {
    const xs = [1, 1.00390625, 1.01171875, -3.14159, 65504, 1e-6, 6e-8, 70000, 0.1];
    // torch.tensor(xs).bfloat16().float() / .half().float() (PyTorch 1.13)
    const bf16 = [1.0, 1.0, 1.015625, -3.140625, 65536.0, 9.98377799987793e-7, 6.007030606269836e-8, 70144.0, 0.10009765625];
    const f16 = [1.0, 1.00390625, 1.01171875, -3.140625, 65504.0, 1.0132789611816406e-6, 5.960464477539063e-8, Infinity, 0.0999755859375];
    expect(Array.from(tensor(xs, [xs.length], { dtype: 'bfloat16' }).toArray())).toEqual(bf16);
    expect(Array.from(tensor(xs, [xs.length], { dtype: 'float16' }).toArray())).toEqual(f16);
    expect(bf16).toEqual(xs.map(roundBf16));
  });

  test('int32 tensors hold token ids exactly', () => {
    const t = tensor([0, 1, 2147483647, -5], [4], { dtype: 'int32' });
    expect(Array.from(t.toArray())).toEqual([0, 1, 2147483647, -5].map((v) => Math.fround(v)));
  });

  test('to() converts dtype and returns a copy', () => {
    const t = tensor([0.1, 0.2, 0.3], [3]);
    const b = t.to({ dtype: 'bfloat16' });
    expect(b.dtype).toBe('bfloat16');
    const back = b.to({ dtype: 'float32' });
    expect(Array.from(back.toArray())).toEqual([0.1, 0.2, 0.3].map(roundBf16));
    const c = t.to('cpu');
    t.copyFrom([9, 9, 9]);
    expect(Array.from(c.toArray())).toEqual(Array.from(new Float32Array([0.1, 0.2, 0.3])));
  });

  test('copyFrom overwrites in place from arrays and tensors', () => {
    const t = zeros([2, 2]);
    t.copyFrom([1, 2, 3, 4]);
    expect(Array.from(t.toArray())).toEqual([1, 2, 3, 4]);
    t.copyFrom(tensor([5, 6, 7, 8], [4], { dtype: 'bfloat16' }));
    expect(Array.from(t.toArray())).toEqual([5, 6, 7, 8]);
    expect(() => t.copyFrom([1, 2, 3])).toThrow(/copyFrom: argument 'src' has 3 elements, the tensor has 4/);
  });

  test('reshape shares storage', () => {
    const t = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
    const v = t.reshape([3, 2]);
    expect(v.shape).toEqual([3, 2]);
    t.copyFrom([6, 5, 4, 3, 2, 1]);
    expect(Array.from(v.toArray())).toEqual([6, 5, 4, 3, 2, 1]);
    expect(() => t.reshape([4, 2])).toThrow(/reshape: cannot view \[2, 3\]/);
  });

  test('data() reads asynchronously', async () => {
    const t = tensor([1, 2, 3], [3], { dtype: 'float16' });
    const p = t.data();
    expect(typeof p.then).toBe('function');
    expect(Array.from(await p)).toEqual([1, 2, 3]);
    t.dispose();
    await expect(t.data()).rejects.toThrow(/data: the tensor was disposed/);
  });

  test('zeros, ones, empty', () => {
    expect(Array.from(zeros([3]).toArray())).toEqual([0, 0, 0]);
    expect(Array.from(ones([2], { dtype: 'float16' }).toArray())).toEqual([1, 1]);
    expect(empty([0, 4]).size).toBe(0);
  });

  test('randn is seeded, standard-normal and dtype-independent in its draws', () => {
    const a = randn([20000], { seed: 7 }).toArray();
    const b = randn([20000], { seed: 7 }).toArray();
    const c = randn([20000], { seed: 8 }).toArray();
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(Array.from(a.slice(0, 10))).not.toEqual(Array.from(c.slice(0, 10)));
    const mean = a.reduce((s, v) => s + v, 0) / a.length;
    const variance = a.reduce((s, v) => s + (v - mean) ** 2, 0) / a.length;
    expect(Math.abs(mean)).toBeLessThan(0.03);
    expect(Math.abs(variance - 1)).toBeLessThan(0.05);
    const s = randn([1000], { seed: 7, std: 0.02 }).toArray();
    expectClose(s, Array.from(a.slice(0, 1000)).map((v) => v * 0.02), 1e-6, 1e-9);
    const h = randn([1000], { seed: 7, dtype: 'bfloat16' }).toArray();
    expectClose(h, Array.from(a.slice(0, 1000)).map(roundBf16), 0, 1e-6);
  });

  test('rand is uniform in [low, high)', () => {
    const u = rand([10000], { seed: 1, low: -2, high: 3 }).toArray();
    expect(Math.min(...u)).toBeGreaterThanOrEqual(-2);
    expect(Math.max(...u)).toBeLessThan(3);
    const mean = u.reduce((s, v) => s + v, 0) / u.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.05);
  });

  test('a disposed tensor refuses every use; dispose is idempotent', () => {
    const t = tensor([1, 2], [2]);
    t.dispose();
    t.dispose();
    expect(t.disposed).toBe(true);
    expect(() => t.toArray()).toThrow(/toArray: the tensor was disposed/);
    expect(() => t.to('cpu')).toThrow(/to: the tensor was disposed/);
    expect(() => t.copyFrom([1, 2])).toThrow(/copyFrom: the tensor was disposed/);
  });

  test('bad construction arguments give clear errors', () => {
    expect(() => tensor([1, 2, 3], [2, 2])).toThrow(/tensor: argument 'data' has 3 elements but shape \[2, 2\] needs 4/);
    expect(() => tensor([1, 2], [2], { dtype: 'float64' as never })).toThrow(/tensor: invalid dtype 'float64'/);
    expect(() => tensor([1, 2], [2], { device: 'gpu' })).toThrow(/tensor: invalid device 'gpu'/);
    expect(() => tensor([1, 2], [-2])).toThrow(/tensor: argument 'shape' has an invalid dimension -2/);
    expect(() => tensor([1, 2], [1.5])).toThrow(/invalid dimension/);
    expect(() => tensor(['a' as never], [1])).toThrow(/non-number at index 0/);
    expect(() => tensor(null as never, [1])).toThrow(/argument 'data'/);
    if (!buildInfo().cudaUsable)
      expect(() => tensor([1], [1], { device: 'cuda:0' })).toThrow(/tensor: device 'cuda:0' is not usable: .+/);
    expect(() => tensor([1], [1], { device: 'cuda:99' })).toThrow(/tensor: device 'cuda:99' (is not usable|does not exist)/);
  });
});

describe('memory', () => {
  test('10,000 tensors created and disposed return memoryStats to its baseline', () => {
    const base = memoryStats('cpu');
    for (let i = 0; i < 10000; i++) {
      const t = randn([1 + (i % 257)], { seed: i });
      t.dispose();
    }
    const after = memoryStats('cpu');
    expect(after.allocatedBytes).toBe(base.allocatedBytes);
    expect(after.liveTensors).toBe(base.liveTensors);
  });

  test('memoryStats counts live tensors and bytes', () => {
    const base = memoryStats('cpu');
    const t = zeros([1000]);
    const mid = memoryStats('cpu');
    expect(mid.allocatedBytes - base.allocatedBytes).toBe(4000);
    expect(mid.liveTensors - base.liveTensors).toBe(1);
    t.dispose();
    expect(memoryStats('cpu').allocatedBytes).toBe(base.allocatedBytes);
  });

  test('forgotten tensors are freed by the FinalizationRegistry', async () => {
    const gc = (global as { gc?: () => void }).gc;
    const base = memoryStats('cpu').liveTensors;
    (() => {
      for (let i = 0; i < 200; i++) zeros([64]);
    })();
    expect(memoryStats('cpu').liveTensors).toBeGreaterThanOrEqual(base + 200);
    if (!gc) return; // without --expose-gc the collector runs when it likes; the count above still holds
    for (let i = 0; i < 10 && memoryStats('cpu').liveTensors > base; i++) {
      gc();
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(memoryStats('cpu').liveTensors).toBeLessThanOrEqual(base);
  });

  test('Tensor cannot be built from arbitrary values', () => {
    expect(() => new Tensor({} as never)).toThrow();
  });
});

describe('asynchronous reads', () => {
  test('data() returns the values at the time of the call, not later writes', async () => {
    const t = tensor([1, 2, 3, 4], [4]);
    const p = t.data();
    t.copyFrom([9, 9, 9, 9]);
    expect(Array.from(await p)).toEqual([1, 2, 3, 4]);
  });
});
