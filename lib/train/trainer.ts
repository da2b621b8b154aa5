// The training loop: forward, loss, backward, clip, AdamW step on the adapter and head;
// evaluation, best-adapter tracking, early stopping, a progress bar, a JSONL log, and
// checkpoints that resume exactly where training stopped.
import * as fs from 'fs';
import { SingleBar, Presets } from 'cli-progress';
import type { Backbone } from '../models/bert/model';
import { parseComposition } from '../adapted/composition';
import type { Composition } from '../adapted/composition';
import { AdamW } from '../optim/adamw';
import { clipGradNorm, globalGradNorm } from '../optim/clip';
import { LRSchedule, ScheduleKind } from '../optim/schedule';
import { scale } from '../ops';
import type { Tensor } from '../tensor';
import { hasCheckpoint, loadCheckpoint, optimizerCheckpoint, ownsCheckpointEntry, restoreOptimizer, saveCheckpoint } from './checkpoint';
import { checkOutputPaths } from '../outputPaths';
import { configName } from '../methods/bottleneck/config';
import { firstNonFinite, NonFiniteError, nonFiniteError } from '../core/finite';
import { Batch, DataLoader, Example, LabelMap, readExamples, sourceOf } from './data';
import { accuracy, argmaxRows, macroF1, Metrics } from './metrics';
import { Tokenizer } from './tokenizer';

export interface TrainOptions {
  model: Backbone;
  /** The adapter to train; when the model has none by that name and it is a config name
   *  (seq_bn, double_seq_bn, par_bn or an alias), an adapter of that config is added. With
   *  `fusion`, it only names the head (default: the fusion's last adapter). */
  adapter?: string;
  /**
   * Train an AdapterFusion instead (AdapterHub's train_adapter_fusion): a composition holding Fuse
   * blocks whose fusions exist (addFusion / loadFusion); only the fusion layers and the head train, and
   * each step adds the fusion's value regularisation when its config asks for it.
   */
  fusion?: Composition;
  /** The head to train (default: the adapter's name); added when missing. */
  head?: string;
  /** Default: the tokenizer.json of the directory the model was loaded from. */
  tokenizer?: Tokenizer;
  /** Examples, or a .jsonl / .csv file of them. */
  trainData: Example[] | string;
  evalData?: Example[] | string;
  labels?: LabelMap;
  epochs?: number; // default 3 (ignored when steps is given)
  steps?: number;
  batchSize?: number; // default 16
  lr?: number; // default 1e-4 (AdapterHub's usual adapter learning rate)
  weightDecay?: number; // default 0.01
  warmup?: number; // warmup steps (or a fraction of the total when < 1); default 0
  schedule?: ScheduleKind; // default 'linear'
  maxGradNorm?: number; // default 1.0; 0 disables clipping
  gradientAccumulation?: number; // default 1
  maxLength?: number; // default 128
  evalEvery?: number; // optimizer steps; default: once per epoch
  earlyStoppingPatience?: number; // evaluations without improvement; default: off
  seed?: number; // default 42
  checkpointDir?: string;
  checkpointEvery?: number; // optimizer steps
  resume?: boolean; // continue from checkpointDir when it holds a checkpoint
  logFile?: string; // JSONL
  progress?: boolean; // default: when stderr is a TTY
  checkpointing?: boolean; // gradient checkpointing
  trainLayerNorms?: boolean; // also train the backbone's LayerNorm weights and biases
  /**
   * A step whose loss or gradients are not finite: false (default) stops training with a
   * NonFiniteError naming where the values first appear; true skips the step (no update, as
   * mixed-precision trainers do), logs a 'skip' event and counts it in skippedSteps.
   */
  skipNonFinite?: boolean;
  /** Stop after this many optimizer steps in this call (to test resume); default: run to the end. */
  stopAfter?: number;
  onLog?: (entry: Record<string, unknown>) => void;
}

export interface TrainResult {
  steps: number;
  epochs: number;
  stoppedEarly: boolean;
  best: { step: number; metrics: Metrics } | null;
  final: Metrics | null;
  labels: LabelMap;
  tokensPerSecond: number;
  secondsPerStep: number;
  /** Steps skipped for non-finite losses or gradients (skipNonFinite). */
  skippedSteps: number;
  history: Record<string, unknown>[];
}

export async function evaluate(
  model: Backbone, tokenizer: Tokenizer, data: Example[], labels: LabelMap, o: { batchSize?: number; maxLength?: number } = {},
): Promise<Metrics> {
  const loader = new DataLoader(data, tokenizer, labels, { batchSize: o.batchSize ?? 32, shuffle: false, maxLength: o.maxLength });
  const pred: number[] = [];
  const gold: number[] = [];
  let lossSum = 0;
  for (let i = 0; i < loader.length; i++) {
    const b = loader.batchAt(0, i);
    const res = await model.forwardAsync(inputsOf(b), { labels: b.labels });
    const logits = res.logits!.toArray();
    lossSum += res.loss!.toArray()[0] * b.labels.length;
    pred.push(...argmaxRows(logits, res.logits!.shape[1]));
    gold.push(...b.labels);
    res.dispose();
  }
  return { loss: gold.length ? lossSum / gold.length : 0, accuracy: accuracy(pred, gold), macroF1: macroF1(pred, gold), count: gold.length };
}

export function inputsOf(b: Batch) {
  return { inputIds: b.inputIds, attentionMask: b.attentionMask, tokenTypeIds: b.tokenTypeIds, shape: b.shape };
}

function snapshot(params: Map<string, Tensor>): Map<string, Float32Array> {
  return new Map([...params].map(([k, t]) => [k, t.toArray()]));
}

function restore(params: Map<string, Tensor>, values: Map<string, Float32Array>, what: string): void {
  for (const [k, t] of params) {
    const v = values.get(k);
    if (!v) throw new Error(`train: ${what} lacks '${k}'`);
    t.copyFrom(v);
  }
}

export async function train(opts: TrainOptions): Promise<TrainResult> {
  const { model } = opts;
  if (opts.resume && !opts.checkpointDir) throw new Error('train: resume needs checkpointDir (the directory to resume from)');
  // before any work: the log and checkpoints must not land on the data or the model, and must be writable
  const source = (d: Example[] | string | undefined) => (typeof d === 'string' ? d : sourceOf(d) ?? '');
  checkOutputPaths('train', [
    { path: source(opts.trainData), name: 'trainData' }, { path: source(opts.evalData), name: 'evalData' },
    { path: model.dir ?? '', name: 'model directory' },
  ], [
    { path: opts.logFile ?? '', name: 'logFile', kind: 'file' },
    { path: opts.checkpointDir ?? '', name: 'checkpointDir', kind: 'dir', owns: ownsCheckpointEntry },
  ]);
  const trainData = typeof opts.trainData === 'string' ? await readExamples(opts.trainData) : opts.trainData;
  const evalData = typeof opts.evalData === 'string' ? await readExamples(opts.evalData) : opts.evalData;
  if (!trainData?.length) throw new Error('train: trainData is empty');
  if (!opts.tokenizer && !model.dir) throw new Error('train: pass a tokenizer (the model was not loaded from a directory)');
  const tokenizer = opts.tokenizer ?? (await Tokenizer.fromDir(model.dir!));
  if (!opts.adapter && !opts.fusion) throw new Error('train: pass the adapter to train (or a fusion)');
  const fusion = typeof opts.fusion === 'string' ? parseComposition(opts.fusion) : opts.fusion;
  if (opts.adapter && !fusion && !model.adapterNames().includes(opts.adapter) && isConfigName(opts.adapter)) model.addAdapter(opts.adapter, opts.adapter);
  const o = { ...opts, trainData, evalData, tokenizer };
  const seed = o.seed ?? 42;
  const labels = o.labels ?? LabelMap.fromExamples(o.trainData);
  const headName = o.head ?? o.adapter ?? (typeof fusion === 'string' ? fusion : fusion!.last());
  if (!model.head(headName)) model.addClassificationHead(headName, { numLabels: labels.size }, { seed: seed + 17 });
  else if (model.head(headName)!.numLabels !== labels.size)
    throw new Error(`train: head '${headName}' has ${model.head(headName)!.numLabels} labels, the data has ${labels.size}`);
  if (fusion) model.trainFusion(fusion);
  else model.trainAdapter(o.adapter!, { trainLayerNorms: o.trainLayerNorms });
  model.setActiveHead(headName);
  const params = model.namedParameters();
  const batchSize = o.batchSize ?? 16;
  const accum = Math.max(1, o.gradientAccumulation ?? 1);
  const loader = new DataLoader(o.trainData, tokenizer, labels, { batchSize, shuffle: true, seed, maxLength: o.maxLength });
  const stepsPerEpoch = Math.max(1, Math.floor(loader.length / accum));
  const totalSteps = o.steps ?? stepsPerEpoch * (o.epochs ?? 3);
  const warmupSteps = o.warmup === undefined ? 0 : o.warmup < 1 ? Math.round(o.warmup * totalSteps) : Math.round(o.warmup);
  const lr = o.lr ?? 1e-4;
  const schedule = new LRSchedule(o.schedule ?? 'linear', { baseLr: lr, warmupSteps, totalSteps });
  const opt = new AdamW(params, { lr, weightDecay: o.weightDecay ?? 0.01 });
  const evalEvery = o.evalEvery ?? stepsPerEpoch;
  const log = o.logFile ? fs.openSync(o.logFile, 'a') : null;
  const history: Record<string, unknown>[] = [];
  const emit = (e: Record<string, unknown>) => {
    history.push(e);
    if (log !== null) fs.writeSync(log, JSON.stringify(e) + '\n');
    o.onLog?.(e);
  };

  let pos = { step: 0, epoch: 0, index: 0 };
  let best: { score: number; step: number } | null = null;
  let bestParams = new Map<string, Float32Array>();
  let bestMetrics: Metrics | null = null;
  let evalsWithoutImprovement = 0;
  if (o.resume && o.checkpointDir && hasCheckpoint(o.checkpointDir)) {
    const ck = loadCheckpoint(o.checkpointDir);
    if (ck.state.seed !== seed) throw new Error(`train: the checkpoint was made with seed ${ck.state.seed}, this run has ${seed}`);
    restore(params, ck.params, 'the checkpoint');
    restoreOptimizer(opt, ck);
    pos = { ...ck.state.position };
    best = ck.state.best ? { score: ck.state.best.score, step: ck.state.best.step } : null;
    bestMetrics = ck.state.best?.metrics ?? null;
    bestParams = ck.best;
    evalsWithoutImprovement = ck.state.evalsWithoutImprovement;
    emit({ event: 'resume', step: pos.step, epoch: pos.epoch, index: pos.index });
  }

  const save = () => {
    if (!o.checkpointDir) return;
    const shapes = new Map([...params].map(([k, t]) => [k, [...t.shape]]));
    const { optimizer, entries, expAvg, expAvgSq, master } = optimizerCheckpoint(opt);
    saveCheckpoint(o.checkpointDir, {
      state: {
        version: 1, position: pos, seed, optimizer, entries, best: best ? { ...best, metrics: bestMetrics ?? undefined } : null,
        evalsWithoutImprovement, labels: labels.labels, tensorsFile: '',
      },
      params: snapshot(params), expAvg, expAvgSq, master, best: bestParams,
    }, shapes);
  };

  const runEval = async (): Promise<boolean> => {
    if (!o.evalData?.length) return false;
    const m = await evaluate(model, tokenizer, o.evalData, labels, { batchSize, maxLength: o.maxLength });
    emit({ event: 'eval', step: pos.step, epoch: pos.epoch, ...m });
    const score = m.accuracy - 1e-6 * m.loss; // accuracy first, loss breaks ties
    if (!best || score > best.score) {
      best = { score, step: pos.step };
      bestParams = snapshot(params);
      bestMetrics = m;
      evalsWithoutImprovement = 0;
    } else evalsWithoutImprovement++;
    return o.earlyStoppingPatience !== undefined && evalsWithoutImprovement >= o.earlyStoppingPatience;
  };

  const showBar = o.progress ?? !!process.stderr.isTTY;
  const bar = showBar
    ? new SingleBar({ format: 'train [{bar}] {value}/{total} | loss {loss} | lr {lr} | {tps} tok/s', hideCursor: true, stream: process.stderr }, Presets.shades_classic)
    : null;
  bar?.start(totalSteps, pos.step, { loss: '-', lr: '-', tps: '-' });

  let stoppedEarly = false;
  let skippedSteps = 0;
  let tokens = 0;
  let seconds = 0;
  let stepsThisCall = 0;
  try {
    while (pos.step < totalSteps) {
      const t0 = process.hrtime.bigint();
      let lossSum = 0;
      let stepTokens = 0;
      let skipped: NonFiniteError | null = null;
      for (let a = 0; a < accum; a++) {
        if (pos.index >= loader.length) {
          pos.epoch++;
          pos.index = 0;
        }
        const b = loader.batchAt(pos.epoch, pos.index++);
        stepTokens += b.lengths.reduce((x, y) => x + y, 0);
        if (skipped) continue; // the rest of a skipped step's micro-batches: consumed, not run
        try {
          // dropout masks keyed by the step and micro-batch: a resumed run draws the same ones
          // forwardAsync/backwardAsync: the CPU kernels run off the JS thread (progress, signals stay live)
          const res = await model.forwardAsync(inputsOf(b), { labels: b.labels, training: true, seed: (seed * 100003 + pos.step * 64 + a) % 2 ** 31, checkpointing: o.checkpointing });
          lossSum += res.loss!.toArray()[0];
          await model.backwardAsync(res);
          res.dispose();
        } catch (e) {
          if (!(e instanceof NonFiniteError) || !o.skipNonFinite) throw withStep(e, pos.step + 1);
          skipped = e;
        }
      }
      let grads = model.grads();
      // the mean over micro-batches, as one large batch would give
      if (!skipped && accum > 1) for (const g of grads.values()) scaleInPlace(g, 1 / accum);
      if (fusion && !skipped) {
        // AdapterHub's fusion regularisation (0.01·‖I − V‖²): its gradient joins the step's (AdapterTrainer
        // adds it after each step, so it lands in the next one; here it lands in this one)
        model.fusionRegularization();
        grads = model.grads();
      }
      const gradNorm = skipped ? NaN : (o.maxGradNorm ?? 1) > 0 ? clipGradNorm(grads, o.maxGradNorm ?? 1) : globalGradNorm(grads);
      if (!skipped && !Number.isFinite(gradNorm)) {
        const e = nonFiniteGradient(grads);
        if (!o.skipNonFinite) throw withStep(e, pos.step + 1);
        skipped = e;
      }
      const stepLr = schedule.lr(pos.step);
      if (skipped) {
        skippedSteps++;
        emit({ event: 'skip', step: pos.step + 1, epoch: pos.epoch, layer: skipped.layer, op: skipped.op, reason: skipped.message });
      } else opt.step(grads, stepLr);
      model.zeroGrad();
      pos.step++;
      stepsThisCall++;
      const dt = Number(process.hrtime.bigint() - t0) / 1e9;
      tokens += stepTokens;
      seconds += dt;
      if (skipped) {
        bar?.update(pos.step, { loss: 'skipped', lr: stepLr.toExponential(2), tps: '-' });
        if (o.checkpointDir && o.checkpointEvery && pos.step % o.checkpointEvery === 0) save();
        if (o.stopAfter !== undefined && stepsThisCall >= o.stopAfter) break;
        continue;
      }
      const loss = lossSum / accum;
      emit({ event: 'step', step: pos.step, epoch: pos.epoch, loss, lr: stepLr, gradNorm, tokensPerSecond: stepTokens / dt });
      bar?.update(pos.step, { loss: loss.toFixed(4), lr: stepLr.toExponential(2), tps: Math.round(tokens / seconds) });
      if (pos.step % evalEvery === 0 || pos.step === totalSteps) {
        if (await runEval()) {
          stoppedEarly = true;
          emit({ event: 'early_stop', step: pos.step });
        }
      }
      if (o.checkpointDir && o.checkpointEvery && pos.step % o.checkpointEvery === 0) save();
      if (stoppedEarly || (o.stopAfter !== undefined && stepsThisCall >= o.stopAfter)) break;
    }
  } finally {
    bar?.stop();
    if (log !== null) fs.closeSync(log);
  }
  if (o.checkpointDir && o.checkpointEvery === undefined) save();
  const finished = pos.step >= totalSteps || stoppedEarly;
  if (finished && bestParams.size) restore(params, bestParams, 'the best snapshot'); // keep the best adapter
  opt.dispose();
  return {
    steps: pos.step,
    epochs: pos.epoch + (pos.index > 0 ? 1 : 0),
    stoppedEarly,
    best: best && bestMetrics ? { step: (best as { step: number }).step, metrics: bestMetrics } : null,
    final: bestMetrics,
    labels,
    tokensPerSecond: seconds ? tokens / seconds : 0,
    secondsPerStep: stepsThisCall ? seconds / stepsThisCall : 0,
    skippedSteps,
    history,
  };
}

function isConfigName(name: string): boolean {
  try {
    configName(name);
    return true;
  } catch {
    return false;
  }
}

function scaleInPlace(g: Tensor, s: number): void {
  const scaled = scale(g, s);
  g.copyFrom(scaled);
  scaled.dispose();
}

/** The error for non-finite gradients, naming the first trainable tensor that holds such values. */
function nonFiniteGradient(grads: Map<string, Tensor>): NonFiniteError {
  for (const [name, g] of grads) {
    const a = g.toArray();
    const i = firstNonFinite(a);
    if (i >= 0) return nonFiniteError('train', null, `the gradient of ${name}`, `${a[i]} at element ${i} of [${g.shape.join(', ')}]`);
  }
  return nonFiniteError('train', null, 'the gradient norm', 'the global norm overflowed');
}

/** Prefixes a non-finite error with the step it happened in. */
function withStep(e: unknown, step: number): unknown {
  if (e instanceof NonFiniteError) e.message = `step ${step}: ${e.message}`;
  return e;
}
