// The frozen encoder against PyTorch references (test/fixtures/tiny-*), with each
// AdapterHub config, padding in the batch, heads and loss, and the loader's rules.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadBackbone, Backbone, tensor, randn, resolveConfig } from '../lib';
import { SafetensorsFile, writeSafetensors } from '../lib/io/safetensors';
import { expectClose } from './helpers';

const FIX = path.join(__dirname, 'fixtures');
const TOL = 1e-4;

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

function near(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string): void {
  try {
    expectClose(actual, expected, TOL, TOL * Math.max(maxAbs(expected), 1e-3));
  } catch (e) {
    throw new Error(`${what}: ${(e as Error).message}`);
  }
}

function inputsOf(ref: SafetensorsFile) {
  const [B, T] = ref.info('input_ids').shape;
  return {
    shape: [B, T] as [number, number],
    inputIds: ref.getInt32('input_ids'),
    attentionMask: ref.getFloat32('attention_mask'),
    tokenTypeIds: ref.has('token_type_ids') ? ref.getInt32('token_type_ids') : undefined,
  };
}

describe('tiny-bert without adapters', () => {
  let model: Backbone;
  const ref = SafetensorsFile.open(path.join(FIX, 'tiny-bert', 'reference-none.safetensors'));
  beforeAll(async () => {
    model = await loadBackbone(path.join(FIX, 'tiny-bert'), { device: 'cpu' });
  });

  test('last hidden state and pooler output match PyTorch (with padding)', () => {
    const res = model.forward(inputsOf(ref));
    expect(res.lastHiddenState.shape).toEqual([3, 10, 64]);
    near(res.lastHiddenState.toArray(), ref.getFloat32('last_hidden_state'), 'last_hidden_state');
    near(res.poolerOutput!.toArray(), ref.getFloat32('pooler_output'), 'pooler_output');
    res.dispose();
  });

  test('parameterCount counts every backbone tensor', () => {
    const ck = SafetensorsFile.open(path.join(FIX, 'tiny-bert', 'model.safetensors'));
    let n = 0;
    for (const name of ck.names()) if (!name.endsWith('position_ids')) n += ck.info(name).shape.reduce((a, b) => a * b, 1);
    expect(model.parameterCount()).toBe(n);
  });

  test('number[][] inputs work and padding does not leak into real tokens', () => {
    const a = model.forward({ inputIds: [[5, 6, 7, 0], [8, 9, 0, 0]], attentionMask: [[1, 1, 1, 0], [1, 1, 0, 0]] });
    const b = model.forward({ inputIds: [[5, 6, 7, 42], [8, 9, 17, 3]], attentionMask: [[1, 1, 1, 0], [1, 1, 0, 0]] });
    const av = a.lastHiddenState.toArray();
    const bv = b.lastHiddenState.toArray();
    for (const [row, len] of [[0, 3], [1, 2]])
      near(bv.subarray(row * 4 * 64, (row * 4 + len) * 64), av.subarray(row * 4 * 64, (row * 4 + len) * 64), 'real tokens');
  });
});

for (const cfgName of ['seq_bn', 'double_seq_bn', 'par_bn'] as const)
  describe(`tiny-bert with ${cfgName}`, () => {
    let model: Backbone;
    const ref = SafetensorsFile.open(path.join(FIX, 'tiny-bert', `reference-${cfgName}.safetensors`));
    const adapterNames = ref.names().filter((n) => n.includes('.adapters.task.') && !n.startsWith('grad'));
    const headNames = ref.names().filter((n) => n.startsWith('heads.task.'));

    beforeAll(async () => {
      model = await loadBackbone(path.join(FIX, 'tiny-bert'), { device: 'cpu' });
      model.addAdapter('task', cfgName);
      model.addClassificationHead('task', { numLabels: 3 });
      model.trainAdapter('task');
      const params = model.namedParameters();
      expect([...params.keys()].sort()).toEqual([...adapterNames, ...headNames].sort());
      for (const [name, t] of params) t.copyFrom(ref.getFloat32(name));
    });

    test('hidden states, logits and loss match PyTorch; gradients of every adapter and head parameter', () => {
      const labels = Array.from(ref.getInt32('labels'));
      const res = model.forward(inputsOf(ref), { labels });
      near(res.lastHiddenState.toArray(), ref.getFloat32('last_hidden_state'), 'last_hidden_state');
      near(res.logits!.toArray(), ref.getFloat32('logits'), 'logits');
      near(res.loss!.toArray(), ref.getFloat32('loss'), 'loss');
      model.zeroGrad();
      model.backward(res);
      const grads = model.grads();
      expect([...grads.keys()].sort()).toEqual([...adapterNames, ...headNames].sort());
      for (const [name, g] of grads) near(g.toArray(), ref.getFloat32(`grad.${name}`), `grad.${name}`);
      res.dispose();
    });

    test('backward from a given gradient of the last hidden state', () => {
      model.zeroGrad();
      const res = model.forward(inputsOf(ref));
      model.backward(res, tensor(ref.getFloat32('d_last_hidden_state'), [3, 10, 64]));
      const grads = model.grads();
      for (const name of adapterNames) near(grads.get(name)!.toArray(), ref.getFloat32(`grad_h.${name}`), `grad_h.${name}`);
      res.dispose();
    });

    test('gradient checkpointing gives identical gradients, with dropout on', () => {
      const labels = Array.from(ref.getInt32('labels'));
      model.zeroGrad();
      const a = model.forward(inputsOf(ref), { labels, training: true, seed: 99 });
      model.backward(a);
      const plain = new Map([...model.grads()].map(([k, v]) => [k, Array.from(v.toArray())]));
      model.zeroGrad();
      const b = model.forward(inputsOf(ref), { labels, training: true, seed: 99, checkpointing: true });
      expect(Array.from(b.loss!.toArray())).toEqual(Array.from(a.loss!.toArray()));
      model.backward(b);
      for (const [k, v] of model.grads()) expect(Array.from(v.toArray())).toEqual(plain.get(k));
      const c = model.forward(inputsOf(ref), { labels, training: true, seed: 100 });
      expect(c.loss!.toArray()[0]).not.toBe(a.loss!.toArray()[0]);
      const eval1 = model.forward(inputsOf(ref), { labels });
      near(eval1.loss!.toArray(), ref.getFloat32('loss'), 'eval loss after training-mode passes');
      for (const r of [a, b, c, eval1]) r.dispose();
    });

    test('the backbone stays frozen: only adapter and head tensors get gradients', () => {
      const before = model.weights.all.get('bert.encoder.layer.0.output.dense.weight')!.toArray();
      model.zeroGrad();
      const res = model.forward(inputsOf(ref), { labels: Array.from(ref.getInt32('labels')) });
      model.backward(res);
      for (const k of model.grads().keys()) expect(k.startsWith('heads.') || k.includes('.adapters.task.')).toBe(true);
      expect(Array.from(model.weights.all.get('bert.encoder.layer.0.output.dense.weight')!.toArray())).toEqual(Array.from(before));
      expect(() => model.backward(res)).toThrow(/already used/);
    });

    test('summary reports parameter counts and shares', () => {
      const s = model.summary();
      expect(s).toMatch(/adapter task \((seq_bn|double_seq_bn|par_bn)/);
      expect(s).toMatch(/% of the backbone/);
    });
  });

describe('adapter management', () => {
  let model: Backbone;
  beforeAll(async () => {
    model = await loadBackbone(path.join(FIX, 'tiny-bert'), { device: 'cpu' });
  });

  test('AdapterHub names, leaveOut, per-layer reduction factors, activation and deletion', () => {
    model.addAdapter('a', { config: 'houlsby', reductionFactor: { '1': 8, default: 32 }, leaveOut: [0] });
    const p = model.adapterParameters('a');
    expect([...p.keys()].sort()).toEqual([
      'bert.encoder.layer.1.attention.output.adapters.a.adapter_down.0.bias',
      'bert.encoder.layer.1.attention.output.adapters.a.adapter_down.0.weight',
      'bert.encoder.layer.1.attention.output.adapters.a.adapter_up.bias',
      'bert.encoder.layer.1.attention.output.adapters.a.adapter_up.weight',
      'bert.encoder.layer.1.output.adapters.a.adapter_down.0.bias',
      'bert.encoder.layer.1.output.adapters.a.adapter_down.0.weight',
      'bert.encoder.layer.1.output.adapters.a.adapter_up.bias',
      'bert.encoder.layer.1.output.adapters.a.adapter_up.weight',
    ]);
    expect(p.get('bert.encoder.layer.1.output.adapters.a.adapter_down.0.weight')!.shape).toEqual([8, 64]);
    expect(model.adapterConfig('a').non_linearity).toBe('swish');
    expect(() => model.addAdapter('a', 'seq_bn')).toThrow(/already exists/);
    expect(() => model.addAdapter('b', 'lora')).toThrow(/adapter config 'lora' is unknown/);
    expect(() => model.setActiveAdapter('nope')).toThrow(/no adapter named 'nope'/);
    model.setActiveAdapter('a');
    expect(model.active).toBe('a');
    model.deleteAdapter('a');
    expect(model.active).toBe(null);
    expect(model.adapterNames()).toEqual([]);
  });

  test("'bert'-initialised seq_bn changes the output a little; par_bn's mam init starts as the identity", () => {
    const inputs = { inputIds: [[3, 4, 5, 6]] };
    const base = model.forward(inputs).lastHiddenState.toArray();
    model.addAdapter('p', 'par_bn');
    model.setActiveAdapter('p');
    near(model.forward(inputs).lastHiddenState.toArray(), base, 'par_bn at init');
    model.deleteAdapter('p');
  });

  test('regression head: MSE when numLabels is 1', () => {
    model.addClassificationHead('reg', { numLabels: 1 });
    const res = model.forward({ inputIds: [[3, 4, 5], [6, 7, 8]] }, { labels: [0.5, -1] });
    const y = res.logits!.toArray();
    expect(res.loss!.toArray()[0]).toBeCloseTo(((y[0] - 0.5) ** 2 + (y[1] + 1) ** 2) / 2, 5);
    model.backward(res);
    expect(model.grads().has('heads.reg.4.weight')).toBe(true);
    model.deleteHead('reg');
  });

  test('int32 tensors as inputs; configs named by config, type or architecture', () => {
    const ids = tensor([3, 4, 5, 6, 7, 8], [2, 3], { dtype: 'int32' });
    const a = model.forward({ inputIds: ids }).lastHiddenState.toArray();
    const b = model.forward({ inputIds: [[3, 4, 5], [6, 7, 8]] }).lastHiddenState.toArray();
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(resolveConfig({ type: 'parallel', reductionFactor: 4 })).toMatchObject({ is_parallel: true, reduction_factor: 4, scaling: 4 });
    expect(resolveConfig({ architecture: 'houlsby' })).toMatchObject({ mh_adapter: true, non_linearity: 'swish', architecture: 'bottleneck' });
    expect(resolveConfig({ mh_adapter: true, output_adapter: true, reduction_factor: 8 })).toMatchObject({ original_ln_before: false, reduction_factor: 8 });
  });

  test('bad inputs give clear errors', () => {
    model.addClassificationHead('cls', { numLabels: 2 });
    expect(() => model.forward({ inputIds: [[1, 2], [3]] })).toThrow(/same length/);
    expect(() => model.forward({ inputIds: [[1, 200]] })).toThrow(/embedding/);
    expect(() => model.forward({ inputIds: [[1, 2]] }, { labels: [5] })).toThrow(/label 5 is outside \[0, 2\)/);
    expect(() => model.forward({ inputIds: [Array(70).fill(1)] })).toThrow(/positions/);
    expect(() => model.forward({ inputIds: new Int32Array(4) })).toThrow(/pass shape/);
    model.deleteHead('cls');
    expect(() => model.forward({ inputIds: [[1, 2]] }, { labels: [0] })).toThrow(/no head is active/);
  });
});

describe('training LayerNorms when asked', () => {
  test('their gradients match central differences of the loss; the backbone stays frozen otherwise', async () => {
    const model = await loadBackbone(path.join(FIX, 'tiny-bert'), { device: 'cpu' });
    const ref = SafetensorsFile.open(path.join(FIX, 'tiny-bert', 'reference-double_seq_bn.safetensors'));
    model.addAdapter('task', 'double_seq_bn');
    model.addClassificationHead('task', { numLabels: 3 });
    model.trainAdapter('task', { trainLayerNorms: true });
    for (const [name, t] of model.namedParameters()) if (ref.has(name)) t.copyFrom(ref.getFloat32(name));
    const lnNames = [...model.layerNormParameters().keys()];
    expect(lnNames).toContain('bert.embeddings.LayerNorm.weight');
    expect(lnNames).toContain('bert.encoder.layer.1.output.LayerNorm.bias');
    expect([...model.namedParameters().keys()]).toEqual(expect.arrayContaining(lnNames));
    const labels = Array.from(ref.getInt32('labels'));
    const lossOf = () => {
      const r = model.forward(inputsOf(ref), { labels });
      const v = r.loss!.toArray()[0];
      r.dispose();
      return v;
    };
    const res = model.forward(inputsOf(ref), { labels });
    model.backward(res);
    const grads = model.grads();
    for (const name of ['bert.embeddings.LayerNorm.weight', 'bert.encoder.layer.0.attention.output.LayerNorm.bias', 'bert.encoder.layer.1.output.LayerNorm.weight']) {
      const t = model.namedParameters().get(name)!;
      const g = grads.get(name)!.toArray();
      const base = t.toArray();
      for (const i of [0, 17, 40]) {
        const h = 5e-3;
        const v = Float32Array.from(base);
        v[i] = base[i] + h;
        t.copyFrom(v);
        const up = lossOf();
        v[i] = base[i] - h;
        t.copyFrom(v);
        const down = lossOf();
        t.copyFrom(base);
        const fd = (up - down) / (2 * h);
        expect(Math.abs(fd - g[i])).toBeLessThan(3e-4 + 3e-2 * Math.abs(g[i]));
      }
    }
    model.trainAdapter('task');
    expect([...model.namedParameters().keys()].some((k) => k.includes('LayerNorm'))).toBe(false);
  });
});

describe('serving several adapters in one batch', () => {
  test('per-row adapters equal running each adapter on its own rows; heads give per-row logits', async () => {
    const model = await loadBackbone(path.join(FIX, 'tiny-bert'), { device: 'cpu' });
    for (const [i, name] of ['a', 'b'].entries()) {
      model.addAdapter(name, { config: 'seq_bn', reductionFactor: 8 }, { seed: 10 + i });
      model.addClassificationHead(name, { numLabels: 2 + i }, { seed: 20 + i });
    }
    for (const t of [...model.adapterParameters('a').values(), ...model.adapterParameters('b').values()])
      t.copyFrom(randn([t.size], { std: 0.1 })); // away from the identity init
    const ids = [[3, 4, 5, 6], [7, 8, 9, 0], [10, 11, 12, 13]];
    const mask = [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]];
    const rows: (string | null)[] = ['b', null, 'a'];
    const res = model.forward({ inputIds: ids, attentionMask: mask }, { adapters: rows });
    const got = res.lastHiddenState.toArray();
    rows.forEach((name, b) => {
      model.setActiveAdapter(name);
      if (name) model.setActiveHead(name);
      const one = model.forward({ inputIds: [ids[b]], attentionMask: [mask[b]] });
      near(got.subarray(b * 4 * 64, (b + 1) * 4 * 64), one.lastHiddenState.toArray(), `row ${b}`);
      if (name) near(res.rowLogits![b]!, one.logits!.toArray(), `logits of row ${b}`);
      else expect(res.rowLogits![b]).toBeNull();
    });
    expect(() => model.backward(res)).toThrow(/per-row adapters/);
    model.addAdapter('c', 'par_bn');
    expect(() => model.forward({ inputIds: ids }, { adapters: ['a', 'c', null] })).toThrow(/share one configuration/);
    expect(() => model.forward({ inputIds: ids }, { adapters: ['a'] })).toThrow(/1 entries for 3 sequences/);
    expect(() => model.forward({ inputIds: ids }, { adapters: ['a', 'a', 'x'] })).toThrow(/no adapter named 'x'/);
    expect(() => model.forward({ inputIds: ids }, { adapters: ['a', 'a', 'a'], training: true })).toThrow(/inference only/);
  });
});

describe('other encoders and checkpoint layouts', () => {
  for (const kind of ['tiny-roberta', 'tiny-distilbert'])
    test(`${kind} matches PyTorch`, async () => {
      const model = await loadBackbone(path.join(FIX, kind), { device: 'cpu' });
      const ref = SafetensorsFile.open(path.join(FIX, kind, 'reference-none.safetensors'));
      const res = model.forward(inputsOf(ref));
      near(res.lastHiddenState.toArray(), ref.getFloat32('last_hidden_state'), `${kind} last_hidden_state`);
      model.addAdapter('x', 'double_seq_bn');
      expect([...model.adapterParameters('x').keys()][0]).toMatch(kind === 'tiny-distilbert'
        ? /^distilbert\.transformer\.layer\.0\.attention_adapters\.adapters\.x\.adapter_down\.0\.weight$/
        : /^roberta\.encoder\.layer\.0\.attention\.output\.adapters\.x\./);
      model.dispose();
    });

  function rewrite(dir: string, rename: (n: string) => string, drop: (n: string) => boolean = () => false): string {
    const src = SafetensorsFile.open(path.join(FIX, 'tiny-bert', 'model.safetensors'));
    const out: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
    for (const n of src.names()) {
      if (n.endsWith('position_ids') || drop(n)) continue;
      out[rename(n)] = { dtype: 'F32', shape: src.info(n).shape, data: src.getFloat32(n) };
    }
    fs.mkdirSync(dir, { recursive: true });
    fs.copyFileSync(path.join(FIX, 'tiny-bert', 'config.json'), path.join(dir, 'config.json'));
    writeSafetensors(path.join(dir, 'model.safetensors'), out);
    return dir;
  }

  test('bare names (no bert. prefix) and legacy LayerNorm gamma/beta load the same model', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-bb-'));
    const ref = SafetensorsFile.open(path.join(FIX, 'tiny-bert', 'reference-none.safetensors'));
    const dir = rewrite(path.join(tmp, 'bare'), (n) => n.replace(/^bert\./, '').replace(/LayerNorm\.weight$/, 'LayerNorm.gamma').replace(/LayerNorm\.bias$/, 'LayerNorm.beta'));
    const model = await loadBackbone(dir, { device: 'cpu' });
    near(model.forward(inputsOf(ref)).lastHiddenState.toArray(), ref.getFloat32('last_hidden_state'), 'bare');
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('a sharded checkpoint (model.safetensors.index.json) loads the same model', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-shard-'));
    const src = SafetensorsFile.open(path.join(FIX, 'tiny-bert', 'model.safetensors'));
    const names = src.names().filter((n) => !n.endsWith('position_ids'));
    const shards: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }>[] = [{}, {}];
    const weightMap: Record<string, string> = {};
    names.forEach((n, i) => {
      shards[i % 2][n] = { dtype: 'F32', shape: src.info(n).shape, data: src.getFloat32(n) };
      weightMap[n] = `model-0000${(i % 2) + 1}-of-00002.safetensors`;
    });
    shards.forEach((sh, i) => writeSafetensors(path.join(tmp, `model-0000${i + 1}-of-00002.safetensors`), sh));
    fs.writeFileSync(path.join(tmp, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
    fs.copyFileSync(path.join(FIX, 'tiny-bert', 'config.json'), path.join(tmp, 'config.json'));
    const ref = SafetensorsFile.open(path.join(FIX, 'tiny-bert', 'reference-none.safetensors'));
    const model = await loadBackbone(tmp, { device: 'cpu' });
    near(model.forward(inputsOf(ref)).lastHiddenState.toArray(), ref.getFloat32('last_hidden_state'), 'sharded');
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('loader errors: missing tensor, unknown model_type, bad JSON, pickle only, shape mismatch', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-bb-'));
    const missing = rewrite(path.join(tmp, 'missing'), (n) => n, (n) => n.includes('layer.1.output.dense.weight'));
    await expect(loadBackbone(missing, { device: 'cpu' })).rejects.toThrow(/lacks tensor 'bert\.encoder\.layer\.1\.output\.dense\.weight'.*first missing/);
    const gpt = path.join(tmp, 'gpt');
    fs.mkdirSync(gpt);
    fs.writeFileSync(path.join(gpt, 'config.json'), JSON.stringify({ model_type: 'gpt2' }));
    await expect(loadBackbone(gpt)).rejects.toThrow(/unsupported model_type 'gpt2'; supported: bert, roberta, distilbert/);
    fs.writeFileSync(path.join(gpt, 'config.json'), '{ not json');
    await expect(loadBackbone(gpt)).rejects.toThrow(/config.json is not valid JSON/);
    const pickle = path.join(tmp, 'pickle');
    fs.mkdirSync(pickle);
    fs.copyFileSync(path.join(FIX, 'tiny-bert', 'config.json'), path.join(pickle, 'config.json'));
    fs.writeFileSync(path.join(pickle, 'pytorch_model.bin'), 'not really');
    await expect(loadBackbone(pickle, { device: 'cpu' })).rejects.toThrow(/pickle/i);
    const wrong = path.join(tmp, 'wrong');
    rewrite(wrong, (n) => n);
    const cfg = JSON.parse(fs.readFileSync(path.join(wrong, 'config.json'), 'utf8'));
    fs.writeFileSync(path.join(wrong, 'config.json'), JSON.stringify({ ...cfg, intermediate_size: 96 }));
    await expect(loadBackbone(wrong, { device: 'cpu' })).rejects.toThrow(/has shape \[128, 64\], the config needs \[96, 64\]/);
    await expect(loadBackbone(path.join(tmp, 'nothing'))).rejects.toThrow(/model directory '.*nothing' does not exist/);
    fs.mkdirSync(path.join(tmp, 'empty'));
    await expect(loadBackbone(path.join(tmp, 'empty'))).rejects.toThrow(/cannot read .*config.json/);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('random dLastHiddenState of the wrong shape is refused', async () => {
    const model = await loadBackbone(path.join(FIX, 'tiny-bert'), { device: 'cpu' });
    const res = model.forward({ inputIds: [[1, 2, 3]] });
    expect(() => model.backward(res, randn([1, 2, 64]))).toThrow(/dLastHiddenState must be a Tensor of shape \[1,3,64\]/);
  });
});
