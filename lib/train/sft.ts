// Instruction tuning (SFT) of an adapter on a frozen decoder: cross-entropy on the answer tokens
// only (sftData.ts), AdamW with a schedule and clipping, evaluation (answer-token loss and
// perplexity), a JSONL log, a progress bar, and checkpoints that resume exactly.
import * as fs from 'fs';
import { Presets, SingleBar } from 'cli-progress';
import { configName } from '../methods/bottleneck/config';
import { NonFiniteError } from '../core/finite';
import type { Decoder } from '../models/decoder/model';
import { AdamW } from '../optim/adamw';
import { clipGradNorm, globalGradNorm } from '../optim/clip';
import { LRSchedule, ScheduleKind } from '../optim/schedule';
import { checkOutputPaths } from '../outputPaths';
import { hasCheckpoint, loadCheckpoint, optimizerCheckpoint, ownsCheckpointEntry, restoreOptimizer, saveCheckpoint } from './checkpoint';
import { encodeSft, packSft, padPackedBatch, padSftBatch, readSftExamples, SftEncoded, SftExample, SftPacked } from './sftData';
import { Tokenizer } from './tokenizer';
import { mulberry32 } from '../core/random';

export interface SftOptions {
  model: Decoder;
  /** The adapter to train; a config name (seq_bn, double_seq_bn, par_bn) adds one of that name. */
  adapter: string;
  /** Default: the GGUF file's tokenizer, else tokenizer.json of the model's directory. */
  tokenizer?: Tokenizer;
  trainData: SftExample[] | string;
  evalData?: SftExample[] | string;
  epochs?: number; // default 1 (ignored when steps is given)
  steps?: number;
  batchSize?: number; // default 4
  lr?: number; // default 1e-4
  weightDecay?: number; // default 0.01
  warmup?: number; // steps, or a fraction of the total when < 1
  schedule?: ScheduleKind; // default 'linear'
  maxGradNorm?: number; // default 1; 0 disables clipping
  maxLength?: number; // default 512 tokens per example
  evalEvery?: number; // optimizer steps; default once per epoch
  seed?: number; // default 42
  checkpointDir?: string;
  checkpointEvery?: number;
  resume?: boolean;
  logFile?: string;
  progress?: boolean; // default: when stderr is a TTY
  /** Skip a step whose loss or gradients are not finite (logged, counted) instead of stopping. */
  skipNonFinite?: boolean;
  /**
   * Pack several examples into each row of up to maxLength tokens (attention and prediction kept
   * within each example): fewer padding tokens, fewer steps per epoch. Default false.
   */
  packing?: boolean;
  /** Gradient checkpointing: recompute each layer in backward (less memory, same gradients). */
  checkpointing?: boolean;
  /** Stop after this many optimizer steps in this call (to test resume). */
  stopAfter?: number;
  onLog?: (entry: Record<string, unknown>) => void;
}

export interface SftMetrics {
  /** Mean cross-entropy per answer token. */
  loss: number;
  perplexity: number;
  tokens: number;
}

export interface SftResult {
  steps: number;
  epochs: number;
  skippedSteps: number;
  final: SftMetrics | null;
  tokensPerSecond: number;
  secondsPerStep: number;
  history: Record<string, unknown>[];
}

/** A permutation of 0..n-1 from a seed (mulberry32 + Fisher-Yates): the same on every run. */
function permutation(n: number, seed: number): number[] {
  const rnd = mulberry32(seed);
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

const answerTokens = (labels: number[][]) => labels.reduce((n, r) => n + r.filter((l, t) => t > 0 && l !== -100).length, 0);

/** Answer-token loss and perplexity of the active adapter on `rows`. */
export function evaluateSft(model: Decoder, rows: SftEncoded[], padId: number, batchSize = 8): SftMetrics {
  let sum = 0;
  let tokens = 0;
  for (let i = 0; i < rows.length; i += batchSize) {
    const b = padSftBatch(rows.slice(i, i + batchSize), padId);
    const n = answerTokens(b.labels);
    if (!n) continue;
    const out = model.forward({ inputIds: b.inputIds, attentionMask: b.attentionMask }, { labels: b.labels });
    sum += out.lossValue! * n;
    tokens += n;
    out.dispose();
  }
  const loss = tokens ? sum / tokens : 0;
  return { loss, perplexity: Math.exp(loss), tokens };
}

export async function sft(opts: SftOptions): Promise<SftResult> {
  const { model } = opts;
  if (opts.resume && !opts.checkpointDir) throw new Error('sft: resume needs checkpointDir (the directory to resume from)');
  checkOutputPaths('sft', [
    { path: typeof opts.trainData === 'string' ? opts.trainData : '', name: 'trainData' },
    { path: typeof opts.evalData === 'string' ? opts.evalData : '', name: 'evalData' },
    { path: model.gguf?.file ?? model.dir ?? '', name: 'model' },
  ], [
    { path: opts.logFile ?? '', name: 'logFile', kind: 'file' },
    { path: opts.checkpointDir ?? '', name: 'checkpointDir', kind: 'dir', owns: ownsCheckpointEntry },
  ]);
  const tokenizer = opts.tokenizer ?? (await model.ownTokenizer());
  if (!tokenizer) throw new Error('sft: pass a tokenizer (the model has no directory or GGUF file to take one from)');
  const read = async (d: SftExample[] | string | undefined) => (typeof d === 'string' ? readSftExamples(d) : d);
  const trainData = await read(opts.trainData);
  const evalData = await read(opts.evalData);
  if (!trainData?.length) throw new Error('sft: trainData is empty');
  const maxLength = opts.maxLength ?? 512;
  const encode = (data: SftExample[], what: string) => data.map((ex, i) => {
    try {
      return encodeSft(tokenizer, ex, { maxLength });
    } catch (e) {
      throw new Error(`sft: ${what} example ${i + 1}: ${(e as Error).message}`);
    }
  });
  const encoded = encode(trainData, 'training');
  // the units a step draws from: packed rows (fixed once; their order shuffled per epoch), or examples
  const train: (SftEncoded | SftPacked)[] = opts.packing ? packSft(encoded, maxLength) : encoded;
  const evalRows = evalData ? encode(evalData, 'evaluation') : null;
  if (!model.adapterNames().includes(opts.adapter)) {
    try {
      configName(opts.adapter);
    } catch {
      throw new Error(`sft: the model has no adapter '${opts.adapter}' and it is not a config name (seq_bn, double_seq_bn, par_bn)`);
    }
    model.addAdapter(opts.adapter, opts.adapter);
  }
  model.trainAdapter(opts.adapter);
  const params = model.namedParameters();
  const seed = opts.seed ?? 42;
  const batchSize = opts.batchSize ?? 4;
  const perEpoch = Math.ceil(train.length / batchSize);
  const total = opts.steps ?? perEpoch * (opts.epochs ?? 1);
  const lr = opts.lr ?? 1e-4;
  const warmupSteps = opts.warmup === undefined ? 0 : opts.warmup < 1 ? Math.round(opts.warmup * total) : Math.round(opts.warmup);
  const schedule = new LRSchedule(opts.schedule ?? 'linear', { baseLr: lr, warmupSteps, totalSteps: total });
  const opt = new AdamW(params, { lr, weightDecay: opts.weightDecay ?? 0.01 });
  const evalEvery = opts.evalEvery ?? perEpoch;
  const log = opts.logFile ? fs.openSync(opts.logFile, 'a') : null;
  const history: Record<string, unknown>[] = [];
  const emit = (e: Record<string, unknown>) => {
    history.push(e);
    if (log !== null) fs.writeSync(log, JSON.stringify(e) + '\n');
    opts.onLog?.(e);
  };

  let pos = { step: 0, epoch: 0, index: 0 };
  let final: SftMetrics | null = null;
  if (opts.resume && opts.checkpointDir && hasCheckpoint(opts.checkpointDir)) {
    const ck = loadCheckpoint(opts.checkpointDir);
    if (ck.state.seed !== seed) throw new Error(`sft: the checkpoint was made with seed ${ck.state.seed}, this run has ${seed}`);
    for (const [k, t] of params) {
      const v = ck.params.get(k);
      if (!v) throw new Error(`sft: the checkpoint lacks '${k}' (another adapter or model?)`);
      t.copyFrom(v);
    }
    restoreOptimizer(opt, ck);
    pos = { ...ck.state.position };
    emit({ event: 'resume', step: pos.step, epoch: pos.epoch, index: pos.index });
  }
  const save = () => {
    if (!opts.checkpointDir) return;
    const { optimizer, entries, expAvg, expAvgSq, master } = optimizerCheckpoint(opt);
    saveCheckpoint(opts.checkpointDir, {
      state: { version: 1, position: pos, seed, optimizer, entries, best: null, evalsWithoutImprovement: 0, labels: [], tensorsFile: '' },
      params: new Map([...params].map(([k, t]) => [k, t.toArray()])), expAvg, expAvgSq, master, best: new Map(),
    }, new Map([...params].map(([k, t]) => [k, [...t.shape]])));
  };

  const bar = (opts.progress ?? !!process.stderr.isTTY)
    ? new SingleBar({ format: 'sft [{bar}] {value}/{total} | loss {loss} | {tps} tok/s', hideCursor: true, stream: process.stderr }, Presets.shades_classic)
    : null;
  bar?.start(total, pos.step, { loss: '-', tps: '-' });
  let skippedSteps = 0;
  let tokens = 0;
  let seconds = 0;
  let stepsThisCall = 0;
  try {
    while (pos.step < total) {
      if (pos.index >= perEpoch) {
        pos.epoch++;
        pos.index = 0;
      }
      const order = permutation(train.length, seed + 7919 * pos.epoch);
      const rows = order.slice(pos.index * batchSize, (pos.index + 1) * batchSize).map((i) => train[i]);
      pos.index++;
      const t0 = process.hrtime.bigint();
      const packed = opts.packing ? padPackedBatch(rows as SftPacked[], tokenizer.padId) : null;
      const batch = packed ?? padSftBatch(rows, tokenizer.padId);
      const segmentIds = packed?.segmentIds;
      const n = answerTokens(batch.labels);
      const stepLr = schedule.lr(pos.step);
      let skipped: string | null = null;
      let loss = NaN;
      let gradNorm = NaN;
      let out: ReturnType<Decoder['forward']> | null = null;
      try {
        out = await model.forwardAsync({ inputIds: batch.inputIds, attentionMask: batch.attentionMask, segmentIds }, { labels: batch.labels, training: true, seed: (seed * 100003 + pos.step) % 2 ** 31, checkpointing: opts.checkpointing, keepLogits: false });
      } catch (e) {
        if (!(e instanceof NonFiniteError)) throw e;
        if (!opts.skipNonFinite) throw new NonFiniteError(`sft: step ${pos.step + 1}: ${e.message}`, e.layer, e.op);
        skipped = e.message;
      }
      try {
        if (!out) {
          // skipped above
        } else if (!Number.isFinite((loss = out.lossValue!))) skipped = `the loss is ${loss}`;
        else {
          await model.backwardAsync(out);
          const grads = model.grads();
          gradNorm = (opts.maxGradNorm ?? 1) > 0 ? clipGradNorm(grads, opts.maxGradNorm ?? 1) : globalGradNorm(grads);
          if (!Number.isFinite(gradNorm)) skipped = 'the gradients are not finite';
          else opt.step(grads, stepLr);
        }
      } finally {
        out?.dispose();
        model.zeroGrad();
      }
      pos.step++;
      stepsThisCall++;
      if (skipped) {
        if (!opts.skipNonFinite)
          throw new NonFiniteError(`sft: step ${pos.step}: ${skipped}; lower the learning rate, or pass skipNonFinite to skip such steps`, null, 'loss');
        skippedSteps++;
        emit({ event: 'skip', step: pos.step, epoch: pos.epoch, reason: skipped });
      } else {
        const dt = Number(process.hrtime.bigint() - t0) / 1e9;
        const stepTokens = batch.attentionMask.reduce((a, r) => a + r.reduce((x, y) => x + y, 0), 0);
        tokens += stepTokens;
        seconds += dt;
        emit({ event: 'step', step: pos.step, epoch: pos.epoch, loss, answerTokens: n, lr: stepLr, gradNorm, tokensPerSecond: stepTokens / dt });
        bar?.update(pos.step, { loss: loss.toFixed(4), tps: Math.round(tokens / seconds) });
      }
      if (evalRows && (pos.step % evalEvery === 0 || pos.step === total)) {
        final = evaluateSft(model, evalRows, tokenizer.padId, batchSize);
        emit({ event: 'eval', step: pos.step, epoch: pos.epoch, ...final });
      }
      if (opts.checkpointDir && opts.checkpointEvery && pos.step % opts.checkpointEvery === 0) save();
      if (opts.stopAfter !== undefined && stepsThisCall >= opts.stopAfter) break;
    }
  } finally {
    bar?.stop();
    if (log !== null) fs.closeSync(log);
  }
  if (opts.checkpointDir && opts.checkpointEvery === undefined) save();
  opt.dispose();
  return {
    steps: pos.step, epochs: pos.epoch + (pos.index > 0 ? 1 : 0), skippedSteps, final,
    tokensPerSecond: seconds ? tokens / seconds : 0, secondsPerStep: stepsThisCall ? seconds / stepsThisCall : 0, history,
  };
}
