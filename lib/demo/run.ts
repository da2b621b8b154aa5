// `npm run demo`: one frozen backbone, one small adapter per task, trained here in about a
// minute on two CPU cores (or on the GPU when present), then queries routed to their task's
// adapter. Prints accuracy before/after, parameter counts, file sizes and time per step.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { buildInfo, defaultDevice } from '../backend';
import { loadBackbone } from '../models/bert/load';
import { LabelMap } from '../train/data';
import { softmaxRows } from '../train/metrics';
import { Tokenizer } from '../train/tokenizer';
import { evaluate, train } from '../train/trainer';
import type { Backbone } from '../models/bert/model';
import { hubCacheDir, resolveModelDir } from '../io/hub';
import { DEMO_QUERIES, DemoTask, demoMixedTask, demoParaphrases, demoTasks } from './data';
import { Fuse } from '../adapted/composition';
import { writeDemoBackbone } from './backbone';

export interface DemoOptions {
  device?: string;
  outDir?: string;
  epochs?: number;
  perIntent?: number;
  log?: (line: string) => void;
  /**
   * The backbone: a local directory or a hub id; default all-MiniLM-L6-v2 from the Hugging Face
   * cache, else downloaded when online, else the built-in random-weight model. false: the random one.
   */
  model?: string | false;
  /** With a pre-trained backbone, also train on the random one and compare (default true). */
  compareRandom?: boolean;
}

export const DEMO_PRETRAINED = 'sentence-transformers/all-MiniLM-L6-v2';

export interface DemoTaskReport {
  name: string; before: number; after: number; paraphrases: number; steps: number; msPerStep: number; adapterBytes: number; headBytes: number;
}

export interface DemoFusionReport {
  steps: number;
  fusionAccuracy: number;
  singleAccuracy: number;
  fusionParaphrases: number;
  singleParaphrases: number;
  fusionMsPerStep: number;
  singleMsPerStep: number;
}

export interface DemoReport {
  device: string;
  backbone: { kind: 'pretrained' | 'random'; name: string; source: string };
  tasks: DemoTaskReport[];
  /** The mixed fourth task: a fusion over the three task adapters against one adapter alone, same steps. */
  fusion?: DemoFusionReport;
  /** The same tasks trained on the random-weight backbone, when compared. */
  randomBaseline?: { name: string; after: number; paraphrases: number }[];
  trainableParams: number;
  backboneParams: number;
  backboneBytes: number;
  routed: { task: string; routedTask: string; text: string; label: string | number; probability: number }[];
  routerAccuracy: number;
  seconds: number;
}

function kb(n: number): string {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`;
}

function pct(x: number): string {
  return `${(100 * x).toFixed(1)}%`;
}

function fileBytes(dir: string, files: string[]): number {
  return files.reduce((s, f) => s + (fs.existsSync(path.join(dir, f)) ? fs.statSync(path.join(dir, f)).size : 0), 0);
}

const MODEL_FILES = { required: ['config.json', 'tokenizer.json'], oneOf: [['model.safetensors', 'model.safetensors.index.json']] };

/** Where the pre-trained backbone comes from, or why there is none. */
async function findPretrained(o: DemoOptions): Promise<{ dir: string; source: string } | { dir: null; reason: string }> {
  if (o.model === false) return { dir: null, reason: 'the random backbone was asked for' };
  if (o.model) return { dir: await resolveModelDir(o.model, MODEL_FILES), source: `--model ${o.model}` };
  try {
    return { dir: await resolveModelDir(DEMO_PRETRAINED, MODEL_FILES, { offline: true }), source: `the Hugging Face cache (${hubCacheDir()})` };
  } catch (cacheErr) {
    if (isOffline()) return { dir: null, reason: `${DEMO_PRETRAINED} is not in the Hugging Face cache and HF_HUB_OFFLINE is set` };
    try {
      return { dir: await resolveModelDir(DEMO_PRETRAINED, MODEL_FILES, {}), source: 'a download from the Hugging Face hub' };
    } catch (e) {
      return { dir: null, reason: `${DEMO_PRETRAINED} is not cached and could not be downloaded (${(e as Error).message.split('\n')[0]})` };
    }
  }
}

function isOffline(): boolean {
  return /^(1|on|yes|true)$/i.test(process.env.HF_HUB_OFFLINE ?? '');
}

/** Trains one seq_bn adapter + head per task; reports accuracy on held-out examples and on paraphrases. */
async function trainTasks(
  model: Backbone, tokenizer: Tokenizer, tasks: DemoTask[], o: DemoOptions, log: (l: string) => void, saveUnder?: string,
): Promise<{ reports: DemoTaskReport[]; labelMaps: Map<string, LabelMap> }> {
  const reports: DemoTaskReport[] = [];
  const labelMaps = new Map<string, LabelMap>();
  for (const task of tasks) {
    const labels = LabelMap.fromExamples(task.train);
    labelMaps.set(task.name, labels);
    model.addAdapter(task.name, { config: 'seq_bn', reductionFactor: 16 }, { seed: 100 + reports.length });
    model.addClassificationHead(task.name, { numLabels: labels.size }, { seed: 200 + reports.length });
    model.setActiveAdapter(task.name);
    model.setActiveHead(task.name);
    const before = await evaluate(model, tokenizer, task.eval, labels);
    const res = await train({
      model, adapter: task.name, head: task.name, tokenizer, trainData: task.train, evalData: task.eval, labels,
      epochs: o.epochs ?? 6, batchSize: 16, lr: 3e-3, warmup: 0.1, seed: 1 + reports.length, progress: false, maxLength: 32,
    });
    const after = res.final ?? (await evaluate(model, tokenizer, task.eval, labels));
    const para = await evaluate(model, tokenizer, demoParaphrases(task.name), labels);
    let adapterBytes = 0;
    let headBytes = 0;
    if (saveUnder) {
      const dir = path.join(saveUnder, task.name);
      model.saveAdapter(dir, task.name, { labels: labels.labels });
      adapterBytes = fileBytes(dir, ['adapter.safetensors', 'adapter_config.json']);
      headBytes = fileBytes(dir, ['model_head.safetensors', 'head_config.json']);
    }
    const entry = { name: task.name, before: before.accuracy, after: after.accuracy, paraphrases: para.accuracy, steps: res.steps, msPerStep: res.secondsPerStep * 1000, adapterBytes, headBytes };
    reports.push(entry);
    log(`${task.name.padEnd(13)} (${task.description}): accuracy ${pct(before.accuracy)} → ${pct(after.accuracy)}, ` +
      `paraphrases ${pct(para.accuracy)}  [${res.steps} steps, ${entry.msPerStep.toFixed(1)} ms/step, ${Math.round(res.tokensPerSecond)} tokens/s]`);
  }
  return { reports, labelMaps };
}

async function randomBackbone(out: string, tasks: DemoTask[], device: string): Promise<{ model: Backbone; tokenizer: Tokenizer; dir: string }> {
  const texts = tasks.flatMap((t) => [...t.train, ...t.eval, ...demoParaphrases(t.name)].map((e) => e.text));
  const dir = writeDemoBackbone(path.join(out, 'backbone'), texts);
  const model = await loadBackbone(dir, { device, dtype: device === 'cpu' ? 'float32' : 'bfloat16', seed: 11 });
  return { model, tokenizer: await Tokenizer.fromDir(dir), dir };
}

export async function runDemo(o: DemoOptions = {}): Promise<DemoReport> {
  const log = o.log ?? ((l: string) => console.log(l));
  const t0 = Date.now();
  const device = o.device ?? defaultDevice();
  const tasks = demoTasks(o.perIntent ?? 60);
  const out = o.outDir ?? path.join(os.tmpdir(), 'fused-adapters-demo');
  const info = buildInfo();
  log(`fused-adapters ${info.version} demo on ${device}${device === 'cpu' && !info.cudaUsable ? ` (CUDA not usable: ${info.cudaReason})` : ''}`);

  const pre = await findPretrained(o);
  let model: Backbone;
  let tokenizer: Tokenizer;
  let backboneDir: string;
  let backbone: DemoReport['backbone'];
  if (pre.dir) {
    backboneDir = pre.dir;
    model = await loadBackbone(pre.dir, { device, dtype: device === 'cpu' ? 'float32' : 'bfloat16', seed: 11 });
    tokenizer = await Tokenizer.fromDir(pre.dir);
    backbone = { kind: 'pretrained', name: o.model || DEMO_PRETRAINED, source: pre.source };
    log(`backbone: ${backbone.name} — PRE-TRAINED weights (${model.config.numLayers} layers, hidden ${model.config.hiddenSize}), from ${pre.source}`);
  } else {
    const r = await randomBackbone(out, tasks, device);
    ({ model, tokenizer } = r);
    backboneDir = r.dir;
    backbone = { kind: 'random', name: model.modelName, source: 'generated here' };
    log(`backbone: ${model.modelName} — a small BERT (${model.config.numLayers} layers, hidden ${model.config.hiddenSize}) with RANDOM weights generated`);
    log(`  deterministically, not a pre-trained model (${'reason' in pre ? pre.reason : ''}): the adapters learn on top of frozen random features.`);
  }
  log(`  ${model.parameterCount().toLocaleString('en-US')} frozen parameters; ${tasks.length} tasks, one seq_bn adapter + head each\n`);

  const report: DemoReport = { device, backbone, tasks: [], trainableParams: 0, backboneParams: model.parameterCount(), backboneBytes: weightBytes(backboneDir), routed: [], routerAccuracy: 0, seconds: 0 };
  const trained = await trainTasks(model, tokenizer, tasks, o, log, path.join(out, 'adapters'));
  report.tasks = trained.reports;
  const labelMaps = trained.labelMaps;

  // A router: one more adapter + head on the same frozen backbone, trained to tell the tasks apart.
  const routerLabels = LabelMap.fromList(tasks.map((t) => t.name));
  const routerData = (pick: (t: (typeof tasks)[number]) => { text: string }[]) =>
    tasks.flatMap((t) => pick(t).map((e) => ({ text: e.text, label: t.name })));
  model.addAdapter('router', { config: 'seq_bn', reductionFactor: 16 }, { seed: 300 });
  model.addClassificationHead('router', { numLabels: routerLabels.size }, { seed: 301 });
  const routerRes = await train({
    model, adapter: 'router', tokenizer, trainData: routerData((t) => t.train.filter((_, i) => i % 2 === 0)), evalData: routerData((t) => t.eval),
    labels: routerLabels, epochs: o.epochs ?? 6, batchSize: 16, lr: 3e-3, warmup: 0.1, seed: 9, progress: false, maxLength: 32,
  });
  report.routerAccuracy = routerRes.final?.accuracy ?? 0;
  log(`router        (which task a query belongs to): accuracy ${(100 * report.routerAccuracy).toFixed(1)}%  [${routerRes.steps} steps]`);

  // Queries without a task: the router picks one per query, then all queries go through their
  // chosen task's adapter and head in one batch (one batched kernel per adapter site).
  log("\nrouting queries (router, then each row through its task's adapter, in one batch):");
  const enc = tokenizer.encodeBatch(DEMO_QUERIES.map((q) => q.text));
  const inputs = { inputIds: enc.inputIds, attentionMask: enc.attentionMask, tokenTypeIds: enc.tokenTypeIds, shape: enc.shape };
  const argmax = (logits: Float32Array) => {
    const probs = softmaxRows(logits, logits.length)[0];
    const best = probs.indexOf(Math.max(...probs));
    return { best, p: probs[best] };
  };
  const routed = model.forward(inputs, { adapters: DEMO_QUERIES.map(() => 'router') });
  const chosen = routed.rowLogits!.map((l) => String(routerLabels.name(argmax(l!).best)));
  routed.dispose();
  const r = model.forward(inputs, { adapters: chosen });
  DEMO_QUERIES.forEach((q, i) => {
    const { best, p } = argmax(r.rowLogits![i]!);
    const label = labelMaps.get(chosen[i])!.name(best);
    report.routed.push({ task: q.task, routedTask: chosen[i], text: q.text, label, probability: p });
    log(`  "${q.text}" → ${chosen[i]}${chosen[i] === q.task ? '' : ` (expected ${q.task})`} → ${label} (${(100 * p).toFixed(0)}%)`);
  });
  r.dispose();

  report.fusion = await fusionVersusSingle(model, tokenizer, tasks.map((t) => t.name), o, log);

  const perAdapter = report.tasks[0]?.adapterBytes ?? 0;
  report.trainableParams = totalTrainable(model, tasks[0].name);
  log(`\ntrainable per task (adapter + head): ${report.trainableParams.toLocaleString('en-US')} parameters` +
    ` = ${((100 * report.trainableParams) / report.backboneParams).toFixed(2)}% of the ${report.backboneParams.toLocaleString('en-US')} frozen ones`);
  log(`files per task: adapter ${kb(perAdapter)} + head ${kb(report.tasks[0]?.headBytes ?? 0)} vs backbone ${kb(report.backboneBytes)}` +
    ` (the adapter is ${(report.backboneBytes / Math.max(perAdapter, 1)).toFixed(0)}× smaller); saved under ${path.join(out, 'adapters')}`);
  if (backbone.kind === 'pretrained' && o.compareRandom !== false) {
    log('\nthe same tasks on the random-weight backbone, for comparison:');
    const r = await randomBackbone(out, tasks, device);
    const base = await trainTasks(r.model, r.tokenizer, tasks, o, log);
    r.model.dispose();
    report.randomBaseline = base.reports.map((t) => ({ name: t.name, after: t.after, paraphrases: t.paraphrases }));
    log('\nheld-out paraphrases (no training template), accuracy:');
    log(`  ${'task'.padEnd(14)}${'pre-trained'.padStart(12)}${'random'.padStart(10)}`);
    report.tasks.forEach((t, i) => log(`  ${t.name.padEnd(14)}${pct(t.paraphrases).padStart(12)}${pct(base.reports[i].paraphrases).padStart(10)}`));
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    log(`  ${'mean'.padEnd(14)}${pct(mean(report.tasks.map((t) => t.paraphrases))).padStart(12)}${pct(mean(base.reports.map((t) => t.paraphrases))).padStart(10)}`);
  }
  report.seconds = (Date.now() - t0) / 1000;
  log(`done in ${report.seconds.toFixed(1)} s`);
  model.dispose();
  return report;
}

/**
 * The fourth, mixed task (demoMixedTask) two ways at the same step budget: an AdapterFusion over the three
 * trained task adapters (frozen; the fusion and a head train), and one fresh adapter + head alone.
 */
async function fusionVersusSingle(model: Backbone, tokenizer: Tokenizer, taskNames: string[], o: DemoOptions, log: (l: string) => void): Promise<DemoFusionReport> {
  const mixed = demoMixedTask(3); // three examples per intent: what the three task adapters know has to carry it
  const labels = LabelMap.fromExamples(mixed.train);
  const budget = { tokenizer, trainData: mixed.train, evalData: mixed.eval, labels, epochs: o.epochs ?? 6, batchSize: 16, lr: 3e-3, warmup: 0.1, progress: false, maxLength: 32 };
  log(`
a fourth task that mixes the three (${mixed.description}), ${mixed.train.length} training examples:`);
  const fuse = Fuse(...taskNames);
  model.addFusion(taskNames, 'dynamic', { seed: 401 });
  model.addClassificationHead('mixed_fusion', { numLabels: labels.size }, { seed: 402 });
  const f = await train({ ...budget, model, fusion: fuse, head: 'mixed_fusion', seed: 21 });
  const fPara = await evaluate(model, tokenizer, mixed.paraphrases, labels);
  model.addAdapter('mixed_single', { config: 'seq_bn', reductionFactor: 16 }, { seed: 403 });
  model.addClassificationHead('mixed_single', { numLabels: labels.size }, { seed: 404 });
  const one = await train({ ...budget, model, adapter: 'mixed_single', head: 'mixed_single', seed: 21 });
  const oPara = await evaluate(model, tokenizer, mixed.paraphrases, labels);
  const r: DemoFusionReport = {
    steps: f.steps, fusionAccuracy: f.final?.accuracy ?? 0, singleAccuracy: one.final?.accuracy ?? 0,
    fusionParaphrases: fPara.accuracy, singleParaphrases: oPara.accuracy, fusionMsPerStep: f.secondsPerStep * 1000, singleMsPerStep: one.secondsPerStep * 1000,
  };
  log(`  AdapterFusion over ${taskNames.join(', ')}: accuracy ${pct(r.fusionAccuracy)}, paraphrases ${pct(r.fusionParaphrases)}  [${f.steps} steps, ${r.fusionMsPerStep.toFixed(1)} ms/step]`);
  log(`  one adapter trained on it alone:      accuracy ${pct(r.singleAccuracy)}, paraphrases ${pct(r.singleParaphrases)}  [${one.steps} steps, ${r.singleMsPerStep.toFixed(1)} ms/step]`);
  return r;
}

/** Bytes of the backbone's weight files (one file or shards). */
function weightBytes(dir: string): number {
  return fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors')).reduce((n, f) => n + fs.statSync(path.join(dir, f)).size, 0);
}

function sumHeads(model: import('../models/bert/model').Backbone, name: string): number {
  const h = model.head(name);
  let n = 0;
  if (h) for (const t of h.parameters().values()) n += t.size;
  return n;
}

function totalTrainable(model: import('../models/bert/model').Backbone, name: string): number {
  let n = 0;
  for (const t of model.adapterParameters(name).values()) n += t.size;
  return n + sumHeads(model, name);
}
