// The `adapter` bench suite: the bottleneck adapter's forward and backward as the fused
// kernels, the cuBLAS path, and a chain of separate ops, against the copy bandwidth and
// against PyTorch; then the batched (many adapters in one batch) forward.
import {
  activation,
  activationGrad,
  add,
  adapterBackward,
  adapterForward,
  adapterForwardBatched,
  colSum,
  matmul,
  randn,
  scale,
  Tensor,
} from '../lib';
import type { AdapterPath, AdapterSaved, AdapterWeights } from '../lib';
import {
  BenchOptions,
  copyBandwidth,
  CopyBandwidth,
  deviceKind,
  errorMessage,
  findTorchPython,
  formatTable,
  measure,
  printHeader,
  progress,
  runHeader,
  runPythonJson,
  sourceScript,
  Suite,
  Timing,
  TimingPlan,
  Work,
} from './bench';
import { mulberry32 } from '../lib/core/random';

// ---------------------------------------------------------------- configuration

interface Shape {
  d: number; // model width
  r: number; // bottleneck width
  N: number; // tokens (rows)
}

type BenchDType = 'bfloat16' | 'float32';
type Pass = 'forward' | 'backward';
type Variant = 'fused' | 'cublas' | 'unfused';

const ACTIVATION = 'relu';
const SCALING = 1;
const DTYPES: readonly BenchDType[] = ['bfloat16', 'float32'];
const PASSES: readonly Pass[] = ['forward', 'backward'];

const GPU_SHAPES: readonly Shape[] = [
  { d: 768, r: 48, N: 16384 },
  { d: 1024, r: 64, N: 16384 },
  { d: 4096, r: 64, N: 16384 },
  { d: 4096, r: 256, N: 8192 },
  { d: 8192, r: 128, N: 8192 },
];

/**
 * Issue 16's CPU shapes, then the GPU shapes at a token count two CPU cores get through in about two
 * minutes in all.
 */
const CPU_SHAPES: readonly Shape[] = [
  { d: 768, r: 48, N: 4096 },
  { d: 4096, r: 64, N: 2048 },
  ...GPU_SHAPES.map((s) => ({ ...s, N: s.d <= 1024 ? 512 : 128 })),
];

/** --quick: a small and a large width. */
function pickShapes(device: string, quick: boolean): Shape[] {
  const all = deviceKind(device) === 'cpu' ? CPU_SHAPES : GPU_SHAPES;
  return all.filter((s, i) => !quick || i < 2);
}

/** On the CPU the adapter ops have one path ('cpu'): 'fused' runs it; 'cublas' would repeat it. */
function variantsFor(device: string): Variant[] {
  return deviceKind(device) === 'cpu' ? ['fused', 'unfused'] : ['fused', 'cublas', 'unfused'];
}

/** GPU runs are cheap: a fixed 100. CPU: 50, fewer (at least 10) for a cell slower than budgetMs/50. */
function timingPlan(device: string): TimingPlan {
  return deviceKind(device) === 'cpu'
    ? { warmup: 5, runs: 50, minRuns: 10, budgetMs: 3000 }
    : { warmup: 10, runs: 100, minRuns: 100 };
}

/** Same rules for PyTorch, with a smaller CPU budget: its bf16 CPU matmuls are slow. */
function torchPlan(device: string): TimingPlan {
  return deviceKind(device) === 'cpu'
    ? { warmup: 5, runs: 50, minRuns: 10, budgetMs: 1500 }
    : { warmup: 10, runs: 100, minRuns: 100 };
}

const elemSize = (dtype: BenchDType): number => (dtype === 'float32' ? 4 : 2);

/**
 * The fewest bytes the pass must move: forward reads x and writes out (2·N·d), backward
 * reads dOut and x and writes dx (3·N·d); both read the weights (2·d·r + d + r) once.
 */
function floorBytes(s: Shape, dtype: BenchDType, pass: Pass): number {
  const activations = (pass === 'forward' ? 2 : 3) * s.N * s.d;
  const weights = 2 * s.d * s.r + s.d + s.r;
  return (activations + weights) * elemSize(dtype);
}

// ---------------------------------------------------------------- inputs and the timed work

interface Inputs {
  x: Tensor;
  w: AdapterWeights;
  dOut: Tensor;
}

function makeInputs(s: Shape, dtype: BenchDType, device: string): Inputs {
  const o = { dtype, device };
  return {
    x: randn([s.N, s.d], { ...o, seed: 1 }),
    w: {
      downWeight: randn([s.r, s.d], { ...o, seed: 2, std: 1 / Math.sqrt(s.d) }),
      downBias: randn([s.r], { ...o, seed: 3, std: 0.02 }),
      upWeight: randn([s.d, s.r], { ...o, seed: 4, std: 1 / Math.sqrt(s.r) }),
      upBias: randn([s.d], { ...o, seed: 5, std: 0.02 }),
    },
    dOut: randn([s.N, s.d], { ...o, seed: 6 }),
  };
}

function disposeInputs(inp: Inputs): void {
  for (const t of [inp.x, inp.dOut, inp.w.downWeight, inp.w.downBias, inp.w.upWeight, inp.w.upBias]) t.dispose();
}

/** Pushes t onto keep and returns it: each op's output is freed after the run. */
function kept(keep: Tensor[], t: Tensor): Tensor {
  keep.push(t);
  return t;
}

/** The library's adapter forward on one path; `seen` gets the path it reports. */
function adapterForwardWork(inp: Inputs, path: AdapterPath, seen: { path?: string }): Work {
  return (keep) => {
    const { out, saved, path: ran } = adapterForward(inp.x, inp.w, { activation: ACTIVATION, scaling: SCALING, path });
    keep.push(out, saved.hPre);
    seen.path = ran;
  };
}

function adapterBackwardWork(inp: Inputs, saved: AdapterSaved, path: AdapterPath, seen: { path?: string }): Work {
  return (keep) => {
    const g = adapterBackward(inp.dOut, saved, { path });
    keep.push(g.dx, g.dDownWeight, g.dDownBias, g.dUpWeight, g.dUpBias);
    if (g.dScaling) keep.push(g.dScaling);
    seen.path = g.path;
  };
}

/** out = x + s·(act(x·downᵀ + b_down)·upᵀ + b_up), one op at a time. */
function unfusedForwardWork(inp: Inputs): Work {
  const { x, w } = inp;
  return (keep) => {
    const hPre = kept(keep, add(kept(keep, matmul(x, w.downWeight, { transB: true })), w.downBias));
    const h = kept(keep, activation(hPre, ACTIVATION));
    const y = kept(keep, add(kept(keep, matmul(h, w.upWeight, { transB: true })), w.upBias));
    kept(keep, add(kept(keep, scale(y, SCALING)), x));
  };
}

/** The forward's intermediates the separate-op backward reads (computed once, outside timing). */
interface UnfusedSaved {
  hPre: Tensor; // x·downᵀ + b_down
  h: Tensor; // act(hPre)
}

function unfusedSaved(inp: Inputs): UnfusedSaved {
  const { x, w } = inp;
  const z = matmul(x, w.downWeight, { transB: true });
  const hPre = add(z, w.downBias);
  z.dispose();
  return { hPre, h: activation(hPre, ACTIVATION) };
}

/** The adapter's gradients as separate ops. */
function unfusedBackwardWork(inp: Inputs, sv: UnfusedSaved): Work {
  const { x, w, dOut } = inp;
  return (keep) => {
    // The adapter branch sees s·dOut; the residual sees dOut. With s = 1 no op is spent on it.
    const dY = SCALING === 1 ? dOut : kept(keep, scale(dOut, SCALING));
    kept(keep, matmul(dY, sv.h, { transA: true })); // dUpWeight [d, r]
    kept(keep, colSum(dY)); // dUpBias [d]
    const dH = kept(keep, matmul(dY, w.upWeight)); // [N, r]
    const dHPre = kept(keep, activationGrad(sv.hPre, dH, ACTIVATION));
    kept(keep, matmul(dHPre, x, { transA: true })); // dDownWeight [r, d]
    kept(keep, colSum(dHPre)); // dDownBias [r]
    kept(keep, add(kept(keep, matmul(dHPre, w.downWeight)), dOut)); // dx: through the adapter + residual
  };
}

// ---------------------------------------------------------------- the main table's cells

export interface AdapterRow {
  d: number;
  r: number;
  N: number;
  dtype: BenchDType;
  pass: Pass;
  variant: Variant;
  path?: string; // the path the library reported ('fused', 'cublas', 'cpu')
  ms: number | null;
  floorBytes: number;
  GBs: number | null;
  fractionOfCopy: number | null;
  runs: number;
  /** With several rounds: ms is the median of the rounds' medians, msMin the fastest round's. */
  msMin?: number | null;
  error?: string;
}

/** Builds one cell's work; what it needs beyond the inputs (saved tensors) is made lazily and freed by the caller. */
interface CellContext {
  inp: Inputs;
  saved: () => AdapterSaved; // from a forward on path 'auto': backward on either path can use it
  unfused: () => UnfusedSaved;
}

function cellWork(ctx: CellContext, pass: Pass, variant: Variant, seen: { path?: string }): Work {
  if (variant === 'unfused') {
    return pass === 'forward' ? unfusedForwardWork(ctx.inp) : unfusedBackwardWork(ctx.inp, ctx.unfused());
  }
  return pass === 'forward'
    ? adapterForwardWork(ctx.inp, variant, seen)
    : adapterBackwardWork(ctx.inp, ctx.saved(), variant, seen);
}

/** Times one cell; an op that throws (an unsupported combination) gives a row with its message. */
function benchCell(
  ctx: CellContext, s: Shape, dtype: BenchDType, pass: Pass, variant: Variant,
  device: string, copy: CopyBandwidth,
): AdapterRow {
  const bytes = floorBytes(s, dtype, pass);
  const base = { ...s, dtype, pass, variant, floorBytes: bytes };
  const seen: { path?: string } = {};
  try {
    const t: Timing = measure(device, cellWork(ctx, pass, variant, seen), timingPlan(device));
    const GBs = bytes / (t.ms * 1e6);
    return { ...base, path: seen.path, ms: t.ms, GBs, fractionOfCopy: GBs / copy.GBs, runs: t.runs };
  } catch (e) {
    return { ...base, ms: null, GBs: null, fractionOfCopy: null, runs: 0, error: errorMessage(e) };
  }
}

/** What the fused/cuBLAS backward reads: a forward on path 'auto' (either backward path accepts it). */
function forwardForBackward(inp: Inputs): AdapterSaved {
  const { out, saved } = adapterForward(inp.x, inp.w, { activation: ACTIVATION, scaling: SCALING, path: 'auto' });
  out.dispose(); // only saved.hPre is needed
  return saved;
}

/** All passes and variants of one shape and dtype, sharing one set of inputs. */
function benchShape(s: Shape, dtype: BenchDType, device: string, copy: CopyBandwidth): AdapterRow[] {
  const inp = makeInputs(s, dtype, device);
  let saved: AdapterSaved | undefined;
  let unfused: UnfusedSaved | undefined;
  const ctx: CellContext = {
    inp,
    saved: () => (saved ??= forwardForBackward(inp)),
    unfused: () => (unfused ??= unfusedSaved(inp)),
  };
  const rows: AdapterRow[] = [];
  try {
    for (const pass of PASSES) {
      for (const variant of variantsFor(device)) {
        progress(`adapter: d=${s.d} r=${s.r} N=${s.N} ${dtype} ${pass} ${variant}`);
        rows.push(benchCell(ctx, s, dtype, pass, variant, device, copy));
      }
    }
  } finally {
    saved?.hPre.dispose(); // x and the weights are the inputs', freed below
    unfused?.hPre.dispose();
    unfused?.h.dispose();
    disposeInputs(inp);
  }
  return rows;
}

// ---------------------------------------------------------------- PyTorch

interface TorchRow {
  d: number;
  r: number;
  N: number;
  dtype: string;
  pass: Pass;
  variant: 'eager' | 'compile';
  ms: number | null;
  runs: number;
  backwardGraph?: string; // 'retain_graph', or 'fresh graph per run' when a graph could not be reused
  msMin?: number | null;
  error?: string;
}

/**
 * Rounds of ours and PyTorch taken in turn (FA_BENCH_ROUNDS; default 3 on the CPU, where other load
 * moves single runs, 1 on the GPU): each cell's median of the rounds' medians, and its fastest round.
 */
function benchRounds(device: string): number {
  const n = Number(process.env.FA_BENCH_ROUNDS ?? (deviceKind(device) === 'cpu' ? 3 : 1));
  return Number.isInteger(n) && n >= 1 ? n : 1;
}

function medianOf(xs: number[]): number {
  const v = [...xs].sort((a, b) => a - b);
  return v.length % 2 ? v[v.length >> 1] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
}

/** Merges the rounds of one cell: median and min of its ms over the rounds that measured it. */
function mergeRounds<T extends { ms: number | null; msMin?: number | null }>(rounds: T[]): T {
  const ms = rounds.map((r) => r.ms).filter((x): x is number => x !== null);
  if (!ms.length || rounds.length === 1) return rounds[0];
  return { ...rounds[0], ms: medianOf(ms), msMin: Math.min(...ms) };
}

interface TorchReport {
  python: string;
  version: string;
  device: string;
  deviceName: string;
  threads: number;
  tf32: boolean;
  compile: { available: boolean; note: string };
  rows: TorchRow[];
}

/** PyTorch on the same shapes and device kind, or null (with a line saying why). */
function benchTorch(opts: BenchOptions, shapes: Shape[], threads: number): TorchReport | null {
  if (!opts.torch) {
    console.log('PyTorch: skipped (--no-torch)');
    return null;
  }
  const python = findTorchPython(opts.python);
  if (!python) {
    console.log(`PyTorch: not available (no torch in ${opts.python ?? 'python3 or /usr/bin/python3'})`);
    return null;
  }
  const plan = torchPlan(opts.device);
  const spec = {
    device: opts.device, shapes, dtypes: DTYPES, activation: ACTIVATION, scaling: SCALING, threads, seed: 0,
    warmup: plan.warmup, runs: plan.runs, minRuns: plan.minRuns, budgetMs: plan.budgetMs ?? 0,
  };
  try {
    progress(`torch: ${python} ${sourceScript('bench_torch.py')}`);
    const out = runPythonJson(python, sourceScript('bench_torch.py'), spec, 30 * 60 * 1000) as Omit<TorchReport, 'python'>;
    return { python, ...out };
  } catch (e) {
    console.log(`PyTorch: failed (${errorMessage(e)})`);
    return null;
  }
}

function torchMs(torch: TorchReport | null, row: AdapterRow, variant: TorchRow['variant']): TorchRow | undefined {
  return torch?.rows.find(
    (t) => t.variant === variant && t.d === row.d && t.r === row.r && t.N === row.N && t.dtype === row.dtype && t.pass === row.pass,
  );
}

// ---------------------------------------------------------------- batched adapters

export interface BatchedRow {
  adapters: number; // A: the rows are spread over A adapters
  d: number;
  r: number;
  N: number;
  dtype: BenchDType;
  ms: number | null;
  runs: number;
  rowsPerSec: number | null;
  throughputVsOne: number | null; // ms(A = 1) / ms(A)
  path?: string;
  error?: string;
}

const ADAPTER_COUNTS = [1, 8, 32];

/** Seeded row → adapter assignment (mulberry32): the same on every run and device. */
function randomAssignment(N: number, A: number, seed: number): Int32Array {
  const next = mulberry32(seed);
  return Int32Array.from({ length: N }, () => Math.floor(next() * A));
}

/** GPU: the spec's (4096, 64, 16384) bf16; CPU: a small fp32 shape. */
function batchedShape(device: string): { s: Shape; dtype: BenchDType } {
  return deviceKind(device) === 'cpu'
    ? { s: { d: 768, r: 48, N: 1024 }, dtype: 'float32' }
    : { s: { d: 4096, r: 64, N: 16384 }, dtype: 'bfloat16' };
}

/** Stacked weights for A adapters; `free` releases them. */
function batchedWork(
  x: Tensor, s: Shape, A: number, dtype: BenchDType, device: string, seen: { path?: string },
): { work: Work; free: () => void } {
  const o = { dtype, device };
  const w = {
    downWeight: randn([A, s.r, s.d], { ...o, seed: 11, std: 1 / Math.sqrt(s.d) }),
    downBias: randn([A, s.r], { ...o, seed: 12, std: 0.02 }),
    upWeight: randn([A, s.d, s.r], { ...o, seed: 13, std: 1 / Math.sqrt(s.r) }),
    upBias: randn([A, s.d], { ...o, seed: 14, std: 0.02 }),
  };
  const rows = randomAssignment(s.N, A, 42);
  return {
    work: (keep) => {
      const res = adapterForwardBatched(x, w, rows, { activation: ACTIVATION, scaling: SCALING });
      keep.push(res.out);
      seen.path = res.path;
    },
    free: () => Object.values(w).forEach((t) => t.dispose()),
  };
}

function benchBatched(device: string): BatchedRow[] {
  const { s, dtype } = batchedShape(device);
  const x = randn([s.N, s.d], { dtype, device, seed: 10 });
  const rows: BatchedRow[] = [];
  try {
    for (const A of ADAPTER_COUNTS) {
      progress(`batched: ${A} adapter(s), d=${s.d} r=${s.r} N=${s.N} ${dtype}`);
      const base = { adapters: A, ...s, dtype };
      const seen: { path?: string } = {};
      let free = (): void => {};
      try {
        const b = batchedWork(x, s, A, dtype, device, seen);
        free = b.free;
        const t = measure(device, b.work, timingPlan(device));
        rows.push({ ...base, ms: t.ms, runs: t.runs, rowsPerSec: s.N / (t.ms / 1e3), throughputVsOne: null, path: seen.path });
      } catch (e) {
        rows.push({ ...base, ms: null, runs: 0, rowsPerSec: null, throughputVsOne: null, error: errorMessage(e) });
      } finally {
        free();
      }
    }
  } finally {
    x.dispose();
  }
  const one = rows.find((r) => r.adapters === 1)?.ms ?? null;
  for (const row of rows) row.throughputVsOne = one !== null && row.ms !== null ? one / row.ms : null;
  return rows;
}

// ---------------------------------------------------------------- printing

const NA = 'n/a';

function fmtMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return NA;
  return ms >= 100 ? ms.toFixed(1) : ms >= 1 ? ms.toFixed(2) : ms.toFixed(3);
}

const fmtGBs = (v: number | null): string => (v === null ? NA : v.toFixed(1));
const fmtPct = (v: number | null): string => (v === null ? NA : (100 * v).toFixed(1) + '%');
const DTYPE_LABEL: Record<BenchDType, string> = { bfloat16: 'bf16', float32: 'fp32' };

/** Run counts of a table row's cells: "50", or "10-50" when the budget cut some cells short. */
function runsLabel(counts: number[]): string {
  const ok = counts.filter((n) => n > 0);
  if (ok.length === 0) return '0';
  const lo = Math.min(...ok);
  const hi = Math.max(...ok);
  return lo === hi ? String(lo) : `${lo}-${hi}`;
}

/** A torch cell: its ms, with its run count in brackets when it ran fewer than the plan. */
function fmtTorch(t: TorchRow | undefined, target: number): string {
  if (!t) return '-';
  if (t.ms === null) return NA;
  return t.runs < target ? `${fmtMs(t.ms)} [${t.runs}]` : fmtMs(t.ms);
}

/**
 * The CPU floor of a pass in ms: its GEMM FLOPs (forward 2, backward 4 products of 2·N·d·r) at the
 * measured sgemm rate, plus its floor bytes at the copy bandwidth.
 */
function cpuFloorMs(row: { d: number; r: number; N: number; pass: Pass; floorBytes: number }, sgemmGflops: number, copyGBs: number): number {
  const flops = (row.pass === 'forward' ? 2 : 4) * 2 * row.N * row.d * row.r;
  return (flops / (sgemmGflops * 1e9) + row.floorBytes / (copyGBs * 1e9)) * 1e3;
}

/** This machine's fp32 sgemm rate (GFLOP/s) through the package's matmul: a 1024³ product, median of 10. */
function sgemmRate(): number {
  const a = randn([1024, 1024], { seed: 1 });
  const b = randn([1024, 1024], { seed: 2 });
  const ms: number[] = [];
  for (let i = 0; i < 13; i++) {
    const t0 = process.hrtime.bigint();
    matmul(a, b).dispose();
    if (i >= 3) ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  ms.sort((x, y) => x - y);
  return (2 * 1024 ** 3) / (ms[ms.length >> 1] / 1e3) / 1e9;
}

function printMainTable(rows: AdapterRow[], variants: Variant[], torch: TorchReport | null, device: string, floor?: { sgemmGflops: number; copyGBs: number }): void {
  const showCompile = !!torch?.compile.available;
  const showMin = rows.some((r) => r.msMin != null);
  const header = ['d', 'r', 'N', 'dtype', 'pass', 'runs'];
  if (floor) header.push('floor ms');
  for (const v of variants) header.push(`${v} ms`, 'GB/s', '%copy');
  if (torch) header.push('torch ms', '× eager');
  if (showCompile) header.push('compile ms');
  if (floor) header.push('ours ÷ floor');
  if (showMin) header.push('ours min', 'torch min', 'eager ÷ ours (min)');
  const torchTarget = torchPlan(device).runs;

  const lines: string[][] = [];
  const groups = new Map<string, AdapterRow[]>();
  for (const row of rows) {
    const key = `${row.d}/${row.r}/${row.N}/${row.dtype}/${row.pass}`;
    groups.set(key, [...(groups.get(key) ?? []), row]);
  }
  for (const group of groups.values()) {
    const first = group[0] as AdapterRow;
    const line = [String(first.d), String(first.r), String(first.N), DTYPE_LABEL[first.dtype], first.pass];
    line.push(runsLabel(group.map((r) => r.runs)));
    if (floor) line.push(cpuFloorMs(first, floor.sgemmGflops, floor.copyGBs).toFixed(2));
    for (const v of variants) {
      const cell = group.find((r) => r.variant === v);
      line.push(fmtMs(cell?.ms), fmtGBs(cell?.GBs ?? null), fmtPct(cell?.fractionOfCopy ?? null));
    }
    if (torch) {
      const eager = torchMs(torch, first, 'eager');
      const fused = group.find((r) => r.variant === 'fused')?.ms ?? null;
      line.push(fmtTorch(eager, torchTarget));
      line.push(eager?.ms != null && fused !== null ? `${(eager.ms / fused).toFixed(2)}×` : NA);
    }
    if (showCompile) line.push(fmtTorch(torchMs(torch, first, 'compile'), torchTarget));
    if (floor) {
      const fused = group.find((r) => r.variant === 'fused')?.ms ?? null;
      line.push(fused !== null ? `${(fused / cpuFloorMs(first, floor.sgemmGflops, floor.copyGBs)).toFixed(2)}×` : NA);
    }
    if (showMin) {
      const mine = group.find((r) => r.variant === 'fused')?.msMin ?? null;
      const theirs = torchMs(torch, first, 'eager')?.msMin ?? null;
      line.push(fmtMs(mine ?? undefined), fmtMs(theirs ?? undefined), mine && theirs ? `${(theirs / mine).toFixed(2)}×` : NA);
    }
    lines.push(line);
  }
  console.log(formatTable(header, lines));
}

function printNotes(rows: AdapterRow[], torch: TorchReport | null, device: string): void {
  const notes = [
    `fused/cublas = adapterForward/adapterBackward with path 'fused'/'cublas'; unfused = one op at a time.`,
    `GB/s = floor bytes / time (forward 2·N·d, backward 3·N·d elements, plus the weights); %copy = GB/s over the copy bandwidth.`,
    `runs = timed runs of our cells (median reported after ${timingPlan(device).warmup} warm-up runs).`,
  ];
  if (deviceKind(device) === 'cpu') {
    notes.push(`CPU: the adapter ops have one path ('cpu'), shown as fused; no cublas column. Timed with hrtime.`);
  } else {
    notes.push(`CUDA: each run timed alone with CUDA events on the device stream (host launch gaps included).`);
    notes.push(`The fused backward supports bf16/fp16 only: fp32 fused backward is n/a by design.`);
  }
  if (torch) {
    notes.push(`torch = PyTorch ${torch.version} eager on ${torch.device} (${torch.threads} thread(s)); [n] = it ran n timed runs.`);
    notes.push(`× eager = torch ms / fused ms (above 1: fused is faster). torch.compile: ${torch.compile.note}.`);
  }
  // One line per distinct failure, so that every n/a is explained.
  const ours = rows.map((r) => ({ cell: `${r.variant} ${r.pass} ${DTYPE_LABEL[r.dtype]}`, error: r.error }));
  const theirs = (torch?.rows ?? []).map((t) => ({ cell: `torch ${t.variant} ${t.pass} ${DTYPE_LABEL[t.dtype as BenchDType] ?? t.dtype}`, error: t.error }));
  notes.push(...failureNotes([...ours, ...theirs]));
  console.log(notes.map((n) => `  ${n}`).join('\n'));
}

/** "n/a (cells): message", one line per distinct message. */
function failureNotes(cells: { cell: string; error?: string }[]): string[] {
  const byMessage = new Map<string, Set<string>>();
  for (const { cell, error } of cells) {
    if (error) byMessage.set(error, (byMessage.get(error) ?? new Set<string>()).add(cell));
  }
  return [...byMessage].map(([msg, where]) => `n/a (${[...where].join(', ')}): ${msg}`);
}

function printBatched(rows: BatchedRow[]): void {
  const header = ['adapters', 'd', 'r', 'N', 'dtype', 'runs', 'ms', 'Mrows/s', 'vs 1 adapter', 'path'];
  const lines = rows.map((b) => [
    String(b.adapters), String(b.d), String(b.r), String(b.N), DTYPE_LABEL[b.dtype], String(b.runs), fmtMs(b.ms),
    b.rowsPerSec === null ? NA : (b.rowsPerSec / 1e6).toFixed(2),
    b.throughputVsOne === null ? NA : `${b.throughputVsOne.toFixed(2)}×`,
    b.error ? `error: ${b.error}` : (b.path ?? ''),
  ]);
  console.log(formatTable(header, lines, 0));
  console.log(`  rows assigned to adapters at random (seeded); vs 1 adapter = ms(1 adapter) / ms.`);
}

// ---------------------------------------------------------------- the suite

async function runAdapterSuite(opts: BenchOptions): Promise<object> {
  const { device } = opts;
  const head = runHeader(device);
  const shapes = pickShapes(device, opts.quick);
  const variants = variantsFor(device);

  progress(`copy bandwidth on ${device}...`);
  const copy = copyBandwidth(device);
  const floor = deviceKind(device) === 'cpu' ? { sgemmGflops: sgemmRate(), copyGBs: copy.GBs } : undefined;
  const rounds = benchRounds(device);
  const ourRounds: AdapterRow[][] = [];
  const torchRounds: (TorchReport | null)[] = [];
  for (let k = 0; k < rounds; k++) {
    if (rounds > 1) progress(`adapter: round ${k + 1} of ${rounds}`);
    const mine: AdapterRow[] = [];
    for (const s of shapes) for (const dtype of DTYPES) mine.push(...benchShape(s, dtype, device, copy));
    ourRounds.push(mine);
    torchRounds.push(benchTorch(opts, shapes, head.build.cpuThreads));
  }
  const rows = ourRounds[0].map((r, i) => {
    const m = mergeRounds(ourRounds.map((round) => round[i]));
    const GBs = m.ms !== null ? m.floorBytes / (m.ms * 1e6) : null;
    return { ...m, GBs, fractionOfCopy: GBs !== null ? GBs / copy.GBs : null };
  });
  const batched = benchBatched(device);
  const firstTorch = torchRounds.find((t) => t !== null) ?? null;
  const torch: TorchReport | null = firstTorch && {
    ...firstTorch,
    rows: firstTorch.rows.map((t, i) => mergeRounds(torchRounds.filter((r): r is TorchReport => r !== null).map((r) => r.rows[i]))),
  };

  console.log(`\n== adapter microbenchmarks${opts.quick ? ' (--quick)' : ''} ==`);
  printHeader(head, copy);
  console.log(`adapter: activation ${ACTIVATION}, scaling ${SCALING}\n`);
  if (rounds > 1) console.log(`rounds: ${rounds}, ours then PyTorch in turn; ms = the median of the rounds' medians, min = the fastest round's median\n`);
  if (floor) console.log(`floor: the GEMM FLOPs at ${floor.sgemmGflops.toFixed(1)} GFLOP/s (this package's fp32 matmul, 1024³, median of 10) plus the floor bytes at the copy bandwidth\n`);
  printMainTable(rows, variants, torch, device, floor);
  printNotes(rows, torch, device);
  console.log(`\n== batched adapters (adapterForwardBatched) ==`);
  printBatched(batched);

  return {
    suite: 'adapter',
    quick: opts.quick,
    device: head.device,
    deviceName: head.deviceName,
    date: head.date,
    build: head.build,
    copyBandwidthGBs: copy.GBs,
    copy,
    cpuFloor: floor ?? null,
    timing: { ours: timingPlan(device), torch: torchPlan(device), rounds },
    activation: ACTIVATION,
    scaling: SCALING,
    rows,
    torch,
    batched,
  };
}

export const adapterSuite: Suite = {
  describe: 'adapter forward/backward: fused vs cuBLAS vs separate ops vs PyTorch; batched adapters',
  run: runAdapterSuite,
};
