// Whole passes off the JS thread (runDeferred, forwardAsync/backwardAsync): the same values as the
// synchronous calls, bit for bit; the event loop turning while they compute; every piece of CPU work in
// issue order (reads inside a pass, sync ops on results not yet computed, async ops after queued ones).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { add, fill, loadBackbone, loadDecoder, matmul, matmulAsync, randn, runDeferred, scale, Tensor } from '../lib';
import { native } from '../lib/backend';
import { writeTinyLlama } from './decoderFixture';

const SEED = process.env.FA_TEST_SEED ? Number(process.env.FA_TEST_SEED) : Math.floor(Math.random() * 2 ** 31);
const FIX = path.join(__dirname, 'fixtures');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-deferred-'));
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));
const values = (t: Tensor) => Array.from(t.toArray());
// kernels queued and queues forced early (a read, an op that cannot be queued) by `f`
async function counted<T>(f: () => Promise<T>): Promise<{ queued: number; forced: number; value: T }> {
  const before = native().deferredStats();
  const value = await f();
  const after = native().deferredStats();
  return { queued: after.queued - before.queued, forced: after.forced - before.forced, value };
}

describe(`deferred passes (seed ${SEED})`, () => {
  test('queued kernels give the synchronous values; reads inside the pass and sync ops before the await see them', async () => {
    const a = randn([64, 48], { seed: SEED });
    const b = randn([48, 40], { seed: SEED + 1 });
    const want = add(matmul(a, b), scale(matmul(a, b), 0.5));
    let inside: number[] = [];
    let last!: Tensor;
    const pending = runDeferred(() => {
      const p = matmul(a, b);
      const q = add(p, scale(p, 0.5));
      p.dispose(); // an intermediate disposed before its kernel ran: the queue holds its buffer
      inside = values(scale(q, 2)); // a read mid-pass runs the queue first
      last = scale(q, 3);
      return add(q, q);
    });
    expect(native().deferring()).toBe(false);
    expect(values(scale(last, 1 / 3))).toEqual(values(scale(scale(want, 3), 1 / 3))); // a sync op waits for the pass
    expect(inside).toEqual(values(add(want, want)));
    expect(values(await pending)).toEqual(values(add(want, want)));
    // an in-place kernel queued before an async op: the async op sees its effect
    const c = randn([16, 16], { seed: SEED + 2 });
    const ones = await runDeferred(() => {
      fill(c, 1);
      return matmulAsync(c, c);
    });
    expect(values(await ones).every((v) => v === 16)).toBe(true);
    // an error thrown while building: the rejection is that error, and the queued work still ran
    let made: Tensor | null = null;
    await expect(runDeferred(() => {
      made = matmul(a, b);
      throw new Error('built badly');
    })).rejects.toThrow('built badly');
    expect(values(made!)).toEqual(values(matmul(a, b)));
    expect(native().deferring()).toBe(false);
  });

  test('the event loop turns while a queued pass computes', async () => {
    const big = randn([768, 768], { seed: SEED });
    const sync0 = process.hrtime.bigint();
    for (let i = 0; i < 6; i++) matmul(big, big).dispose();
    const syncMs = Number(process.hrtime.bigint() - sync0) / 1e6;
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    const t0 = process.hrtime.bigint();
    const pending = runDeferred(() => Array.from({ length: 6 }, () => matmul(big, big)));
    const buildMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const outs = await pending;
    clearInterval(timer);
    for (const t of outs) t.dispose();
    expect(buildMs).toBeLessThan(syncMs / 3); // queuing is not computing
    expect(ticks).toBeGreaterThan(0);
  });

  test('Backbone.forwardAsync / backwardAsync: bit for bit forward / backward, training dropout and per-row heads included', async () => {
    const model = await loadBackbone(path.join(FIX, 'tiny-bert'), { device: 'cpu' });
    model.addAdapter('task', { config: 'double_seq_bn', reductionFactor: 4, dropout: 0.1 }, { seed: 3 });
    for (const t of model.adapterParameters('task').values()) t.copyFrom(Float32Array.from({ length: t.size }, (_, i) => Math.sin(i + t.size + SEED % 97) * 0.2));
    model.addClassificationHead('task', { numLabels: 3 });
    model.trainAdapter('task');
    const inputs = { inputIds: [[2, 7, 11, 5, 3], [2, 9, 4, 3, 0]], attentionMask: [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]] };
    const run = async (asyncForm: boolean) => {
      const o = { labels: [2, 0], training: true, seed: SEED % 1000 };
      let res;
      if (asyncForm) {
        // the whole pass is queued: nothing in it forces the queue on the JS thread
        const f = await counted(() => model.forwardAsync(inputs, o));
        expect([f.forced, f.queued > 50]).toEqual([0, true]);
        res = f.value;
      } else res = model.forward(inputs, o);
      const out = { loss: values(res.loss!), hidden: values(res.lastHiddenState), logits: values(res.logits!) };
      if (asyncForm) {
        const b = await counted(() => model.backwardAsync(res));
        expect([b.forced, b.queued > 50]).toEqual([0, true]);
      } else model.backward(res);
      res.dispose();
      const grads = new Map([...model.grads()].map(([k, t]) => [k, values(t)]));
      model.zeroGrad();
      return { out, grads };
    };
    const s = await run(false);
    const a = await run(true);
    expect(a.out).toEqual(s.out);
    expect([...a.grads.keys()]).toEqual([...s.grads.keys()]);
    for (const [k, v] of s.grads) expect(a.grads.get(k)).toEqual(v);
    expect(s.grads.size).toBeGreaterThan(0);
    const rows = { adapters: ['task', null] };
    const rs = model.forward(inputs, rows);
    const ra = await model.forwardAsync(inputs, rows);
    expect(ra.rowLogits!.map((r) => r && Array.from(r))).toEqual(rs.rowLogits!.map((r) => r && Array.from(r)));
    expect(ra.rowLogits![0]).toHaveLength(3);
    model.dispose();
  });

  test('Decoder.forwardAsync / backwardAsync: bit for bit, the chunked loss included', async () => {
    const model = await loadDecoder(writeTinyLlama(path.join(work, 'llama'), SEED), { device: 'cpu' });
    model.addAdapter('a', { config: 'seq_bn', reductionFactor: 4 }, { seed: 5 });
    for (const t of model.adapterParameters('a').values()) t.copyFrom(Float32Array.from({ length: t.size }, (_, i) => Math.cos(i + t.size) * 0.1));
    model.trainAdapter('a');
    const inputs = { inputIds: [[0, 5, 9, 13, 21], [34, 55, 89, 14, 23]] };
    const labels = [[-100, 5, 9, 13, 21], [-100, 55, 89, -100, 23]];
    for (const keepLogits of [true, false]) {
      const run = async (asyncForm: boolean) => {
        const o = { labels, seed: 3, keepLogits, lossChunkRows: 3 };
        let out;
        if (asyncForm) {
          const f = await counted(() => model.forwardAsync(inputs, o));
          expect([f.forced, f.queued > 20]).toEqual([0, true]);
          out = f.value;
        } else out = model.forward(inputs, o);
        const loss = out.lossValue!;
        if (asyncForm) {
          const b = await counted(() => model.backwardAsync(out));
          expect([b.forced, b.queued > 20]).toEqual([0, true]);
        } else model.backward(out);
        out.dispose();
        const grads = [...model.grads()].map(([k, t]) => [k, values(t)]);
        model.zeroGrad();
        return { loss, grads };
      };
      const s = await run(false);
      expect(Number.isFinite(s.loss)).toBe(true);
      expect(await run(true)).toEqual(s);
    }
    model.dispose();
  });
});
