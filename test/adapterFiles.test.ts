// Adapter and head files in AdapterHub's format: round trips (bitwise), the exact file layout,
// directories written the way AdapterHub writes them, and every refusal.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ADAPTER_FILES, ADAPTERHUB_VERSION, loadAdapter, loadHead, saveAdapter, saveHead } from '../lib/adapterhub/files';
import { loadBackbone } from '../lib/models/bert/load';
import type { Backbone } from '../lib/models/bert/model';
import { SafetensorsFile, writeSafetensors } from '../lib/io/safetensors';
import type { Tensor } from '../lib/tensor';
import { rng } from './helpers';

const FIX = path.join(__dirname, 'fixtures');
const BERT = path.join(FIX, 'tiny-bert');
const H = 64;
const INPUTS = {
  inputIds: [[2, 5, 9, 14, 3, 0], [2, 7, 8, 3, 0, 0]],
  attentionMask: [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]],
};

/** BnConfig.to_dict() keys of AdapterHub 1.2 (adapters/configuration/adapter_config.py). */
const HUB_BN_FIELDS = [
  'adapter_residual_before_ln', 'cross_adapter', 'dropout', 'factorized_phm_W', 'factorized_phm_rule',
  'hypercomplex_nonlinearity', 'init_weights', 'init_weights_seed', 'inv_adapter', 'inv_adapter_reduction_factor',
  'is_parallel', 'learn_phm', 'leave_out', 'ln_after', 'ln_before', 'mh_adapter', 'non_linearity',
  'original_ln_after', 'original_ln_before', 'output_adapter', 'phm_bias', 'phm_c_init', 'phm_dim',
  'phm_init_range', 'phm_layer', 'phm_rank', 'reduction_factor', 'residual_before_ln', 'scaling',
  'shared_W_phm', 'shared_phm_rule', 'stochastic_depth', 'use_gating',
];
/** build_full_config's keys. */
const HUB_TOP_KEYS = ['config', 'hidden_size', 'model_class', 'model_name', 'model_type', 'name', 'version'];

const dirs: string[] = [];
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-files-'));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

const bert = () => loadBackbone(BERT, { device: 'cpu' });

function randomize(params: Map<string, Tensor>, seed: number): void {
  const r = rng(seed);
  for (const t of params.values()) t.copyFrom(r.array(t.size, 0.2));
}

function bits(t: Tensor): string {
  const a = t.toArray();
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('hex');
}

function expectSameTensors(a: Map<string, Tensor>, b: Map<string, Tensor>, rename: (k: string) => string = (k) => k): void {
  expect([...b.keys()].sort()).toEqual([...a.keys()].map(rename).sort());
  for (const [k, t] of a) {
    const u = b.get(rename(k))!;
    expect(u.shape).toEqual(t.shape);
    expect(bits(u)).toBe(bits(t));
  }
}

function outputs(model: Backbone, adapter: string, head: string | null) {
  model.setActiveAdapter(adapter);
  model.setActiveHead(head);
  const res = model.forward(INPUTS);
  const out = { hidden: bits(res.lastHiddenState), logits: res.logits ? bits(res.logits) : null };
  res.dispose();
  return out;
}

function readJson(file: string): Record<string, any> {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

function writeJson(file: string, v: unknown): void {
  fs.writeFileSync(file, JSON.stringify(v, null, 2));
}

/** A model with a randomised adapter `task` of `cfg` and (optionally) a randomised 3-label head `task`. */
async function trained(cfg: string, withHead: boolean): Promise<Backbone> {
  const m = await bert();
  m.addAdapter('task', cfg);
  randomize(m.adapterParameters('task'), 11);
  if (withHead) {
    m.addClassificationHead('task', { numLabels: 3 });
    randomize(m.head('task')!.parameters(), 12);
  }
  return m;
}

describe.each(['seq_bn', 'double_seq_bn', 'par_bn'] as const)('%s round trip', (cfg) => {
  for (const withHead of [true, false])
    test(`${withHead ? 'with' : 'without'} head: identical tensors and outputs, as saved and under loadAs`, async () => {
      const a = await trained(cfg, withHead);
      const dir = tmp();
      a.saveAdapter(dir, 'task');
      const files = fs.readdirSync(dir).sort();
      expect(files).toEqual(withHead
        ? [ADAPTER_FILES.config, ADAPTER_FILES.weights, ADAPTER_FILES.headConfig, ADAPTER_FILES.headWeights].sort()
        : [ADAPTER_FILES.config, ADAPTER_FILES.weights].sort());
      const ref = outputs(a, 'task', withHead ? 'task' : null);

      const b = await bert();
      const r1 = b.loadAdapter(dir);
      expect(r1).toEqual({ name: 'task', warnings: [] });
      expect(b.adapterConfig('task')).toEqual(a.adapterConfig('task'));
      expectSameTensors(a.adapterParameters('task'), b.adapterParameters('task'));
      if (withHead) expectSameTensors(a.head('task')!.parameters(), b.head('task')!.parameters());
      else expect(b.head('task')).toBeUndefined();
      expect(outputs(b, 'task', withHead ? 'task' : null)).toEqual(ref);

      const r2 = loadAdapter(b, dir, { loadAs: 'again' });
      expect(r2.name).toBe('again');
      expectSameTensors(a.adapterParameters('task'), b.adapterParameters('again'), (k) => k.replace('.adapters.task.', '.adapters.again.'));
      if (withHead) expectSameTensors(a.head('task')!.parameters(), b.head('again')!.parameters(), (k) => k.replace('heads.task.', 'heads.again.'));
      expect(outputs(b, 'again', withHead ? 'again' : null)).toEqual(ref);
      if (cfg === 'double_seq_bn')
        expect([...b.adapterParameters('again').keys()].filter((k) => k.includes('.attention.output.adapters.again.'))).toHaveLength(8);
      a.dispose();
      b.dispose();
    });
});

test('withHead: false saves and loads the adapter alone; stale head files are removed on save', async () => {
  const a = await trained('seq_bn', true);
  const dir = tmp();
  saveAdapter(a, dir, 'task');
  expect(fs.existsSync(path.join(dir, ADAPTER_FILES.headConfig))).toBe(true);
  const b = await bert();
  expect(loadAdapter(b, dir, { withHead: false }).name).toBe('task');
  expect(b.head('task')).toBeUndefined();
  saveAdapter(a, dir, 'task', { withHead: false });
  expect(fs.readdirSync(dir).sort()).toEqual([ADAPTER_FILES.config, ADAPTER_FILES.weights].sort());
  const c = await bert();
  expect(() => loadAdapter(c, dir, { withHead: true })).toThrow(/withHead is set but .* holds no head/);
  expect(c.adapterNames()).toEqual([]);
  expect(() => saveAdapter(a, dir, 'task', { withHead: false, labels: ['a', 'b', 'c'] })).toThrow(/labels are recorded with the head/);
  a.addAdapter('headless');
  expect(() => saveAdapter(a, tmp(), 'headless', { withHead: true })).toThrow(/no head named 'headless'/);
  expect(() => saveAdapter(a, tmp(), 'nope')).toThrow(/no adapter named 'nope'/);
});

test('adapter_config.json and head_config.json have exactly AdapterHub\'s keys, written as Python writes them', async () => {
  const a = await trained('par_bn', true);
  const dir = tmp();
  saveAdapter(a, dir, 'task', { labels: ['neg', 'neu', 'pos'] });
  const text = fs.readFileSync(path.join(dir, ADAPTER_FILES.config), 'utf8');
  const j = JSON.parse(text);
  expect(Object.keys(j).sort()).toEqual([...HUB_TOP_KEYS, 'backbone'].sort());
  expect(Object.keys(j)).toEqual(Object.keys(j).sort()); // sort_keys=True
  expect(Object.keys(j.config).sort()).toEqual([...HUB_BN_FIELDS].sort());
  expect(j).toMatchObject({
    hidden_size: H, model_class: 'BertAdapterModel', model_name: a.modelName, model_type: 'bert', name: 'task',
    version: ADAPTERHUB_VERSION,
    backbone: { weight_hash: a.weightHash, num_layers: 2, hidden_size: H, model_type: 'bert' },
  });
  expect(j.version).toMatch(/^adapters\.\d+\.\d+\.\d+$/);
  expect(j.config.architecture).toBeUndefined(); // AdapterHub picks the config class by this key; bottleneck has none
  expect(j.config).toMatchObject({
    mh_adapter: false, output_adapter: true, reduction_factor: 2, non_linearity: 'relu',
    original_ln_before: false, original_ln_after: true, residual_before_ln: true, adapter_residual_before_ln: false,
    ln_before: false, ln_after: false, init_weights: 'mam_adapter', is_parallel: true, scaling: 4, use_gating: false,
    leave_out: [], dropout: 0, inv_adapter: null, inv_adapter_reduction_factor: null, cross_adapter: false, phm_layer: false,
  });
  // json.dump(indent=2, sort_keys=True), floats keep their decimal point (AdapterHub checks isinstance(scaling, float))
  expect(text.startsWith('{\n  "backbone": {\n    "hidden_size": 64,')).toBe(true);
  expect(text).toContain('\n    "scaling": 4.0,\n');
  expect(text).toContain('\n    "dropout": 0.0,\n');
  expect(text).toContain('\n    "phm_init_range": 0.0001,\n');
  expect(text).toContain('\n    "leave_out": [],\n');
  expect(text.endsWith('\n}')).toBe(true);

  const h = readJson(path.join(dir, ADAPTER_FILES.headConfig));
  expect(Object.keys(h).sort()).toEqual([...HUB_TOP_KEYS, 'save_id'].sort()); // save_id: ours, one per save
  expect(h.save_id).toBe(j.backbone.save_id);
  expect(h).toEqual({
    config: {
      head_type: 'classification', num_labels: 3, layers: 2, activation_function: 'tanh',
      label2id: { neg: 0, neu: 1, pos: 2 }, use_pooler: false, bias: true, dropout_prob: null,
    },
    hidden_size: H, model_class: 'BertAdapterModel', model_name: a.modelName, model_type: 'bert', name: 'task',
    version: ADAPTERHUB_VERSION, save_id: expect.stringMatching(/^[0-9a-f]{32}$/),
  });
  const b = await bert();
  expect(loadAdapter(b, dir).labels).toEqual(['neg', 'neu', 'pos']);
  expect(() => saveAdapter(a, tmp(), 'task', { labels: ['x'] })).toThrow(/labels must be an array of 3/);
  expect(() => saveAdapter(a, tmp(), 'task', { labels: ['x', 'y', 'x'] })).toThrow(/label 'x' appears twice/);
});

test('safetensors files hold AdapterHub names, F32, metadata {format: pt}', async () => {
  const a = await trained('double_seq_bn', true);
  const dir = tmp();
  saveAdapter(a, dir, 'task');
  const st = SafetensorsFile.open(path.join(dir, ADAPTER_FILES.weights));
  expect(st.metadata).toEqual({ format: 'pt', save_id: expect.stringMatching(/^[0-9a-f]{32}$/) });
  const names = st.names();
  expect(names).toHaveLength(16);
  expect(names).toEqual([...a.adapterParameters('task').keys()].sort());
  for (const i of [0, 1])
    for (const site of ['attention.output', 'output'])
      for (const p of ['adapter_down.0.weight', 'adapter_down.0.bias', 'adapter_up.weight', 'adapter_up.bias'])
        expect(names).toContain(`bert.encoder.layer.${i}.${site}.adapters.task.${p}`);
  for (const n of names) expect(st.info(n).dtype).toBe('F32');
  expect(st.info('bert.encoder.layer.0.output.adapters.task.adapter_down.0.weight').shape).toEqual([4, H]);
  const hs = SafetensorsFile.open(path.join(dir, ADAPTER_FILES.headWeights));
  expect(hs.metadata).toEqual({ format: 'pt', save_id: st.metadata.save_id });
  expect(hs.names()).toEqual(['heads.task.1.bias', 'heads.task.1.weight', 'heads.task.4.bias', 'heads.task.4.weight']);
  expect(hs.info('heads.task.4.weight').shape).toEqual([3, H]);

  // a bfloat16 backbone's adapter is stored as F32 and loads back exactly
  const m16 = await loadBackbone(BERT, { device: 'cpu', dtype: 'bfloat16' });
  m16.addAdapter('half', 'seq_bn');
  randomize(m16.adapterParameters('half'), 3);
  const d16 = tmp();
  saveAdapter(m16, d16, 'half');
  const s16 = SafetensorsFile.open(path.join(d16, ADAPTER_FILES.weights));
  for (const n of s16.names()) expect(s16.info(n).dtype).toBe('F32');
  const back = await loadBackbone(BERT, { device: 'cpu', dtype: 'bfloat16' });
  loadAdapter(back, d16);
  expectSameTensors(m16.adapterParameters('half'), back.adapterParameters('half'));
});

test('DistilBERT: attention_adapters / output_adapters names round-trip', async () => {
  const a = await loadBackbone(path.join(FIX, 'tiny-distilbert'), { device: 'cpu' });
  a.addAdapter('d', 'houlsby');
  randomize(a.adapterParameters('d'), 5);
  const dir = tmp();
  saveAdapter(a, dir, 'd');
  const names = SafetensorsFile.open(path.join(dir, ADAPTER_FILES.weights)).names();
  expect(names).toContain('distilbert.transformer.layer.0.attention_adapters.adapters.d.adapter_down.0.weight');
  expect(names).toContain('distilbert.transformer.layer.1.output_adapters.adapters.d.adapter_up.bias');
  expect(readJson(path.join(dir, ADAPTER_FILES.config)).model_class).toBe('DistilBertAdapterModel');
  const b = await loadBackbone(path.join(FIX, 'tiny-distilbert'), { device: 'cpu' });
  loadAdapter(b, dir, { loadAs: 'e' });
  expectSameTensors(a.adapterParameters('d'), b.adapterParameters('e'), (k) => k.replace('.adapters.d.', '.adapters.e.'));
  expect(outputs(b, 'e', null)).toEqual(outputs(a, 'd', null));
});

// ---- directories written the way AdapterHub writes them ----

/** adapter_config.json exactly as AdapterHub 1.2 writes it for SeqBnConfig on BertAdapterModel. */
const HUB_SEQ_BN_CONFIG = `{
  "config": {
    "adapter_residual_before_ln": false,
    "cross_adapter": false,
    "dropout": 0.0,
    "factorized_phm_W": true,
    "factorized_phm_rule": false,
    "hypercomplex_nonlinearity": "glorot-uniform",
    "init_weights": "bert",
    "init_weights_seed": null,
    "inv_adapter": null,
    "inv_adapter_reduction_factor": null,
    "is_parallel": false,
    "learn_phm": true,
    "leave_out": [],
    "ln_after": false,
    "ln_before": false,
    "mh_adapter": false,
    "non_linearity": "relu",
    "original_ln_after": true,
    "original_ln_before": true,
    "output_adapter": true,
    "phm_bias": true,
    "phm_c_init": "normal",
    "phm_dim": 4,
    "phm_init_range": 0.0001,
    "phm_layer": false,
    "phm_rank": 1,
    "reduction_factor": 16,
    "residual_before_ln": true,
    "scaling": 1.0,
    "shared_W_phm": false,
    "shared_phm_rule": true,
    "stochastic_depth": 0.0,
    "use_gating": false
  },
  "hidden_size": 64,
  "model_class": "BertAdapterModel",
  "model_name": "some-org/tiny-bert",
  "model_type": "bert",
  "name": "sst",
  "version": "adapters.1.2.0"
}`;

const HUB_HEAD_CONFIG = `{
  "config": {
    "activation_function": "tanh",
    "bias": true,
    "dropout_prob": null,
    "head_type": "classification",
    "label2id": {
      "negative": 0,
      "positive": 1
    },
    "layers": 2,
    "num_labels": 2,
    "use_pooler": false
  },
  "hidden_size": 64,
  "model_class": "BertAdapterModel",
  "model_name": "some-org/tiny-bert",
  "model_type": "bert",
  "name": "sst",
  "version": "adapters.1.2.0"
}`;

type F32 = { dtype: 'F32'; shape: number[]; data: Float32Array };
function f32(shape: number[], seed: number): F32 {
  const n = shape.reduce((a, b) => a * b, 1);
  return { dtype: 'F32', shape, data: Float32Array.from(rng(seed).array(n, 0.3)) };
}

/** seq_bn tensors for `layers` layers under `prefix` (AdapterHub's state-dict names). */
function seqBnTensors(prefix: string, name: string, layers: number[], site = 'adapters', bottleneck = 4): Record<string, F32> {
  const out: Record<string, F32> = {};
  let seed = 100;
  for (const i of layers) {
    const p = `${prefix}encoder.layer.${i}.output.${site}.${name}`;
    out[`${p}.adapter_down.0.weight`] = f32([bottleneck, H], seed++);
    out[`${p}.adapter_down.0.bias`] = f32([bottleneck], seed++);
    out[`${p}.adapter_up.weight`] = f32([H, bottleneck], seed++);
    out[`${p}.adapter_up.bias`] = f32([H], seed++);
  }
  return out;
}

function hubDir(opts: { config?: string; tensors?: Record<string, F32>; head?: boolean } = {}): { dir: string; tensors: Record<string, F32>; head: Record<string, F32> } {
  const dir = tmp();
  const tensors = opts.tensors ?? seqBnTensors('bert.', 'sst', [0, 1]);
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), opts.config ?? HUB_SEQ_BN_CONFIG);
  writeSafetensors(path.join(dir, 'adapter.safetensors'), tensors, { format: 'pt' });
  const head: Record<string, F32> = {
    'heads.sst.1.weight': f32([H, H], 1), 'heads.sst.1.bias': f32([H], 2), 'heads.sst.4.weight': f32([2, H], 3), 'heads.sst.4.bias': f32([2], 4),
  };
  if (opts.head !== false) {
    fs.writeFileSync(path.join(dir, 'head_config.json'), HUB_HEAD_CONFIG);
    writeSafetensors(path.join(dir, 'model_head.safetensors'), head, { format: 'pt' });
  }
  return { dir, tensors, head };
}

test('an AdapterHub-written directory loads (under loadAs) with its head and labels, and computes like the same weights set by hand', async () => {
  const { dir, tensors, head } = hubDir();
  const m = await bert();
  const r = loadAdapter(m, dir, { loadAs: 'mine' });
  expect(r).toEqual({ name: 'mine', warnings: [], labels: ['negative', 'positive'] });
  const cfg = m.adapterConfig('mine');
  expect(cfg).toMatchObject({ mh_adapter: false, output_adapter: true, reduction_factor: 16, non_linearity: 'relu', original_ln_before: true, scaling: 1 });
  for (const [k, t] of m.adapterParameters('mine'))
    expect(Array.from(t.toArray())).toEqual(Array.from(tensors[k.replace('.adapters.mine.', '.adapters.sst.')].data));
  for (const [k, t] of m.head('mine')!.parameters()) expect(Array.from(t.toArray())).toEqual(Array.from(head[k.replace('heads.mine.', 'heads.sst.')].data));
  expect(m.head('mine')!.numLabels).toBe(2);

  // the same numbers put in by hand give the same outputs
  m.addAdapter('byhand', 'seq_bn');
  for (const [k, t] of m.adapterParameters('byhand')) t.copyFrom(tensors[k.replace('.adapters.byhand.', '.adapters.sst.')].data);
  m.addClassificationHead('byhand', { numLabels: 2 });
  for (const [k, t] of m.head('byhand')!.parameters()) t.copyFrom(head[k.replace('heads.byhand.', 'heads.sst.')].data);
  expect(outputs(m, 'mine', 'mine')).toEqual(outputs(m, 'byhand', 'byhand'));

  // and the saved name is used without loadAs
  expect(loadAdapter(m, dir).name).toBe('sst');
});

test('AdapterHub files from a plain BertModel (adapters.init: no bert. prefix) and a config given by name', async () => {
  const cfg = JSON.parse(HUB_SEQ_BN_CONFIG);
  const { dir, tensors } = hubDir({
    config: JSON.stringify({ ...cfg, config: 'pfeiffer', model_class: 'BertModel' }),
    tensors: seqBnTensors('', 'sst', [0, 1]), head: false,
  });
  const m = await bert();
  expect(loadAdapter(m, dir)).toEqual({ name: 'sst', warnings: [] });
  const p = m.adapterParameters('sst');
  expect(Array.from(p.get('bert.encoder.layer.1.output.adapters.sst.adapter_up.bias')!.toArray()))
    .toEqual(Array.from(tensors['encoder.layer.1.output.adapters.sst.adapter_up.bias'].data));
});

test('older adapter-transformers layout: unversioned, legacy weight names, gelu meaning gelu_new, unused invertible adapter', async () => {
  const old = {
    config: {
      original_ln_before: true, original_ln_after: true, residual_before_ln: true, adapter_residual_before_ln: false,
      ln_before: false, ln_after: false, mh_adapter: false, output_adapter: true, non_linearity: 'gelu', reduction_factor: 16,
      invertible_adapter: { block_type: 'nice', non_linearity: 'relu', reduction_factor: 2 }, leave_out: [],
    },
    hidden_size: 64, model_name: 'bert-base-uncased', model_type: 'bert', name: 'old', type: 'text_task',
  };
  const { dir, tensors } = hubDir({ config: JSON.stringify(old), tensors: seqBnTensors('bert.', 'old', [0, 1], 'layer_text_task_adapters'), head: false });
  const m = await bert();
  const r = loadAdapter(m, dir, { loadAs: 'new' });
  expect(r.name).toBe('new');
  expect(r.warnings).toEqual([expect.stringMatching(/invertible adapter but the file holds none; ignored/)]);
  expect(m.adapterConfig('new')).toMatchObject({ non_linearity: 'gelu_new', original_ln_before: true, is_parallel: false, scaling: 1, init_weights: 'bert', dropout: 0 });
  expect(Array.from(m.adapterParameters('new').get('bert.encoder.layer.0.output.adapters.new.adapter_down.0.weight')!.toArray()))
    .toEqual(Array.from(tensors['bert.encoder.layer.0.output.layer_text_task_adapters.old.adapter_down.0.weight'].data));
});

// ---- refusals ----

describe('errors', () => {
  let dir: string;
  beforeAll(async () => {
    const a = await trained('seq_bn', true);
    dir = tmp();
    saveAdapter(a, dir, 'task');
  });

  /** A copy of the saved directory with adapter_config.json edited. */
  function edited(edit: (j: Record<string, any>) => void): string {
    const d = tmp();
    for (const f of fs.readdirSync(dir)) fs.copyFileSync(path.join(dir, f), path.join(d, f));
    const j = readJson(path.join(d, ADAPTER_FILES.config));
    edit(j);
    writeJson(path.join(d, ADAPTER_FILES.config), j);
    return d;
  }

  /** A copy of the saved directory with the adapter tensors rewritten. */
  function retensored(edit: (t: Record<string, F32>) => void): string {
    const d = tmp();
    for (const f of fs.readdirSync(dir)) fs.copyFileSync(path.join(dir, f), path.join(d, f));
    const st = SafetensorsFile.open(path.join(dir, ADAPTER_FILES.weights));
    const t: Record<string, F32> = {};
    for (const n of st.names()) t[n] = { dtype: 'F32', shape: st.info(n).shape, data: st.getFloat32(n) };
    edit(t);
    writeSafetensors(path.join(d, ADAPTER_FILES.weights), t, { format: 'pt' });
    return d;
  }

  async function expectRefused(d: string, re: RegExp, opts = {}) {
    const m = await bert();
    expect(() => loadAdapter(m, d, opts)).toThrow(re);
    expect(m.adapterNames()).toEqual([]);
    expect(m.head('task')).toBeUndefined();
    m.dispose();
  }

  test('a different hidden size, model type or layer count says what differs', async () => {
    await expectRefused(edited((j) => { j.hidden_size = 768; j.backbone.hidden_size = 768; }),
      /adapter 'task' was trained on bert with hidden size 768 and 2 layers, this backbone is bert with hidden size 64 and 2 layers/);
    await expectRefused(edited((j) => { j.model_type = 'roberta'; j.backbone.model_type = 'roberta'; }),
      /adapter 'task' was trained on roberta with hidden size 64 and 2 layers, this backbone is bert with hidden size 64/);
    await expectRefused(edited((j) => { j.backbone.num_layers = 12; }),
      /adapter 'task' was trained on bert with hidden size 64 and 12 layers, this backbone is bert with hidden size 64 and 2 layers/);
    // AdapterHub's own files: type and hidden size from the top level, layers from the tensors
    const hub = JSON.parse(HUB_SEQ_BN_CONFIG);
    await expectRefused(hubDir({ config: JSON.stringify({ ...hub, hidden_size: 768 }) }).dir,
      /adapter 'sst' was trained on bert with hidden size 768, this backbone is bert with hidden size 64/);
    await expectRefused(hubDir({ config: JSON.stringify({ ...hub, model_type: 'roberta' }) }).dir,
      /adapter 'sst' was trained on roberta with hidden size 64, this backbone is bert/);
    await expectRefused(hubDir({ tensors: seqBnTensors('bert.', 'sst', [0, 1, 2, 11]) }).dir,
      /adapter 'sst' was trained on bert with hidden size 64 with at least 12 layers, this backbone is bert with hidden size 64 and 2 layers/);
  });

  test('a missing tensor, a wrong shape, an unexpected tensor (strict) are listed; nothing stays loaded', async () => {
    const gone = 'bert.encoder.layer.1.output.adapters.task.adapter_up.bias';
    await expectRefused(retensored((t) => delete t[gone]), new RegExp(`missing 1 tensor\\(s\\): ${gone.replace(/\./g, '\\.')}`));
    await expectRefused(retensored((t) => { t['bert.encoder.layer.0.output.adapters.task.adapter_down.0.weight'] = f32([5, H], 1); }),
      /tensor 'bert\.encoder\.layer\.0\.output\.adapters\.task\.adapter_down\.0\.weight' has shape \[5, 64\], but its config \(reduction_factor 16, hidden 64\) implies \[4, 64\]/);
    const extra = retensored((t) => { t['bert.encoder.layer.0.output.adapters.task.adapter_norm_after.weight'] = f32([H], 1); });
    await expectRefused(extra, /1 unexpected tensor\(s\) \(pass strict: false to ignore them\): bert\.encoder\.layer\.0\.output\.adapters\.task\.adapter_norm_after\.weight/);
    const m = await bert();
    const r = loadAdapter(m, extra, { strict: false });
    expect(r.warnings).toEqual([expect.stringMatching(/ignored 1 unexpected tensor\(s\): .*adapter_norm_after\.weight/)]);
    expect(m.adapterNames()).toEqual(['task']);
    // a broken head takes the adapter with it
    const d = tmp();
    for (const f of fs.readdirSync(dir)) fs.copyFileSync(path.join(dir, f), path.join(d, f));
    writeSafetensors(path.join(d, ADAPTER_FILES.headWeights), { 'heads.task.1.weight': f32([H, H], 1) }, { format: 'pt' });
    await expectRefused(d, /missing 3 tensor\(s\): heads\.task\.1\.bias, heads\.task\.4\.weight, heads\.task\.4\.bias/);
  });

  test('unsupported configs are refused', async () => {
    await expectRefused(edited((j) => { j.config.ln_after = true; }), /ln_before, ln_after, use_gating and adapter_residual_before_ln are not supported/);
    await expectRefused(edited((j) => { j.config.phm_layer = true; }), /PHM \(Compacter\) adapters are not supported/);
    await expectRefused(edited((j) => { j.config.residual_before_ln = 'post_add'; }), /residual_before_ln="post_add" is not supported/);
    await expectRefused(edited((j) => { j.config = { architecture: 'lora', r: 8 }; }), /architecture is 'lora'; only bottleneck/);
    await expectRefused(edited((j) => { delete j.config.mh_adapter; }), /lacks the required field mh_adapter/);
    const head = tmp();
    for (const f of fs.readdirSync(dir)) fs.copyFileSync(path.join(dir, f), path.join(head, f));
    const hc = readJson(path.join(head, ADAPTER_FILES.headConfig));
    writeJson(path.join(head, ADAPTER_FILES.headConfig), { ...hc, config: { ...hc.config, use_pooler: true } });
    await expectRefused(head, /use_pooler=true is not supported/);
  });

  test('pickle-only directories are refused with a way to convert them', async () => {
    const d = tmp();
    fs.copyFileSync(path.join(dir, ADAPTER_FILES.config), path.join(d, ADAPTER_FILES.config));
    fs.writeFileSync(path.join(d, 'pytorch_adapter.bin'), 'not really');
    await expectRefused(d, /pytorch_adapter\.bin.*Pickle files can run arbitrary code.*refused[\s\S]*save_file[\s\S]*adapter\.safetensors[\s\S]*use_safetensors=True/);
    const h = tmp();
    for (const f of [ADAPTER_FILES.config, ADAPTER_FILES.weights, ADAPTER_FILES.headConfig]) fs.copyFileSync(path.join(dir, f), path.join(h, f));
    fs.writeFileSync(path.join(h, 'pytorch_model_head.bin'), 'not really');
    await expectRefused(h, /holds only the pickle file pytorch_model_head\.bin, no model_head\.safetensors\. Pickle files/);
  });

  test('missing directory, missing config, name clash', async () => {
    const m = await bert();
    expect(() => loadAdapter(m, path.join(dir, 'nope'))).toThrow(/loadAdapter: directory '.*nope' does not exist/);
    expect(() => loadAdapter(m, tmp())).toThrow(/has no adapter_config\.json/);
    loadAdapter(m, dir);
    expect(() => loadAdapter(m, dir)).toThrow(/an adapter named 'task' already exists/);
    expect(() => loadAdapter(m, dir, { withHead: false, loadAs: 'bad name' })).toThrow(/name must be letters/);
    expect(m.adapterNames()).toEqual(['task']);
    expect(() => loadHead(m, path.join(dir, 'nope'))).toThrow(/loadHead: directory .* does not exist/);
  });

  test('a backbone with other weights gives a warning (console.warn once) and still loads', async () => {
    const d = edited((j) => { j.backbone.weight_hash = 'f'.repeat(64); });
    const spy = jest.spyOn(console, 'warn').mockImplementation(() => {});
    try {
      const m = await bert();
      const r1 = loadAdapter(m, d);
      expect(r1.warnings).toEqual([expect.stringMatching(/saved from a backbone with different weights \(weight hash ffffffffffff…, this backbone [0-9a-f]{12}…/)]);
      expect(m.adapterNames()).toEqual(['task']);
      const r2 = loadAdapter(m, d, { loadAs: 'twice' });
      expect(r2.warnings).toHaveLength(1);
      expect(spy).toHaveBeenCalledTimes(1);
    } finally {
      spy.mockRestore();
    }
  });
});

test('saveHead / loadHead alone, and the Backbone methods', async () => {
  const a = await trained('seq_bn', true);
  const dir = tmp();
  a.saveHead(dir, 'task', { labels: [0, 1, 2] });
  expect(fs.readdirSync(dir).sort()).toEqual([ADAPTER_FILES.headConfig, ADAPTER_FILES.headWeights]);
  const b = await bert();
  expect(b.loadHead(dir, { loadAs: 'h' })).toEqual({ name: 'h', warnings: [], labels: ['0', '1', '2'] });
  expectSameTensors(a.head('task')!.parameters(), b.head('h')!.parameters(), (k) => k.replace('heads.task.', 'heads.h.'));
  expect(() => saveHead(a, tmp(), 'none')).toThrow(/no head named 'none'/);
  // a head with its own dropout records it as dropout_prob
  a.addClassificationHead('drop', { numLabels: 2, dropout: 0.25 });
  const d2 = tmp();
  saveHead(a, d2, 'drop');
  expect(fs.readFileSync(path.join(d2, ADAPTER_FILES.headConfig), 'utf8')).toContain('"dropout_prob": 0.25');
  loadHead(b, d2);
  expect(b.head('drop')!.dropout).toBe(0.25);
});

test('writes are atomic: no temporary files remain, also after a failed write; overwriting works', async () => {
  const a = await trained('seq_bn', true);
  const dir = tmp();
  saveAdapter(a, dir, 'task');
  randomize(a.adapterParameters('task'), 99);
  saveAdapter(a, dir, 'task'); // overwrite in place
  expect(fs.readdirSync(dir).sort()).toEqual([ADAPTER_FILES.config, ADAPTER_FILES.weights, ADAPTER_FILES.headConfig, ADAPTER_FILES.headWeights].sort());
  const b = await bert();
  loadAdapter(b, dir);
  expectSameTensors(a.adapterParameters('task'), b.adapterParameters('task'));

  const bad = tmp();
  fs.mkdirSync(path.join(bad, ADAPTER_FILES.config)); // the final rename cannot replace a directory
  expect(() => saveAdapter(a, bad, 'task')).toThrow(/cannot write .*adapter_config\.json/);
  expect(fs.readdirSync(bad).filter((f) => f.includes('.tmp-'))).toEqual([]);
  const bad2 = tmp();
  fs.mkdirSync(path.join(bad2, ADAPTER_FILES.weights));
  expect(() => saveAdapter(a, bad2, 'task')).toThrow(/adapter\.safetensors/);
  expect(fs.readdirSync(bad2)).toEqual([ADAPTER_FILES.weights]);
});
