// Native memory that V8 knows about (issue 11): every tensor's bytes are reported to V8, so
// tensors that are dropped without dispose() are collected under pressure; a memory budget fails
// an allocation with a clear error before the machine swaps.
import { spawnSync } from 'child_process';
import * as path from 'path';
import { adapterForward, empty, memoryBudget, memoryStats, randn, releaseCachedMemory, setMemoryBudget, zeros } from '../lib';
import { native, parseByteSize } from '../lib/backend';

const CHILD = path.join(__dirname, 'children', 'droppedOutputs.js');
const MiB = 2 ** 20;

test('dropped adapterForward outputs at [2048, 768] in a long async loop: native memory stays bounded', () => {
  // 1,500 calls allocate 1500 × 6.3 MB ≈ 9.4 GB of outputs; the 256 MiB budget turns a leak into an error
  const p = spawnSync(process.execPath, [CHILD, '1500'], {
    encoding: 'utf8', timeout: 180_000, env: { ...process.env, FUSED_ADAPTERS_HOST_MEMORY_LIMIT: '256MiB' },
  });
  expect(p.stderr).toBe('');
  expect(p.status).toBe(0);
  const r = JSON.parse(p.stdout.trim().split('\n').pop()!);
  expect(r.limitBytes).toBe(256 * MiB);
  expect(r.calls).toBe(1500);
  expect(r.peakBytes).toBeLessThanOrEqual(256 * MiB);
  expect(r.peakBytes).toBeGreaterThan(2048 * 768 * 4); // it did allocate
  console.log(`dropped outputs: peak ${(r.peakBytes / MiB).toFixed(0)} MiB of native memory over 1500 calls`);
});

test('without the budget as a backstop the loop also stays bounded (V8 collects on its own)', () => {
  const p = spawnSync(process.execPath, [CHILD, '600'], { encoding: 'utf8', timeout: 180_000, env: { ...process.env, FUSED_ADAPTERS_HOST_MEMORY_LIMIT: 'none' } });
  expect(p.stderr).toBe('');
  expect(p.status).toBe(0);
  const r = JSON.parse(p.stdout.trim().split('\n').pop()!);
  expect(r.limitBytes).toBeNull();
  expect(r.peakBytes).toBeLessThan(600 * 2048 * 768 * 4 / 4); // far below the 3.8 GB that nothing freed would reach
});

test('tensor storage is reported to V8 when allocated and when freed', () => {
  const ext = () => native().externalMemory() as { reportedBytes: number; pendingBytes: number };
  const before = ext().reportedBytes;
  const t = zeros([1024, 1024], { device: 'cpu' });
  expect(ext().reportedBytes - before).toBe(4 * MiB);
  expect(ext().pendingBytes).toBe(0);
  t.dispose();
  expect(ext().reportedBytes).toBe(before);
});

describe('memory budget', () => {
  afterEach(() => setMemoryBudget({ host: null, device: null }));

  test('an allocation past the host limit fails with the size, the limit and what is live; nothing is lost', () => {
    const live = zeros([256, 1024], { device: 'cpu' }); // 1 MiB
    live.copyFrom(new Float32Array(256 * 1024).fill(3));
    const d = 64 * 1024;
    const x = randn([8, d], { device: 'cpu' }); // 2 MiB
    const w = { downWeight: randn([4, d]), downBias: randn([4]), upWeight: randn([d, 4]), upBias: randn([d]) };
    const used = memoryStats('cpu').allocatedBytes;
    expect(setMemoryBudget({ host: used + MiB })).toEqual({ host: used + MiB, device: null });
    expect(memoryStats('cpu').limitBytes).toBe(used + MiB);
    const tensors = memoryStats('cpu').liveTensors;
    expect(() => zeros([16, MiB / 4], { device: 'cpu' })).toThrow(
      /empty: tensor allocation of 16\.0 MiB on cpu exceeds the memory budget \(host limit [\d.]+ MiB, [\d.]+ MiB in live tensors\); dispose\(\) tensors/,
    );
    // ops fail the same way (the 2 MiB output does not fit), and nothing is left allocated
    expect(() => adapterForward(x, w)).toThrow(/adapterForward: tensor allocation of .* exceeds the memory budget/);
    expect(memoryStats('cpu').allocatedBytes).toBe(used);
    expect(memoryStats('cpu').liveTensors).toBe(tensors);
    expect(live.toArray()[1000]).toBe(3);
    // smaller allocations still work; raised, the same allocations succeed
    zeros([64, 1024], { device: 'cpu' }).dispose();
    setMemoryBudget({ host: null });
    zeros([16, MiB / 4], { device: 'cpu' }).dispose();
    expect(adapterForward(x, w).out.shape).toEqual([8, d]);
    for (const t of [live, x, ...Object.values(w)]) t.dispose();
  });

  test('a field left out keeps its value; bad limits are refused', () => {
    setMemoryBudget({ host: 1e9, device: 2e9 });
    expect(setMemoryBudget({ device: null })).toEqual({ host: 1e9, device: null });
    expect(memoryBudget()).toEqual({ host: 1e9, device: null });
    expect(() => setMemoryBudget({ host: -1 })).toThrow(/setMemoryBudget: argument 'host' must be a non-negative whole number of bytes or null/);
    expect(() => setMemoryBudget({ host: 1.5 })).toThrow(/argument 'host'/);
    expect(() => setMemoryBudget({ device: '1GB' as unknown as number })).toThrow(/argument 'device'/);
    expect(() => setMemoryBudget({ hots: 1 } as unknown as { host: number })).toThrow(/unknown field 'hots'/);
    expect(() => setMemoryBudget(null as unknown as { host: number })).toThrow(/must be an object/);
    expect(memoryBudget()).toEqual({ host: 1e9, device: null });
  });

  test('byte sizes from the environment', () => {
    expect(parseByteSize('512MiB', 'X')).toBe(512 * MiB);
    expect(parseByteSize('8 GB', 'X')).toBe(8e9);
    expect(parseByteSize('1.5gib', 'X')).toBe(1.5 * 2 ** 30);
    expect(parseByteSize('2147483648', 'X')).toBe(2147483648);
    expect(parseByteSize('none', 'X')).toBeNull();
    expect(() => parseByteSize('lots', 'FUSED_ADAPTERS_HOST_MEMORY_LIMIT')).toThrow(/FUSED_ADAPTERS_HOST_MEMORY_LIMIT: 'lots' is not a byte size/);
    expect(() => parseByteSize('-5MB', 'X')).toThrow(/not a byte size/);
  });

  test('a malformed limit in the environment is an error naming the variable', () => {
    const p = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'lib'))}).zeros([2])`], {
      encoding: 'utf8', env: { ...process.env, FUSED_ADAPTERS_DEVICE_MEMORY_LIMIT: '12 parsecs' },
    });
    expect(p.status).not.toBe(0);
    expect(p.stderr).toMatch(/FUSED_ADAPTERS_DEVICE_MEMORY_LIMIT: '12 parsecs' is not a byte size/);
  });
});

describe('the host buffer cache', () => {
  test('a freed large buffer is kept and reused for the next one of its size; releaseCachedMemory gives it back', () => {
    releaseCachedMemory();
    const base = memoryStats('cpu');
    expect(base.reservedBytes).toBe(base.allocatedBytes);
    const t = empty([2 * 1024 * 1024]); // 8 MiB
    t.dispose();
    const kept = memoryStats('cpu');
    expect(kept.allocatedBytes).toBe(base.allocatedBytes);
    expect(kept.reservedBytes - kept.allocatedBytes).toBe(8 * 2 ** 20);
    const again = empty([2 * 1024 * 1024]); // reuses the cached block: nothing more reserved
    expect(memoryStats('cpu').reservedBytes).toBe(kept.reservedBytes);
    again.copyFrom(new Float32Array(again.size).fill(3));
    expect(again.toArray()[12345]).toBe(3);
    again.dispose();
    releaseCachedMemory();
    const after = memoryStats('cpu');
    expect(after.reservedBytes).toBe(after.allocatedBytes);
  });
});
