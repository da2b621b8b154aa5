// The `backbone` bench suite: one training step (forward + backward) of a frozen BERT
// encoder with seq_bn adapters and a 2-label classification head, in tokens per second,
// with and without gradient checkpointing, against the same model in eager PyTorch.
//
// No model is downloaded: a BERT-shaped checkpoint with random weights is generated
// (seeded), written as config.json + model.safetensors into a temporary directory and
// loaded with loadBackbone, as a real one would be. Speed does not depend on the values.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Backbone, loadBackbone, memoryStats, randn } from '../lib';
import type { FloatDType, ModelInputs } from '../lib';
import { parseConfig, weightNames } from '../lib/models/bert/config';
import { TensorToWrite, writeSafetensors } from '../lib/io/safetensors';
import {
  BenchOptions,
  deviceKind,
  errorMessage,
  findTorchPython,
  formatTable,
  measure,
  progress,
  runHeader,
  runPythonJson,
  sourceScript,
  Suite,
  TimingPlan,
  Work,
} from './bench';
import { mulberry32 as uniform } from '../lib/core/random';

// ---------------------------------------------------------------- configuration

export interface BackboneShape {
  layers: number;
  hidden: number;
  heads: number;
  intermediate: number;
  vocab: number;
  maxPositions: number;
  seq: number; // T
  batch: number; // B
}

/** BERT-base, batch 32 × 128 tokens. */
const GPU_SHAPE: BackboneShape = {
  layers: 12, hidden: 768, heads: 12, intermediate: 3072, vocab: 30522, maxPositions: 512, seq: 128, batch: 32,
};

/** A small encoder that two CPU cores get through in well under a minute (both libraries). */
const CPU_SHAPE: BackboneShape = {
  layers: 2, hidden: 128, heads: 2, intermediate: 512, vocab: 30522, maxPositions: 512, seq: 64, batch: 8,
};

const ADAPTER = 'bench';
const ADAPTER_CONFIG = 'seq_bn';
const NUM_LABELS = 2;
const INIT_STD = 0.02; // BERT's initializer_range
const SEED = 1234;
const DROPOUT = 0.1; // BERT's hidden and attention dropout: the step runs in training mode
const TRAINING = true;

/** Issue 16's CPU comparison: BERT-base, batch 8 × 128 tokens (FA_BACKBONE_SHAPE=bert-base on the CPU; minutes). */
const CPU_BERT_BASE: BackboneShape = { ...GPU_SHAPE, batch: 8 };

/** Issue 16's MiniLM training step: all-MiniLM-L6-v2's shape (6 layers, hidden 384), batch 8 × 128 (FA_BACKBONE_SHAPE=minilm). */
const CPU_MINILM: BackboneShape = { layers: 6, hidden: 384, heads: 12, intermediate: 1536, vocab: 30522, maxPositions: 512, seq: 128, batch: 8 };

function shapeFor(device: string): BackboneShape {
  if (deviceKind(device) !== 'cpu') return GPU_SHAPE;
  const want = process.env.FA_BACKBONE_SHAPE;
  return want === 'bert-base' ? CPU_BERT_BASE : want === 'minilm' ? CPU_MINILM : CPU_SHAPE;
}

/** FA_BENCH_TORCH_COMPILE=1: PyTorch's step under torch.compile too (checkpointing off; compiling takes minutes). */
const TORCH_COMPILE = process.env.FA_BENCH_TORCH_COMPILE === '1';

/** bf16 on the GPU (weights stored as BF16), fp32 on the CPU. */
function dtypeFor(device: string): { dtype: FloatDType; stored: 'BF16' | 'F32' } {
  return deviceKind(device) === 'cpu' ? { dtype: 'float32', stored: 'F32' } : { dtype: 'bfloat16', stored: 'BF16' };
}

/** At least 20 timed steps after a warm-up (40 on the CPU, where other load adds noise); no time budget: all run. */
function timingPlan(device: string): TimingPlan {
  if (deviceKind(device) === 'cpu' && process.env.FA_BACKBONE_SHAPE === 'bert-base') return { warmup: 2, runs: 6, minRuns: 6 };
  if (deviceKind(device) === 'cpu' && process.env.FA_BACKBONE_SHAPE === 'minilm') return { warmup: 3, runs: 12, minRuns: 12 };
  return deviceKind(device) === 'cpu' ? { warmup: 3, runs: 40, minRuns: 40 } : { warmup: 5, runs: 30, minRuns: 30 };
}

// ---------------------------------------------------------------- the random checkpoint

/** Hugging Face BertConfig fields of the shape. */
function bertConfig(s: BackboneShape): Record<string, unknown> {
  return {
    architectures: ['BertModel'],
    model_type: 'bert',
    _name_or_path: `random-bert-L${s.layers}-H${s.hidden}`,
    vocab_size: s.vocab,
    hidden_size: s.hidden,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    intermediate_size: s.intermediate,
    hidden_act: 'gelu',
    hidden_dropout_prob: DROPOUT,
    attention_probs_dropout_prob: DROPOUT,
    max_position_embeddings: s.maxPositions,
    type_vocab_size: 2,
    layer_norm_eps: 1e-12,
    pad_token_id: 0,
    initializer_range: INIT_STD,
  };
}

export interface GeneratedCheckpoint {
  dir: string;
  parameters: number;
  fileBytes: number;
  ms: number;
}

/**
 * Writes config.json and model.safetensors of a random BERT (no pooler) into dir: every
 * matrix and embedding N(0, 0.02) from a seeded randn (one seed per tensor, in a fixed
 * order), biases 0, LayerNorm weight 1 and bias 0. The same seed gives the same file.
 */
export function writeRandomBert(dir: string, s: BackboneShape, stored: 'BF16' | 'F32', seed = SEED): GeneratedCheckpoint {
  const t0 = Date.now();
  const config = bertConfig(s);
  const names = weightNames(parseConfig(config)); // the loader's names: what it looks for is what is written
  const tensors: Record<string, TensorToWrite> = {};
  let next = seed;
  let parameters = 0;
  const put = (name: string, shape: number[], data: Float32Array): void => {
    tensors[name] = { dtype: stored, shape, data };
    parameters += data.length;
  };
  const normal = (name: string, shape: number[]): void => {
    const t = randn(shape, { seed: next++, std: INIT_STD });
    put(name, shape, t.toArray());
    t.dispose();
  };
  const constant = (name: string, shape: number[], v: number): void =>
    put(name, shape, new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(v));
  const linear = (base: string, out: number, inp: number): void => {
    normal(`${base}.weight`, [out, inp]);
    constant(`${base}.bias`, [out], 0);
  };
  const norm = (base: string): void => {
    constant(`${base}.weight`, [s.hidden], 1);
    constant(`${base}.bias`, [s.hidden], 0);
  };
  const H = s.hidden;
  normal(names.word, [s.vocab, H]);
  normal(names.position, [s.maxPositions, H]);
  normal(names.tokenType as string, [2, H]);
  norm(names.embLn);
  for (let i = 0; i < s.layers; i++) {
    const n = names.layer(i);
    for (const q of [n.q, n.k, n.v, n.attnOut]) linear(q, H, H);
    norm(n.attnLn);
    linear(n.inter, s.intermediate, H);
    linear(n.out, H, s.intermediate);
    norm(n.outLn);
  }
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  const file = path.join(dir, 'model.safetensors');
  writeSafetensors(file, tensors, { format: 'pt', note: 'random weights (fused-adapters bench)' });
  return { dir, parameters, fileBytes: fs.statSync(file).size, ms: Date.now() - t0 };
}

// ---------------------------------------------------------------- the batch

export interface Batch {
  B: number;
  T: number;
  inputIds: Int32Array;
  attentionMask: Float32Array;
  labels: number[];
}


/**
 * Random token ids (never the pad id 0) and labels; the first half of the sequences use
 * all T positions, the others end with padding (at least T/2 real tokens). The step does
 * the same work either way (tokens/s counts B·T), but the masked path is exercised.
 */
export function makeBatch(s: BackboneShape, seed = SEED): Batch {
  const next = uniform(seed);
  const { batch: B, seq: T } = s;
  const inputIds = new Int32Array(B * T);
  const attentionMask = new Float32Array(B * T);
  const labels: number[] = [];
  for (let b = 0; b < B; b++) {
    const len = b < B / 2 ? T : Math.ceil(T / 2) + Math.floor(next() * (T - Math.ceil(T / 2)));
    for (let t = 0; t < T; t++) {
      const real = t < len;
      inputIds[b * T + t] = real ? 1000 + Math.floor(next() * (s.vocab - 1000)) : 0;
      attentionMask[b * T + t] = real ? 1 : 0;
    }
    labels.push(Math.floor(next() * NUM_LABELS));
  }
  return { B, T, inputIds, attentionMask, labels };
}

function modelInputs(b: Batch): ModelInputs {
  return { inputIds: b.inputIds, attentionMask: b.attentionMask, shape: [b.B, b.T] };
}

// ---------------------------------------------------------------- our rows

export interface BackboneRow {
  checkpointing: boolean;
  ms: number | null;
  runs: number;
  tokensPerSec: number | null;
  /** memoryStats(device).reservedBytes after the row's runs (CUDA: the caching allocator's pool). */
  reservedBytes: number | null;
  /** Live bytes right after a forward (untimed probe step), minus the live bytes before it. */
  activationBytes: number | null;
  torchMs?: number | null;
  /** torch.compile'd step (FA_BENCH_TORCH_COMPILE=1). */
  torchCompileMs?: number | null;
  torchTokensPerSec?: number | null;
  torchPeakReservedBytes?: number | null;
  /** torch ms / our ms: above 1, ours is faster. */
  speedup?: number | null;
  error?: string;
}

/** One training step: zero the gradients, forward with labels, backward from the loss. */
function stepWork(model: Backbone, b: Batch, checkpointing: boolean): Work {
  const inputs = modelInputs(b);
  return (keep) => {
    model.zeroGrad();
    const res = model.forward(inputs, { training: TRAINING, labels: b.labels, checkpointing });
    keep.push(res.lastHiddenState);
    if (res.logits) keep.push(res.logits);
    if (res.loss) keep.push(res.loss);
    model.backward(res);
  };
}

/** Live bytes a forward keeps for backward: one untimed step, measured between forward and backward. */
function activationBytes(model: Backbone, b: Batch, checkpointing: boolean, device: string): number {
  model.zeroGrad();
  const before = memoryStats(device).allocatedBytes;
  const res = model.forward(modelInputs(b), { training: TRAINING, labels: b.labels, checkpointing });
  const after = memoryStats(device).allocatedBytes;
  model.backward(res);
  res.dispose();
  return after - before;
}

function benchRow(model: Backbone, b: Batch, checkpointing: boolean, device: string): BackboneRow {
  progress(`backbone: forward+backward, checkpointing ${checkpointing ? 'on' : 'off'}`);
  try {
    const t = measure(device, stepWork(model, b, checkpointing), timingPlan(device));
    const act = activationBytes(model, b, checkpointing, device);
    return {
      checkpointing, ms: t.ms, runs: t.runs, tokensPerSec: (b.B * b.T) / (t.ms / 1e3),
      reservedBytes: memoryStats(device).reservedBytes, activationBytes: act,
    };
  } catch (e) {
    return { checkpointing, ms: null, runs: 0, tokensPerSec: null, reservedBytes: null, activationBytes: null, error: errorMessage(e) };
  }
}

// ---------------------------------------------------------------- same-model check

export interface ModelCheck {
  ours: { loss: number; logits: number[] };
  torch?: { loss: number; logits: number[] };
  /** Norm-wise relative errors torch vs ours (eval mode, same weights and batch). */
  logitsRelErr?: number;
  clsRelErr?: number;
  lossRelErr?: number;
  error?: string;
}

function relErr(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    num += (actual[i] - expected[i]) ** 2;
    den += expected[i] ** 2;
  }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
}

/** Eval-mode forward (no dropout): loss, logits and the first token's last hidden state per sequence. */
function evalForward(model: Backbone, b: Batch): { loss: number; logits: number[]; cls: Float32Array } {
  const res = model.forward(modelInputs(b), { labels: b.labels });
  try {
    const H = model.config.hiddenSize;
    const last = res.lastHiddenState.toArray();
    const cls = new Float32Array(b.B * H);
    for (let i = 0; i < b.B; i++) cls.set(last.subarray(i * b.T * H, i * b.T * H + H), i * H);
    return { loss: res.loss!.toArray()[0], logits: Array.from(res.logits!.toArray()), cls };
  } finally {
    res.dispose();
  }
}

// ---------------------------------------------------------------- PyTorch

interface TorchRow {
  checkpointing: boolean;
  ms: number | null;
  runs: number;
  tokensPerSec: number | null;
  compile?: boolean;
  peakReservedBytes?: number;
  peakAllocatedBytes?: number;
  error?: string;
}

interface TorchReport {
  python: string;
  version: string;
  device: string;
  deviceName: string;
  threads: number;
  dtype: string;
  check: { loss: number; logits: number[]; cls: number[] } | { error: string };
  rows: TorchRow[];
}

function benchTorch(
  opts: BenchOptions, spec: object, threads: number,
): TorchReport | null {
  if (!opts.torch) {
    console.log('PyTorch: skipped (--no-torch)');
    return null;
  }
  const python = findTorchPython(opts.python);
  if (!python) {
    console.log(`PyTorch: not available (no torch in ${opts.python ?? 'python3 or /usr/bin/python3'})`);
    return null;
  }
  try {
    const script = sourceScript('bench_backbone_torch.py');
    progress(`torch: ${python} ${script}`);
    const out = runPythonJson(python, script, { ...spec, threads }, 30 * 60 * 1000) as Omit<TorchReport, 'python'>;
    return { python, ...out };
  } catch (e) {
    console.log(`PyTorch: failed (${errorMessage(e)})`);
    return null;
  }
}

// ---------------------------------------------------------------- printing

const NA = 'n/a';
const MiB = 2 ** 20;

function fmtMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return NA;
  return ms >= 100 ? ms.toFixed(1) : ms >= 1 ? ms.toFixed(2) : ms.toFixed(3);
}

const fmtTok = (v: number | null | undefined): string => (v == null ? NA : Math.round(v).toLocaleString('en-US'));
const fmtMiB = (v: number | null | undefined): string => (v == null ? NA : (v / MiB).toFixed(0));

function printTable(rows: BackboneRow[], torch: TorchReport | null, device: string): void {
  const cuda = deviceKind(device) === 'cuda';
  const header = ['checkpointing', 'runs', 'ms/step', 'tokens/s', cuda ? 'reserved MiB' : 'host MiB', 'act. MiB'];
  const compiled = torch?.rows.some((t) => t.compile) ?? false;
  if (torch) header.push('torch ms', 'torch tokens/s', ...(cuda ? ['torch MiB'] : []), 'torch/ours', ...(compiled ? ['compile ms', 'compile/ours'] : []));
  const lines = rows.map((r) => {
    const line = [r.checkpointing ? 'on' : 'off', String(r.runs), fmtMs(r.ms), fmtTok(r.tokensPerSec), fmtMiB(r.reservedBytes), fmtMiB(r.activationBytes)];
    if (torch) {
      line.push(fmtMs(r.torchMs), fmtTok(r.torchTokensPerSec));
      if (cuda) line.push(fmtMiB(r.torchPeakReservedBytes));
      line.push(r.speedup == null ? NA : `${r.speedup.toFixed(2)}×`);
      if (compiled) {
        const c = r.torchCompileMs;
        line.push(c === undefined ? '—' : fmtMs(c), c == null || r.ms == null ? (c === undefined ? '—' : NA) : `${(c / r.ms).toFixed(2)}×`);
      }
    }
    return line;
  });
  console.log(formatTable(header, lines, 1));
}

function printNotes(
  rows: BackboneRow[], torch: TorchReport | null, check: ModelCheck, device: string, plan: TimingPlan,
): void {
  const cuda = deviceKind(device) === 'cuda';
  const notes = [
    `weights are random (seeded randn, std ${INIT_STD}; LayerNorm 1/0; biases 0), generated and loaded with loadBackbone: speed does not depend on them.`,
    `step = zeroGrad, forward (training mode: dropout ${DROPOUT}) with labels, backward from the loss; only the adapters and the head get gradients.`,
    `median of ${plan.runs} steps after ${plan.warmup} warm-up steps; ${cuda ? 'CUDA events around each step (host work and input upload included)' : 'hrtime around each step'}; tokens/s = B·T / time.`,
    cuda
      ? `reserved MiB = memoryStats().reservedBytes after the row (the caching allocator only grows: checkpointing was measured first, so each row shows its own peak; the weights are included).`
      : `host MiB = memoryStats('cpu').reservedBytes after the row: the weights, adapters and gradients, plus freed buffers the host cache keeps for reuse (FUSED_ADAPTERS_HOST_CACHE_MB; not a peak).`,
    `act. MiB = live bytes added by one forward (what is kept for backward), measured between forward and backward of an untimed step.`,
  ];
  if (torch) {
    notes.push(
      `torch = PyTorch ${torch.version} eager on ${torch.device} (${torch.threads} thread(s)), whole model in ${torch.dtype} (no autocast), ` +
        `the same weights and batch; checkpointing = torch.utils.checkpoint per layer (non-reentrant). torch/ours = torch ms / our ms (above 1: ours is faster).`,
    );
    if (cuda) notes.push(`torch MiB = torch.cuda.max_memory_reserved() over the row (after empty_cache and a reset of the peak).`);
  }
  if (check.error) notes.push(`same-model check: ${check.error}`);
  else if (check.torch)
    notes.push(
      `same-model check (eval mode, no dropout): loss ours ${check.ours.loss.toFixed(6)} vs torch ${check.torch.loss.toFixed(6)}; ` +
        `relative error of the logits ${check.logitsRelErr!.toExponential(1)}, of the first tokens' last hidden states ${check.clsRelErr!.toExponential(1)}.`,
    );
  for (const r of rows) if (r.error) notes.push(`n/a (ours, checkpointing ${r.checkpointing ? 'on' : 'off'}): ${r.error}`);
  if (torch?.rows.some((t) => t.compile))
    notes.push('compile = the same PyTorch step under torch.compile (default mode, inductor), timed after its warm-up steps compiled it; checkpointing off only.');
  for (const t of torch?.rows ?? []) if (t.error) notes.push(`n/a (torch, checkpointing ${t.checkpointing ? 'on' : 'off'}${t.compile ? ', compile' : ''}): ${t.error}`);
  console.log(notes.map((n) => `  ${n}`).join('\n'));
}

// ---------------------------------------------------------------- the suite

async function runBackboneSuite(opts: BenchOptions): Promise<object> {
  const { device } = opts;
  const head = runHeader(device);
  const shape = shapeFor(device);
  const { dtype, stored } = dtypeFor(device);
  const plan = timingPlan(device);
  // Checkpointing first: the CUDA allocator's pool only grows, so its reserved bytes are its own.
  const order = opts.quick ? [false] : [true, false];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-bench-backbone-'));
  let model: Backbone | undefined;
  try {
    progress(`backbone: writing a random ${shape.layers}-layer, hidden ${shape.hidden} BERT (${stored}) to ${tmp}`);
    const ckpt = writeRandomBert(tmp, shape, stored);
    progress(`backbone: loading it on ${device} in ${dtype}`);
    const t0 = Date.now();
    model = await loadBackbone(tmp, { device, dtype });
    const loadMs = Date.now() - t0;
    model.addAdapter(ADAPTER, ADAPTER_CONFIG);
    model.addClassificationHead(ADAPTER, { numLabels: NUM_LABELS });
    model.trainAdapter(ADAPTER);
    // What torch loads as its adapters and head: the values ours were initialised with.
    const trainable: Record<string, TensorToWrite> = {};
    let trainableCount = 0;
    for (const [name, t] of model.namedParameters()) {
      trainable[name] = { dtype: 'F32', shape: [...t.shape], data: t.toArray() };
      trainableCount += t.size;
    }
    const trainableFile = path.join(tmp, 'trainable.safetensors');
    writeSafetensors(trainableFile, trainable);
    const batch = makeBatch(shape);
    const summary = model.summary();

    const measured = new Map<boolean, BackboneRow>();
    for (const c of order) measured.set(c, benchRow(model, batch, c, device));
    const rows = [...measured.keys()].sort((a, b) => Number(a) - Number(b)).map((c) => measured.get(c)!);

    progress('backbone: eval-mode forward for the same-model check');
    let ours: ReturnType<typeof evalForward> | undefined;
    let checkError: string | undefined;
    try {
      ours = evalForward(model, batch);
    } catch (e) {
      checkError = `our eval forward failed: ${errorMessage(e)}`;
    }
    model.dispose();
    model = undefined;

    const spec = {
      device, dtype, config: bertConfig(shape), adapterName: ADAPTER, scaling: 1,
      weights: path.join(tmp, 'model.safetensors'), trainable: trainableFile,
      batch: { B: batch.B, T: batch.T, inputIds: Array.from(batch.inputIds), attentionMask: Array.from(batch.attentionMask), labels: batch.labels },
      training: TRAINING, rows: [...rows.map((r) => ({ checkpointing: r.checkpointing })), ...(TORCH_COMPILE ? [{ checkpointing: false, compile: true }] : [])],
      warmup: plan.warmup, runs: plan.runs, minRuns: plan.minRuns, budgetMs: 0, seed: 0,
    };
    const torch = benchTorch(opts, spec, head.build.cpuThreads);

    const check: ModelCheck = { ours: { loss: ours?.loss ?? NaN, logits: ours?.logits ?? [] }, error: checkError };
    if (torch && ours) {
      if ('error' in torch.check) check.error = `torch eval forward failed: ${torch.check.error}`;
      else {
        check.torch = { loss: torch.check.loss, logits: torch.check.logits };
        check.logitsRelErr = relErr(torch.check.logits, ours.logits);
        check.clsRelErr = relErr(torch.check.cls, ours.cls);
        check.lossRelErr = Math.abs(torch.check.loss - ours.loss) / Math.max(Math.abs(ours.loss), 1e-30);
      }
    }
    for (const r of rows) {
      const t = torch?.rows.find((x) => x.checkpointing === r.checkpointing && !x.compile);
      if (!torch) continue;
      const tc = torch.rows.find((x) => x.checkpointing === r.checkpointing && x.compile);
      if (tc) r.torchCompileMs = tc.ms;
      r.torchMs = t?.ms ?? null;
      r.torchTokensPerSec = t?.tokensPerSec ?? null;
      r.torchPeakReservedBytes = t?.peakReservedBytes ?? null;
      r.speedup = r.ms != null && t?.ms != null ? t.ms / r.ms : null;
    }

    console.log(`\n== backbone: training step of a frozen encoder with ${ADAPTER_CONFIG} adapters${opts.quick ? ' (--quick)' : ''} ==`);
    const b = head.build;
    console.log(`device:  ${head.device} (${head.deviceName})`);
    console.log(`build:   fused-adapters ${b.version}, blas ${b.blas ?? 'none'}, cuBLAS ${b.cublas ?? 'n/a'}, cudaUsable ${b.cudaUsable}, CPU threads ${b.cpuThreads}`);
    console.log(`date:    ${head.date}`);
    console.log(
      `model:   BERT ${shape.layers} layers, hidden ${shape.hidden}, ${shape.heads} heads, intermediate ${shape.intermediate}, vocab ${shape.vocab}; ` +
        `${dtype}; batch ${shape.batch} × ${shape.seq} tokens`,
    );
    console.log(`         ${summary.split('\n').join('\n         ')}`);
    console.log(`         RANDOM weights (${stored} checkpoint, ${(ckpt.fileBytes / MiB).toFixed(0)} MiB, written in ${(ckpt.ms / 1e3).toFixed(1)} s, loaded in ${(loadMs / 1e3).toFixed(1)} s)\n`);
    printTable(rows, torch, device);
    printNotes(rows, torch, check, device, plan);

    return {
      suite: 'backbone',
      quick: opts.quick,
      device: head.device,
      deviceName: head.deviceName,
      date: head.date,
      build: head.build,
      model: {
        architecture: 'bert', ...shape, dtype, checkpointDType: stored, weights: 'random',
        init: { std: INIT_STD, layerNorm: [1, 0], bias: 0, seed: SEED },
        parameters: ckpt.parameters, trainableParameters: trainableCount,
        adapter: ADAPTER_CONFIG, numLabels: NUM_LABELS, dropout: DROPOUT, training: TRAINING,
        paddedSequences: batch.attentionMask.reduce((n, m, i) => n + (i % batch.T === batch.T - 1 && m === 0 ? 1 : 0), 0),
      },
      setup: { writeMs: ckpt.ms, loadMs, fileBytes: ckpt.fileBytes },
      timing: plan,
      rows,
      check,
      torch,
    };
  } finally {
    model?.dispose();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

export const backboneSuite: Suite = {
  describe: 'frozen BERT encoder with seq_bn adapters: forward+backward tokens/s (± checkpointing) vs PyTorch',
  run: runBackboneSuite,
};
