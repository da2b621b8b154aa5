// `npm run bench`: microbenchmarks, one suite per run.
//   node dist/scripts/bench.js [suite] [--device cpu|cuda:N] [--json FILE] [--quick]
//                              [--python PATH] [--no-torch]
// Suites live in their own modules (scripts/bench_<suite>.ts) and are loaded on demand;
// this module parses the command line, dispatches, writes the JSON report, and holds the
// helpers every suite shares: timing, copy bandwidth, the PyTorch runner, table output.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { buildInfo, defaultDevice, devices, empty, synchronize, Tensor, zeros } from '../lib';
import { cudaTimer } from '../lib/backend';

// ---------------------------------------------------------------- suites and options

export interface BenchOptions {
  suite: string;
  device: string; // 'cpu' or 'cuda:N'
  json: string; // where the report goes
  quick: boolean; // fewer shapes: a smoke run
  python?: string; // a Python with torch, instead of searching for one
  torch: boolean; // false with --no-torch
}

/** A suite runs its benchmarks, prints its tables, and returns the JSON report. */
export interface Suite {
  describe: string;
  run(opts: BenchOptions): Promise<object>;
}

// Loaded lazily: a suite may need things (model files, memory) the others do not.
const SUITES: Record<string, () => Promise<Suite>> = {
  adapter: async () => (await import('./bench_adapter.js')).adapterSuite,
  backbone: async () => (await import('./bench_backbone.js')).backboneSuite,
  decoder: async () => (await import('./bench_decoder.js')).decoderSuite,
  generate: async () => (await import('./bench_generate.js')).generateSuite,
  serve: async () => (await import('./bench_serve.js')).serveSuite,
  compose: async () => (await import('./bench_compose.js')).composeSuite,
};

const USAGE = `usage: node dist/scripts/bench.js [suite] [options]
  suite             one of: ${Object.keys(SUITES).join(', ')} (default: adapter)
  --device DEV      cpu | cuda | cuda:N (default: cuda:0 when usable, else cpu)
  --json FILE       the JSON report (default: bench-results/<suite>-<cpu|cuda>.json)
  --quick           fewer shapes (a smoke run)
  --python PATH     a Python with torch for the PyTorch comparison (default: python3, /usr/bin/python3)
  --no-torch        skip the PyTorch comparison`;

/** A bad command line: reported with exit code 2 (and the usage, unless it would not help). */
class UsageError extends Error {
  constructor(message: string, readonly showUsage = true) {
    super(message);
  }
}

export function deviceKind(device: string): 'cpu' | 'cuda' {
  return device === 'cpu' ? 'cpu' : 'cuda';
}

function parseArgs(argv: string[]): BenchOptions {
  const positional: string[] = [];
  let device: string | undefined;
  let json: string | undefined;
  let python: string | undefined;
  let quick = false;
  let torch = true;
  const value = (i: number, flag: string): string => {
    const v = argv[i];
    if (v === undefined || v.startsWith('--')) throw new UsageError(`${flag} needs a value`);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--device') device = value(++i, a);
    else if (a === '--json') json = value(++i, a);
    else if (a === '--python') python = value(++i, a);
    else if (a === '--quick') quick = true;
    else if (a === '--no-torch') torch = false;
    else if (a.startsWith('-')) throw new UsageError(`unknown option '${a}'`);
    else positional.push(a);
  }
  if (positional.length > 1) throw new UsageError(`one suite at a time; got ${positional.join(', ')}`);
  const suite = positional[0] ?? 'adapter';
  if (!(suite in SUITES))
    throw new UsageError(`unknown suite '${suite}' (available: ${Object.keys(SUITES).join(', ')})`);
  device = normaliseDevice(device ?? defaultDevice());
  json = json ?? path.join('bench-results', `${suite}-${deviceKind(device)}.json`);
  return { suite, device, json, quick, python, torch };
}

function normaliseDevice(device: string): string {
  if (device === 'cuda') device = 'cuda:0';
  if (device !== 'cpu' && !/^cuda:\d+$/.test(device))
    throw new UsageError(`invalid device '${device}' (expected cpu, cuda or cuda:N)`);
  const info = buildInfo();
  // Fail once, clearly, rather than in every cell.
  if (device !== 'cpu' && !info.cudaUsable)
    throw new UsageError(`device ${device} requested but CUDA is not usable: ${info.cudaReason ?? 'unknown reason'}`, false);
  return device;
}

// ---------------------------------------------------------------- timing

/** One run's work; it pushes every tensor it creates onto `keep` (disposed after timing, even on a throw). */
export type Work = (keep: Tensor[]) => void;

export interface Timing {
  ms: number; // median of the timed runs
  runs: number; // how many runs were timed
}

export interface TimingPlan {
  warmup: number;
  runs: number; // the target count of timed runs
  minRuns: number; // never fewer, whatever the budget
  budgetMs?: number; // CPU only: cap on the timed runs' total time, estimated from the warm-up
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/**
 * Times one run alone. CUDA: events on the device stream around the work (timerStop waits
 * for them), so the time is what the GPU took, host launch gaps included. CPU: the ops are
 * synchronous, so wall-clock around the call is the op time. Outputs are freed after the
 * timer stops so that freeing is not timed.
 */
export function timeOnce(device: string, work: Work): number {
  const keep: Tensor[] = [];
  try {
    if (device === 'cpu') {
      const t0 = process.hrtime.bigint();
      work(keep);
      return Number(process.hrtime.bigint() - t0) / 1e6;
    }
    cudaTimer.start(device);
    work(keep);
    return cudaTimer.stop(device);
  } finally {
    for (const t of keep) t.dispose();
  }
}

/** Warm-up, then the median of the timed runs (fewer on the CPU when the budget says so). */
export function measure(device: string, work: Work, plan: TimingPlan): Timing {
  if (device !== 'cpu') synchronize(device); // start from an idle stream
  const warm: number[] = [];
  for (let i = 0; i < plan.warmup; i++) warm.push(timeOnce(device, work));
  let runs = plan.runs;
  if (device === 'cpu' && plan.budgetMs !== undefined && warm.length > 0) {
    const estimate = Math.max(median(warm), 1e-3);
    runs = Math.max(plan.minRuns, Math.min(plan.runs, Math.floor(plan.budgetMs / estimate)));
  }
  const times: number[] = [];
  for (let i = 0; i < runs; i++) times.push(timeOnce(device, work));
  return { ms: median(times), runs };
}

export function errorMessage(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0] as string;
}

// ---------------------------------------------------------------- copy bandwidth

export interface CopyBandwidth {
  bytes: number; // size of the copied tensor
  ms: number;
  runs: number;
  GBs: number; // 2·bytes / time: every byte is read once and written once
}

/**
 * The practical memory-bandwidth ceiling for a bandwidth-bound op: dst.copyFrom(src),
 * device to device on the GPU (1 GiB), memcpy on the host (256 MiB).
 */
export function copyBandwidth(device: string): CopyBandwidth {
  const bytes = device === 'cpu' ? 256 * 2 ** 20 : 2 ** 30;
  const shape = [bytes / 4];
  const src = zeros(shape, { dtype: 'float32', device });
  const dst = empty(shape, { dtype: 'float32', device });
  try {
    const t = measure(device, () => dst.copyFrom(src), { warmup: 5, runs: 20, minRuns: 20 });
    return { bytes, ms: t.ms, runs: t.runs, GBs: (2 * bytes) / (t.ms * 1e6) };
  } finally {
    src.dispose();
    dst.dispose();
  }
}

// ---------------------------------------------------------------- PyTorch

/** The first Python that can import torch: --python, else python3, else /usr/bin/python3. */
export function findTorchPython(explicit?: string): string | undefined {
  const candidates = explicit ? [explicit] : ['python3', '/usr/bin/python3'];
  return candidates.find((py) => spawnSync(py, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0);
}

/**
 * Runs a Python benchmark script with a JSON spec on stdin; it prints one JSON object on
 * stdout. Its stderr (progress, warnings) passes through. Throws when it fails.
 */
export function runPythonJson(python: string, script: string, spec: object, timeoutMs: number): unknown {
  const res = spawnSync(python, [script], {
    input: JSON.stringify(spec),
    encoding: 'utf8',
    stdio: ['pipe', 'pipe', 'inherit'],
    timeout: timeoutMs,
    maxBuffer: 64 * 2 ** 20,
  });
  if (res.error) throw new Error(`${python} ${script}: ${res.error.message}`);
  if (res.status !== 0) throw new Error(`${python} ${script} exited with status ${res.status ?? res.signal}`);
  return JSON.parse(res.stdout);
}

/** A file of scripts/ in the source tree, whether this runs compiled (dist/scripts/) or not. */
export function sourceScript(name: string): string {
  const candidates = [path.resolve(__dirname, '..', '..', 'scripts', name), path.join(__dirname, name)];
  return candidates.find((p) => fs.existsSync(p)) ?? (candidates[0] as string);
}

// ---------------------------------------------------------------- report header and tables

export interface RunHeader {
  device: string;
  deviceName: string;
  date: string;
  build: ReturnType<typeof buildInfo>;
}

export function runHeader(device: string): RunHeader {
  const info = devices().find((d) => d.id === device);
  return { device, deviceName: info?.name ?? device, date: new Date().toISOString(), build: buildInfo() };
}

export function printHeader(h: RunHeader, copy: CopyBandwidth): void {
  const b = h.build;
  console.log(`device:  ${h.device} (${h.deviceName})`);
  console.log(
    `build:   fused-adapters ${b.version}, blas ${b.blas ?? 'none'}, cuBLAS ${b.cublas ?? 'n/a'}, ` +
      `cudaUsable ${b.cudaUsable}, CPU threads ${b.cpuThreads}`,
  );
  console.log(`date:    ${h.date}`);
  console.log(
    `copy:    ${copy.GBs.toFixed(1)} GB/s (copyFrom of ${copy.bytes / 2 ** 20} MiB, ` +
      `median of ${copy.runs}, 2·bytes/time)`,
  );
}

/** Right-aligned columns; first `leftCols` columns left-aligned. */
export function formatTable(header: string[], rows: string[][], leftCols = 0): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i < leftCols ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number))).join('  ');
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  return [line(header), rule, ...rows.map(line)].join('\n');
}

/** Progress goes to stderr so that stdout holds only the report. */
export function progress(msg: string): void {
  process.stderr.write(msg + '\n');
}

// ---------------------------------------------------------------- entry point

export function writeReport(file: string, report: object): void {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
}

async function main(): Promise<void> {
  let opts: BenchOptions;
  try {
    if (process.argv.includes('--help') || process.argv.includes('-h')) {
      console.log(USAGE);
      return;
    }
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`bench: ${e.message}${e.showUsage ? `\n${USAGE}` : ''}`);
    process.exitCode = 2;
    return;
  }
  const load = SUITES[opts.suite] as () => Promise<Suite>;
  const suite = await load();
  const t0 = Date.now();
  const report = await suite.run(opts);
  writeReport(opts.json, report);
  console.log(`\nwrote ${opts.json} (${opts.suite} suite, ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}

if (require.main === module) {
  main().catch((e: unknown) => {
    console.error(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    process.exitCode = 1;
  });
}
