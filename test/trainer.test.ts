// The trainer: determinism, exact resume, evaluation, best-adapter tracking, logs; metrics.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadBackbone } from '../lib/models/bert/load';
import type { Backbone } from '../lib/models/bert/model';
import type { Example } from '../lib/train/data';
import { LabelMap } from '../lib/train/data';
import { accuracy, argmaxRows, macroF1 } from '../lib/train/metrics';
import { Tokenizer } from '../lib/train/tokenizer';
import { evaluate, train } from '../lib/train/trainer';

const MODEL = path.join(__dirname, 'fixtures', 'tiny-bert');

function examples(n: number, seed: number): Example[] {
  const words = ['the', 'refund', 'please', 'my', 'is', 'thanks', 'help'];
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  return Array.from({ length: n }, (_, i) => {
    const label = ['pos', 'neg', 'neutral'][i % 3];
    const len = 3 + Math.floor(rnd() * 6);
    const text = [label === 'pos' ? 'good' : label === 'neg' ? 'bad' : 'order', ...Array.from({ length: len }, () => words[Math.floor(rnd() * words.length)])].join(' ');
    return { text, label };
  });
}

async function fresh(): Promise<{ model: Backbone; tokenizer: Tokenizer }> {
  const model = await loadBackbone(MODEL, { device: 'cpu' });
  model.addAdapter('t', { config: 'seq_bn', reductionFactor: 8 }, { seed: 5 });
  return { model, tokenizer: await Tokenizer.fromDir(MODEL) };
}

function params(model: Backbone): Map<string, number[]> {
  return new Map([...model.namedParameters()].map(([k, t]) => [k, Array.from(t.toArray())]));
}

describe('metrics', () => {
  test('accuracy, macro-F1 (scikit-learn semantics), argmax', () => {
    expect(accuracy([0, 1, 2, 2], [0, 1, 1, 2])).toBe(0.75);
    // classes 0: tp1 → F1 1; 1: tp1 fn1 → 2/3; 2: tp1 fp1 → 2/3
    expect(macroF1([0, 1, 2, 2], [0, 1, 1, 2])).toBeCloseTo((1 + 2 / 3 + 2 / 3) / 3, 12);
    expect(argmaxRows(new Float32Array([0.1, 0.9, 0.3, 0.2]), 2)).toEqual([1, 0]);
  });
});

describe('train', () => {
  const trainData = examples(48, 1);
  const evalData = examples(18, 2);
  const labels = LabelMap.fromExamples(trainData);
  const base = { adapter: 't', trainData, evalData, labels, batchSize: 8, lr: 3e-3, seed: 3, progress: false } as const;

  test('the same seed gives the same numbers; 10 steps, save, resume, 10 steps equals 20 straight steps (bitwise)', async () => {
    const a = await fresh();
    const straight = await train({ ...base, model: a.model, tokenizer: a.tokenizer, steps: 20, evalEvery: 100 });
    const pa = params(a.model);

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-ck-'));
    const b = await fresh();
    const first = await train({ ...base, model: b.model, tokenizer: b.tokenizer, steps: 20, evalEvery: 100, checkpointDir: dir, checkpointEvery: 10, stopAfter: 10 });
    expect(first.steps).toBe(10);
    const c = await fresh(); // a new process would start from a new model
    const second = await train({ ...base, model: c.model, tokenizer: c.tokenizer, steps: 20, evalEvery: 100, checkpointDir: dir, checkpointEvery: 10, resume: true });
    expect(second.steps).toBe(20);
    const pc = params(c.model);
    for (const [k, v] of pa) expect(pc.get(k)).toEqual(v);
    const lossesStraight = straight.history.filter((e) => e.event === 'step').map((e) => e.loss);
    const lossesResumed = [...first.history, ...second.history].filter((e) => e.event === 'step').map((e) => e.loss);
    expect(lossesResumed).toEqual(lossesStraight);
    expect(fs.readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);

    const d = await fresh();
    await train({ ...base, model: d.model, tokenizer: d.tokenizer, steps: 20, evalEvery: 100 });
    expect(params(d.model)).toEqual(pa);
  });

  test('learns, evaluates, keeps the best adapter, writes a JSONL log', async () => {
    const { model, tokenizer } = await fresh();
    const logFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'fa-log-')), 'log.jsonl');
    model.addClassificationHead('t', { numLabels: labels.size }, { seed: 9 });
    model.setActiveAdapter('t');
    const before = await evaluate(model, tokenizer, evalData, labels);
    const res = await train({ ...base, model, tokenizer, epochs: 24, lr: 1e-2, evalEvery: 6, logFile });
    expect(res.best).not.toBeNull();
    expect(res.final!.accuracy).toBeGreaterThan(before.accuracy);
    expect(res.final!.accuracy).toBeGreaterThanOrEqual(0.8);
    const after = await evaluate(model, tokenizer, evalData, labels);
    expect(after.accuracy).toBeCloseTo(res.best!.metrics.accuracy, 10); // the restored best
    const lines = fs.readFileSync(logFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.filter((l) => l.event === 'step')).toHaveLength(res.steps);
    expect(lines.some((l) => l.event === 'eval' && typeof l.macroF1 === 'number')).toBe(true);
    for (const l of lines.filter((x) => x.event === 'step')) {
      expect(Number.isFinite(l.loss)).toBe(true);
      expect(l.lr).toBeGreaterThanOrEqual(0);
    }
  });

  test('early stopping stops after `patience` evaluations without improvement', async () => {
    const { model, tokenizer } = await fresh();
    const res = await train({ ...base, model, tokenizer, epochs: 50, lr: 1e-9, evalEvery: 1, earlyStoppingPatience: 2 });
    expect(res.stoppedEarly).toBe(true);
    expect(res.steps).toBeLessThan(10);
  });

  test('gradient accumulation and gradient checkpointing run', async () => {
    const { model, tokenizer } = await fresh();
    const res = await train({ ...base, model, tokenizer, steps: 3, gradientAccumulation: 2, checkpointing: true, evalEvery: 100 });
    expect(res.steps).toBe(3);
  });

  test('data from a file, the tokenizer from the model directory, an adapter named by its config', async () => {
    const model = await loadBackbone(MODEL, { device: 'cpu' });
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'fa-data-')), 'train.jsonl');
    fs.writeFileSync(file, trainData.map((e) => JSON.stringify(e)).join('\n'));
    const res = await train({ model, adapter: 'par_bn', trainData: file, evalData: file, steps: 2, batchSize: 8, progress: false });
    expect(res.steps).toBe(2);
    expect(model.adapterNames()).toEqual(['par_bn']);
    expect(model.adapterConfig('par_bn').is_parallel).toBe(true);
  });

  test('bad inputs', async () => {
    const { model, tokenizer } = await fresh();
    await expect(train({ ...base, model, tokenizer, trainData: [] })).rejects.toThrow(/trainData is empty/);
    await expect(train({ ...base, model, tokenizer, adapter: 'missing', steps: 1 })).rejects.toThrow(/no adapter named 'missing'/);
    await expect(train({ ...base, model, tokenizer, steps: 1, trainData: [...trainData, { text: 'x', label: 'other' }] })).rejects.toThrow(/unknown label 'other'/);
  });
});
