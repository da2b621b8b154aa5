// The CUDA decoder building blocks against the CPU ops on fresh random inputs, in fp32, bf16 and
// fp16, outputs poisoned (NaN) first: RMSNorm forward/backward, rotary embeddings, causal softmax.
import { attention, attentionBackward, cacheWrite, empty, gatedActivation, gatedActivationBackward, maskedSoftmax, randn, rmsNorm, rmsNormBackward, rope, ropeBackward, tensor, Tensor } from '../../lib';
import type { FloatDType } from '../../lib';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadDecoder } from '../../lib';
import { writeTinyGpt2, writeTinyLlama } from '../decoderFixture';
import { describeGpu, expectClose } from '../helpers';

const dev = 'cuda:0';
const seed = () => Math.floor(Math.random() * 2 ** 31);
const FLOATS: FloatDType[] = ['float32', 'bfloat16', 'float16'];
const tol = { float32: 1e-5, bfloat16: 1e-2, float16: 2e-3 } as const;

function both(shape: number[], dtype: FloatDType, opts: { std?: number; mean?: number } = {}): [Tensor, Tensor] {
  const c = randn(shape, { seed: seed(), dtype, ...opts });
  return [c, c.to(dev)];
}

/** NaN-filled blocks of these sizes left in the device allocator's cache: the next outputs start poisoned. */
function poison(...specs: [number[], FloatDType | 'float32'][]): void {
  const ts = specs.map(([shape, dtype]) => {
    const t = empty(shape, { dtype, device: dev });
    t.copyFrom(new Float32Array(t.size).fill(NaN));
    return t;
  });
  for (const t of ts) t.dispose();
}

describeGpu('CUDA decoder ops match the CPU', () => {
  for (const dtype of FLOATS)
    for (const shape of [[1, 1], [7, 33], [4096, 576], [3, 2, 2049]])
      test(`rmsNorm forward and backward ${dtype} ${JSON.stringify(shape)}`, () => {
        const H = shape[shape.length - 1];
        const rows = shape.slice(0, -1);
        const [x, xd] = both(shape, dtype, { std: 1.5 });
        const [w, wd] = both([H], dtype, { mean: 1, std: 0.2 });
        poison([shape, dtype], [rows, 'float32']);
        const g = rmsNorm(xd, wd, { eps: 1e-5 });
        const c = rmsNorm(x, w, { eps: 1e-5 });
        expectClose(g.out.toArray(), c.out.toArray(), tol[dtype] * 2, tol[dtype]);
        expectClose(g.rstd.toArray(), c.rstd.toArray(), 1e-5);
        const [d, dd] = both(shape, dtype);
        poison([shape, dtype], [[H], 'float32']);
        const gb = rmsNormBackward(dd, xd, wd, g.rstd);
        const cb = rmsNormBackward(d, x, w, c.rstd);
        expectClose(gb.dx.toArray(), cb.dx.toArray(), tol[dtype] * 2, tol[dtype]);
        expectClose(gb.dWeight.toArray(), cb.dWeight.toArray(), dtype === 'float32' ? 1e-4 : tol[dtype], 1e-3);
      });

  for (const dtype of FLOATS)
    for (const [B, T, heads, D, rot] of [[1, 1, 1, 2, 2], [2, 37, 9, 64, 64], [1, 300, 3, 96, 64]])
      test(`rope and its backward ${dtype} [${B}, ${T}, ${heads}, ${D}] rotating ${rot}`, () => {
        const [x, xd] = both([B, T, heads, D], dtype);
        const pos = tensor(Int32Array.from({ length: B * T }, () => Math.floor(Math.random() * 32768)), [B, T], { dtype: 'int32' });
        const inv = tensor(Float32Array.from({ length: rot / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / rot)), [rot / 2]);
        poison([[B, T, heads, D], dtype]);
        const g = rope(xd, pos.to(dev), inv.to(dev)).toArray();
        expectClose(g, rope(x, pos, inv).toArray(), tol[dtype] * 2, tol[dtype] * 2);
        poison([[B, T, heads, D], dtype]);
        expectClose(ropeBackward(xd, pos.to(dev), inv.to(dev)).toArray(), ropeBackward(x, pos, inv).toArray(), tol[dtype] * 2, tol[dtype] * 2);
      });

  for (const dtype of FLOATS)
    test(`causal maskedSoftmax ${dtype}, with padding, Tq = Tk and Tq < Tk`, () => {
      for (const [B, NH, Tq, Tk] of [[2, 4, 70, 70], [3, 2, 5, 131]]) {
        const [s, sd] = both([B, NH, Tq, Tk], dtype, { std: 3 });
        const maskArr = Float32Array.from({ length: B * Tk }, () => (Math.random() < 0.2 ? 0 : 1));
        const keyMask = tensor(maskArr, [B, Tk]);
        poison([[B, NH, Tq, Tk], dtype]);
        const g = maskedSoftmax(sd, { causal: true, keyMask: keyMask.to(dev), scale: 0.3 }).toArray();
        const c = maskedSoftmax(s, { causal: true, keyMask, scale: 0.3 }).toArray();
        expectClose(g, c, tol[dtype], tol[dtype] * 1e-2);
        for (let i = 0; i < c.length; i++) if (c[i] === 0 && g[i] !== 0) throw new Error(`element ${i}: ${g[i]}, masked on the CPU`);
      }
    });
});

describeGpu('CUDA gated activation matches the CPU op', () => {
  for (const dtype of FLOATS)
    for (const shape of [[1], [4, 1536], [1000, 8193]])
      test(`SwiGLU ${dtype} ${JSON.stringify(shape)}: forward and backward`, () => {
        const [g, gd] = both(shape, dtype, { std: 2 });
        const [u, ud] = both(shape, dtype);
        const [d, dd] = both(shape, dtype);
        poison([shape, dtype]);
        expectClose(gatedActivation(gd, ud).toArray(), gatedActivation(g, u).toArray(), tol[dtype], tol[dtype]);
        poison([shape, dtype], [shape, dtype]);
        const a = gatedActivationBackward(dd, gd, ud);
        const b = gatedActivationBackward(d, g, u);
        expectClose(a.dGate.toArray(), b.dGate.toArray(), tol[dtype], tol[dtype]);
        expectClose(a.dUp.toArray(), b.dUp.toArray(), tol[dtype], tol[dtype]);
      });
});

describeGpu('CUDA fused attention matches the CPU op', () => {
  const cases = [
    { shape: [1, 1, 1, 1, 1, 8], causal: true },
    { shape: [2, 9, 3, 37, 37, 64], causal: true },      // SmolLM2's heads, rows and keys not multiples of the tiles
    { shape: [1, 4, 4, 300, 300, 128], causal: true },   // several key tiles, the largest head size
    { shape: [2, 8, 2, 5, 70, 40], causal: true },       // queries at the end of a longer key range (a cache)
    { shape: [3, 2, 1, 33, 33, 32], causal: false },
  ];
  for (const dtype of FLOATS)
    for (const { shape, causal } of cases)
      test(`${dtype} ${JSON.stringify(shape)}${causal ? ' causal' : ''} with padding: out, lse, dq, dk, dv`, () => {
        const [B, Hq, Hkv, Tq, Tk, D] = shape;
        const [q, qd] = both([B, Hq, Tq, D], dtype);
        const [k, kd] = both([B, Hkv, Tk, D], dtype);
        const [v, vd] = both([B, Hkv, Tk, D], dtype);
        const maskArr = Float32Array.from({ length: B * Tk }, (_, i) => (i % Tk < 2 && i >= Tk ? 0 : 1)); // batch 1+: 2 padded keys
        const keyMask = tensor(maskArr, [B, Tk]);
        const opts = { causal, keyMask, scale: 1 / Math.sqrt(D) };
        poison([[B, Hq, Tq, D], dtype], [[B, Hq, Tq], 'float32']);
        const g = attention(qd, kd, vd, { ...opts, keyMask: keyMask.to(dev) });
        const c = attention(q, k, v, opts);
        expectClose(g.out.toArray(), c.out.toArray(), tol[dtype] * 3, tol[dtype]);
        const lg = g.lse.toArray();
        const lc = c.lse.toArray();
        for (let i = 0; i < lc.length; i++) if (Number.isFinite(lc[i]) !== Number.isFinite(lg[i])) throw new Error(`lse ${i}: ${lg[i]} vs ${lc[i]}`);
        expectClose(lg.map((x) => (Number.isFinite(x) ? x : 0)), lc.map((x) => (Number.isFinite(x) ? x : 0)), 1e-4, 1e-4);
        const [d, dd] = both([B, Hq, Tq, D], dtype);
        poison([[B, Hq, Tq, D], dtype], [[B, Hkv, Tk, D], dtype], [[B, Hkv, Tk, D], dtype]);
        const gb = attentionBackward(qd, kd, vd, g.out, dd, g.lse, { ...opts, keyMask: keyMask.to(dev) });
        const cb = attentionBackward(q, k, v, c.out, d, c.lse, opts);
        const t = dtype === 'float32' ? 1e-4 : tol[dtype] * 5;
        expectClose(gb.dq.toArray(), cb.dq.toArray(), t, t);
        expectClose(gb.dk.toArray(), cb.dk.toArray(), t, t);
        expectClose(gb.dv.toArray(), cb.dv.toArray(), t, t);
      });
});

describeGpu('CUDA fused attention with packed segments matches the CPU op', () => {
  test('three segments per row, causal, bf16 and fp32: out and gradients', () => {
    for (const dtype of ['float32', 'bfloat16'] as const) {
      const [B, Hq, Hkv, T, D] = [2, 4, 2, 70, 64];
      const [q, qd] = both([B, Hq, T, D], dtype);
      const [k, kd] = both([B, Hkv, T, D], dtype);
      const [v, vd] = both([B, Hkv, T, D], dtype);
      const seg = tensor(Int32Array.from({ length: B * T }, (_, i) => Math.floor((i % T) / 25)), [B, T], { dtype: 'int32' });
      const g = attention(qd, kd, vd, { causal: true, segments: seg.to(dev) });
      const c = attention(q, k, v, { causal: true, segments: seg });
      expectClose(g.out.toArray(), c.out.toArray(), tol[dtype] * 3, tol[dtype]);
      const [d, dd] = both([B, Hq, T, D], dtype);
      const gb = attentionBackward(qd, kd, vd, g.out, dd, g.lse, { causal: true, segments: seg.to(dev) });
      const cb = attentionBackward(q, k, v, c.out, d, c.lse, { causal: true, segments: seg });
      const t = dtype === 'float32' ? 1e-4 : tol[dtype] * 5;
      for (const key of ['dq', 'dk', 'dv'] as const) expectClose(gb[key].toArray(), cb[key].toArray(), t, t);
    }
  });
});

describeGpu('CUDA KV cache: cacheWrite and attention over a cache match the CPU', () => {
  for (const dtype of FLOATS)
    test(`${dtype}: decode steps against a 300-row cache with padding`, () => {
      const [B, Hq, Hkv, Tmax, D] = [3, 9, 3, 300, 64];
      const cpu = [empty([B, Hkv, Tmax, D], { dtype }), empty([B, Hkv, Tmax, D], { dtype })];
      const gpu = cpu.map((t) => t.to(dev));
      const [k, kd] = both([B, Hkv, 37, D], dtype);
      const [v, vd] = both([B, Hkv, 37, D], dtype);
      cacheWrite(cpu[0], k, 0);
      cacheWrite(cpu[1], v, 0);
      cacheWrite(gpu[0], kd, 0);
      cacheWrite(gpu[1], vd, 0);
      const mask = tensor(Float32Array.from({ length: B * Tmax }, (_, i) => (i % Tmax < 3 && i >= Tmax ? 0 : 1)), [B, Tmax]);
      const [q, qd] = both([B, Hq, 1, D], dtype);
      const c = attention(q, cpu[0], cpu[1], { causal: true, kvLength: 37, keyMask: mask });
      const g = attention(qd, gpu[0], gpu[1], { causal: true, kvLength: 37, keyMask: mask.to(dev) });
      expectClose(g.out.toArray(), c.out.toArray(), tol[dtype] * 3, tol[dtype]);
    });
});

describeGpu('CUDA decoders match the CPU', () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-gpu-decoder-'));
  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));
  for (const [arch, write] of [['llama (GQA, llama3 rope)', writeTinyLlama], ['gpt2', writeTinyGpt2]] as const)
    for (const dtype of ['float32', 'bfloat16'] as const)
      test(`${arch} ${dtype}: logits and loss on a padded batch`, async () => {
        const dir = write(path.join(work, `${arch.split(' ')[0]}-${dtype}`), seed());
        const cpu = await loadDecoder(dir, { device: 'cpu', dtype: 'float32' });
        const gpu = await loadDecoder(dir, { device: dev, dtype });
        const ids = [[0, 0, 5, 9, 13, 21, 34], [55, 89, 14, 23, 37, 60, 0]];
        const mask = [[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0]];
        const labels = [[-100, -100, -100, 9, 13, 21, 34], [-100, 89, 14, 23, 37, 60, -100]];
        const c = cpu.forward({ inputIds: ids, attentionMask: mask }, { labels });
        const g = gpu.forward({ inputIds: ids, attentionMask: mask }, { labels });
        const V = cpu.config.vocabSize;
        const real = (a: Float32Array) => a.filter((_, i) => mask[Math.floor(i / V / 7)][Math.floor(i / V) % 7] === 1);
        expectClose(real(g.logits.toArray()), real(c.logits.toArray()), dtype === 'float32' ? 1e-4 : 5e-2, dtype === 'float32' ? 1e-4 : 5e-2);
        expect(Math.abs(g.lossValue! - c.lossValue!)).toBeLessThan(dtype === 'float32' ? 1e-4 : 3e-2 * c.lossValue!);
        for (const x of [c, g, cpu, gpu]) x.dispose();
      });

  for (const cfg of ['seq_bn', 'double_seq_bn', 'par_bn'] as const)
    test(`llama fp32 + ${cfg}: adapter gradients on CUDA equal the CPU's`, async () => {
      const dir = writeTinyLlama(path.join(work, `grad-${cfg}`), seed());
      const models = [await loadDecoder(dir, { device: 'cpu', dtype: 'float32' }), await loadDecoder(dir, { device: dev, dtype: 'float32' })];
      for (const m of models) m.addAdapter('a', { config: cfg, reductionFactor: 4 }, { seed: 11 });
      // the same non-zero adapter weights on both
      for (const [k, t] of models[0].adapterParameters('a')) {
        const v = Float32Array.from({ length: t.size }, () => (Math.random() - 0.5) * 0.2);
        t.copyFrom(v);
        models[1].adapterParameters('a').get(k)!.copyFrom(v);
      }
      const ids = [[0, 3, 14, 15, 92, 65, 35], [89, 79, 32, 38, 46, 26, 43]];
      const mask = [[0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]];
      const labels = [[-100, -100, 14, 15, 92, 65, 35], [-100, 79, 32, 38, 46, 26, 43]];
      const grads = models.map((m) => {
        m.trainAdapter('a');
        const out = m.forward({ inputIds: ids, attentionMask: mask }, { labels });
        m.backward(out);
        out.dispose();
        return m.grads();
      });
      expect([...grads[1].keys()].sort()).toEqual([...grads[0].keys()].sort());
      for (const [k, g] of grads[0]) expectClose(grads[1].get(k)!.toArray(), g.toArray(), 1e-3, 1e-5);
      for (const m of models) m.dispose();
    });
});
