// `npm run demo`: one frozen backbone, one small adapter per task, trained here in about a
// minute on two CPU cores (or on the GPU when present), then queries routed to their task's
// adapter. Prints accuracy before/after, parameter counts, file sizes and time per step.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { buildInfo, defaultDevice } from '../backend';
import { loadBackbone } from '../backbone/load';
import { LabelMap } from '../train/data';
import { softmaxRows } from '../train/metrics';
import { Tokenizer } from '../train/tokenizer';
import { evaluate, train } from '../train/trainer';
import { DEMO_QUERIES, demoTasks } from './data';
import { writeDemoBackbone } from './backbone';

export interface DemoOptions {
  device?: string;
  outDir?: string;
  epochs?: number;
  perIntent?: number;
  log?: (line: string) => void;
}

export interface DemoReport {
  device: string;
  tasks: { name: string; before: number; after: number; steps: number; msPerStep: number; adapterBytes: number; headBytes: number }[];
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

function fileBytes(dir: string, files: string[]): number {
  return files.reduce((s, f) => s + (fs.existsSync(path.join(dir, f)) ? fs.statSync(path.join(dir, f)).size : 0), 0);
}

export async function runDemo(o: DemoOptions = {}): Promise<DemoReport> {
  const log = o.log ?? ((l: string) => console.log(l));
  const t0 = Date.now();
  const device = o.device ?? defaultDevice();
  const tasks = demoTasks(o.perIntent ?? 60);
  const out = o.outDir ?? path.join(os.tmpdir(), 'fused-adapters-demo');
  const backboneDir = writeDemoBackbone(path.join(out, 'backbone'), tasks.flatMap((t) => [...t.train, ...t.eval].map((e) => e.text)));
  const model = await loadBackbone(backboneDir, { device, dtype: device === 'cpu' ? 'float32' : 'bfloat16', seed: 11 });
  const tokenizer = await Tokenizer.fromDir(backboneDir);
  const info = buildInfo();
  log(`fused-adapters ${info.version} demo on ${device}${device === 'cpu' && !info.cudaUsable ? ` (CUDA not usable: ${info.cudaReason})` : ''}`);
  log(`backbone: ${model.modelName} — a small BERT (${model.config.numLayers} layers, hidden ${model.config.hiddenSize}) with RANDOM weights generated`);
  log('  deterministically, not a pre-trained model: the adapters learn on top of frozen random features.');
  log(`  ${model.parameterCount().toLocaleString('en-US')} frozen parameters; ${tasks.length} tasks, one seq_bn adapter + head each\n`);

  const report: DemoReport = { device, tasks: [], trainableParams: 0, backboneParams: model.parameterCount(), backboneBytes: fs.statSync(path.join(backboneDir, 'model.safetensors')).size, routed: [], routerAccuracy: 0, seconds: 0 };
  const labelMaps = new Map<string, LabelMap>();
  for (const task of tasks) {
    const labels = LabelMap.fromExamples(task.train);
    labelMaps.set(task.name, labels);
    model.addAdapter(task.name, { config: 'seq_bn', reductionFactor: 16 }, { seed: 100 + report.tasks.length });
    model.addClassificationHead(task.name, { numLabels: labels.size }, { seed: 200 + report.tasks.length });
    model.setActiveAdapter(task.name);
    model.setActiveHead(task.name);
    const before = await evaluate(model, tokenizer, task.eval, labels);
    const res = await train({
      model, adapter: task.name, head: task.name, tokenizer, trainData: task.train, evalData: task.eval, labels,
      epochs: o.epochs ?? 6, batchSize: 16, lr: 3e-3, warmup: 0.1, seed: 1 + report.tasks.length, progress: false, maxLength: 32,
    });
    const after = res.final ?? (await evaluate(model, tokenizer, task.eval, labels));
    const dir = path.join(out, 'adapters', task.name);
    model.saveAdapter(dir, task.name, { labels: labels.labels });
    const adapterBytes = fileBytes(dir, ['adapter.safetensors', 'adapter_config.json']);
    const headBytes = fileBytes(dir, ['model_head.safetensors', 'head_config.json']);
    const entry = { name: task.name, before: before.accuracy, after: after.accuracy, steps: res.steps, msPerStep: res.secondsPerStep * 1000, adapterBytes, headBytes };
    report.tasks.push(entry);
    log(`${task.name.padEnd(13)} (${task.description}): accuracy ${(100 * before.accuracy).toFixed(1)}% → ${(100 * after.accuracy).toFixed(1)}%` +
      `  [${res.steps} steps, ${entry.msPerStep.toFixed(1)} ms/step, ${Math.round(res.tokensPerSecond)} tokens/s]`);
  }

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

  const perAdapter = report.tasks[0]?.adapterBytes ?? 0;
  report.trainableParams = totalTrainable(model, tasks[0].name);
  log(`\ntrainable per task (adapter + head): ${report.trainableParams.toLocaleString('en-US')} parameters` +
    ` = ${((100 * report.trainableParams) / report.backboneParams).toFixed(2)}% of the ${report.backboneParams.toLocaleString('en-US')} frozen ones`);
  log(`files per task: adapter ${kb(perAdapter)} + head ${kb(report.tasks[0]?.headBytes ?? 0)} vs backbone ${kb(report.backboneBytes)}` +
    ` (the adapter is ${(report.backboneBytes / Math.max(perAdapter, 1)).toFixed(0)}× smaller); saved under ${path.join(out, 'adapters')}`);
  report.seconds = (Date.now() - t0) / 1000;
  log(`done in ${report.seconds.toFixed(1)} s`);
  model.dispose();
  return report;
}

function sumHeads(model: import('../backbone/model').Backbone, name: string): number {
  const h = model.head(name);
  let n = 0;
  if (h) for (const t of h.parameters().values()) n += t.size;
  return n;
}

function totalTrainable(model: import('../backbone/model').Backbone, name: string): number {
  let n = 0;
  for (const t of model.adapterParameters(name).values()) n += t.size;
  return n + sumHeads(model, name);
}
