// Non-finite activations, logits and losses (issue 12): forward throws a NonFiniteError naming the
// layer and op where NaN/±Infinity first appear; training stops with it, or skips the step when asked.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadBackbone, NonFiniteError, train, Tokenizer } from '../lib';
import type { Backbone } from '../lib';
import { SafetensorsFile, TensorToWrite, writeSafetensors } from '../lib/io/safetensors';

const FIX = path.join(__dirname, 'fixtures', 'tiny-bert');
let work: string;
beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-finite-'));
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

let n = 0;
/** tiny-bert with its tensors rewritten by `edit`. */
function editedBert(edit: (t: Record<string, TensorToWrite>) => void): string {
  const dir = path.join(work, `m${n++}`);
  fs.mkdirSync(dir);
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(FIX, f), path.join(dir, f));
  const src = SafetensorsFile.open(path.join(FIX, 'model.safetensors'));
  const t: Record<string, TensorToWrite> = {};
  for (const name of src.names()) t[name] = { dtype: 'F32', shape: src.info(name).shape, data: src.getFloat32(name) };
  src.close();
  edit(t);
  writeSafetensors(path.join(dir, 'model.safetensors'), t);
  return dir;
}

const ids = { inputIds: [[2, 7, 9, 11, 3], [2, 8, 3, 0, 0]], attentionMask: [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]] };

function caught(f: () => unknown): NonFiniteError {
  try {
    f();
  } catch (e) {
    if (e instanceof NonFiniteError) return e;
    throw e;
  }
  throw new Error('expected a NonFiniteError');
}

test('a NaN deep in the backbone is named by layer and op; outputs before it are finite', async () => {
  const dir = editedBert((t) => {
    (t['bert.encoder.layer.1.intermediate.dense.bias'].data as Float32Array)[5] = NaN;
  });
  const model = await loadBackbone(dir, { device: 'cpu', allowNonFinite: true });
  model.addClassificationHead('h', { numLabels: 2 });
  const e = caught(() => model.forward(ids, { labels: [0, 1] }));
  expect(e.layer).toBe(1);
  expect(e.op).toBe('intermediate.dense');
  expect(e.message).toMatch(/^forward: non-finite values \(NaN at element \d+ of \[2, 5, 128\]\) first appear in layer 1, intermediate\.dense; every value before it is finite/);
  // asked not to check, forward returns what it computed
  const res = model.forward(ids, { checkFinite: false });
  expect(res.logits!.toArray().some(Number.isNaN)).toBe(true);
  res.dispose();
  model.dispose();
});

test('a backbone whose first data bytes are scrambled (values finite, up to ~3e38) fails on forward, not with NaN as a result', async () => {
  // as in the report: the first 4,000 data bytes XOR-ed, a bit cleared wherever that made a float NaN or
  // Infinity (so the file loads); tiny-bert's first 512 data bytes are position_ids, which are left alone
  const dir = path.join(work, 'scrambled');
  fs.mkdirSync(dir);
  for (const f of ['config.json', 'model.safetensors']) fs.copyFileSync(path.join(FIX, f), path.join(dir, f));
  const file = path.join(dir, 'model.safetensors');
  const bytes = fs.readFileSync(file);
  const data = 8 + Number(bytes.readBigUInt64LE(0));
  let s = 12345;
  for (let i = data + 512; i < data + 4000; i++) bytes[i] ^= (s = (s * 1103515245 + 12345) % 2 ** 31) & 0xff;
  for (let i = data + 512; i < data + 4000; i += 4) if (!Number.isFinite(bytes.readFloatLE(i))) bytes[i + 3] &= 0xbf;
  fs.writeFileSync(file, bytes);
  const model = await loadBackbone(dir, { device: 'cpu' });
  model.addClassificationHead('h', { numLabels: 2 });
  const e = caught(() => model.forward(ids, { labels: [1, 0] }));
  expect(e.message).toMatch(/^forward: non-finite values \((NaN|-?Infinity) at element \d+ of \[[\d, ]+\]\) first appear in (layer \d, )?[a-z]/);
  expect(e.op.length).toBeGreaterThan(0);
  model.dispose();
});

test('a diverged adapter is named: layer, site and the adapter op', async () => {
  const model = await loadBackbone(FIX, { device: 'cpu' });
  model.addAdapter('a', 'double_seq_bn');
  const p = model.adapterParameters('a');
  const up = [...p.entries()].find(([k]) => /layer\.0\.output\.adapters\.a\.adapter_up\.bias$/.test(k))![1];
  up.copyFrom(new Float32Array(up.size).fill(Infinity));
  model.setActiveAdapter('a');
  const e = caught(() => model.forward(ids));
  expect([e.layer, e.op]).toEqual([0, 'output.adapters (bottleneck)']);
  model.dispose();
});

describe('training', () => {
  let dir: string;
  let tokenizer: Tokenizer;
  let poisonId: number;
  beforeAll(async () => {
    tokenizer = await Tokenizer.fromDir(FIX);
    const enc = tokenizer.encodeBatch(['refund']);
    poisonId = enc.inputIds[1]; // after [CLS]
    expect(poisonId).not.toBe(enc.inputIds[0] === 2 ? 1 : -1); // a word of the vocabulary, not [UNK]
    dir = editedBert((t) => {
      const w = t['bert.embeddings.word_embeddings.weight'];
      const H = w.shape[1];
      (w.data as Float32Array).fill(NaN, poisonId * H, (poisonId + 1) * H);
    });
  });
  const data = Array.from({ length: 32 }, (_, i) => ({ text: `${i % 8 === 5 ? 'refund ' : ''}good order ${i % 2 ? 'the' : 'is'}`, label: i % 2 ? 'a' : 'b' }));

  async function model(): Promise<Backbone> {
    const m = await loadBackbone(dir, { device: 'cpu', allowNonFinite: true });
    m.addAdapter('t', { config: 'seq_bn', reductionFactor: 8 }, { seed: 1 });
    return m;
  }

  test('a batch that makes the loss non-finite stops training with the step, layer and op', async () => {
    const m = await model();
    const err = await train({ model: m, adapter: 't', tokenizer, trainData: data, batchSize: 4, steps: 8, progress: false, seed: 1 }).then(() => null, (e) => e);
    expect(err).toBeInstanceOf(NonFiniteError);
    expect(err.message).toMatch(/^step \d+: forward: non-finite values \(NaN .*\) first appear in embeddings \(word \+ position \+ token type\)/);
    m.dispose();
  });

  test('skipNonFinite skips exactly the steps whose batch holds the token, and trains on the others', async () => {
    const m = await model();
    const before = new Map([...m.adapterParameters('t')].map(([k, t]) => [k, t.toArray()]));
    const log: Record<string, unknown>[] = [];
    const res = await train({
      model: m, adapter: 't', tokenizer, trainData: data, batchSize: 4, steps: 8, progress: false, seed: 1, skipNonFinite: true, lr: 1e-2,
      onLog: (e) => log.push(e),
    });
    const skips = log.filter((e) => e.event === 'skip');
    const steps = log.filter((e) => e.event === 'step');
    // 4 of the 32 examples hold 'refund'; shuffled into 8 batches of 4, they spoil between 1 and 4 of them
    expect(res.skippedSteps).toBe(skips.length);
    expect(skips.length).toBeGreaterThanOrEqual(1);
    expect(skips.length).toBeLessThanOrEqual(4);
    expect(skips.length + steps.length).toBe(8);
    expect(skips[0]).toMatchObject({ layer: null, op: 'embeddings (word + position + token type)' });
    for (const e of steps) expect(Number.isFinite(e.loss as number)).toBe(true);
    // the adapter trained and holds only finite values
    let moved = false;
    for (const [k, t] of m.adapterParameters('t')) {
      const a = t.toArray();
      expect(a.every(Number.isFinite)).toBe(true);
      if (a.some((v, i) => v !== before.get(k)![i])) moved = true;
    }
    expect(moved).toBe(true);
    m.dispose();
  });
});
