// Loads the native addon (a prebuild or build/Release via node-gyp-build),
// lists devices and reports how the addon was built.
import * as fs from 'fs';
import * as path from 'path';

/** The raw addon: internal, used by lib/ only. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Native = any;

function packageRoot(): string {
  let dir = __dirname;
  for (;;) {
    const pj = path.join(dir, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        if (JSON.parse(fs.readFileSync(pj, 'utf8')).name === 'fused-adapters') return dir;
      } catch {
        /* keep looking */
      }
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error('fused-adapters: cannot find the package root from ' + __dirname);
    dir = up;
  }
}

let cached: Native | undefined;

export function native(): Native {
  if (cached) return cached;
  const root = packageRoot();
  let addon: Native;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const load = require('node-gyp-build');
    addon = load(root);
  } catch (e) {
    const msg = (e as Error).message;
    throw new Error(
      `fused-adapters: the native addon could not be loaded (${msg}). ` +
        'Run `npm install` (or `npm run build:native`) in the package to build it; ' +
        'building needs cmake and a C++ compiler (or node-gyp for the CPU-only build).',
    );
  }
  applyEnvBudget(addon); // throws on a malformed limit, on every call until it is fixed
  cached = addon;
  return cached;
}

export interface DeviceInfo {
  id: string;
  kind: 'cpu' | 'cuda';
  name: string;
  memoryBytes?: number;
  computeCapability?: string;
}

export interface BuildInfo {
  version: string;
  napi: number;
  cudaCompiled: boolean;
  cudaUsable: boolean;
  cudaReason?: string;
  cublas?: string;
  blas: string | null;
  /** The BLAS library file found at run time (null: none, the portable GEMM runs). */
  blasLibrary: string | null;
  /** What that library says of itself (OpenBLAS's build config with its version; MKL's version), when it says. */
  blasVersion: string | null;
  cpuThreads: number;
  cudaArchitectures?: string;
}

export interface MemoryStats {
  allocatedBytes: number;
  reservedBytes: number;
  liveTensors: number;
  /** The memory budget of this device in bytes (setMemoryBudget), null when there is none. */
  limitBytes: number | null;
}

/** Byte limits on live tensor storage: `host` for the CPU, `device` for each CUDA device; null means none. */
export interface MemoryBudget {
  host: number | null;
  device: number | null;
}

export function buildInfo(): BuildInfo {
  return native().buildInfo();
}

export function devices(): DeviceInfo[] {
  return native().devices();
}

/** 'cpu' → -1, 'cuda' → 0, 'cuda:N' → N. */
export function deviceIndex(device: string, op = 'device'): number {
  if (device === 'cpu') return -1;
  if (device === 'cuda') return 0;
  const m = typeof device === 'string' ? /^cuda:(\d+)$/.exec(device) : null;
  if (!m) throw new Error(`${op}: invalid device '${String(device)}' (expected 'cpu', 'cuda' or 'cuda:N')`);
  return Number(m[1]);
}

export function deviceName(index: number): string {
  return index < 0 ? 'cpu' : `cuda:${index}`;
}

/** 'cuda:0' when CUDA is usable, else 'cpu'. FUSED_ADAPTERS_DEVICE overrides ('cpu', 'cuda:N'). */
export function defaultDevice(): string {
  const forced = process.env.FUSED_ADAPTERS_DEVICE;
  if (forced) {
    deviceIndex(forced, 'FUSED_ADAPTERS_DEVICE');
    return forced === 'cuda' ? 'cuda:0' : forced;
  }
  return buildInfo().cudaUsable ? 'cuda:0' : 'cpu';
}

export function memoryStats(device?: string): MemoryStats {
  return native().memoryStats(deviceIndex(device ?? defaultDevice(), 'memoryStats'));
}

/**
 * Gives the allocators' caches back to the system: freed host buffers kept for reuse
 * (FUSED_ADAPTERS_HOST_CACHE_MB) and each CUDA device's cached blocks. Live tensors are untouched.
 */
export function releaseCachedMemory(): void {
  native().releaseCachedMemory();
}

/**
 * Limits the bytes of live tensor storage, process-wide: `host` for the CPU, `device` for each CUDA
 * device (null: no limit; a field left out keeps its value). An allocation that would pass the limit
 * fails with an Error naming the size, the limit and what is live, instead of the machine swapping or
 * the GPU running out. Returns the budget now in force. FUSED_ADAPTERS_HOST_MEMORY_LIMIT and
 * FUSED_ADAPTERS_DEVICE_MEMORY_LIMIT ('512MiB', '8GB', bytes) set it when the addon loads.
 */
export function setMemoryBudget(budget: Partial<MemoryBudget>): MemoryBudget {
  if (!budget || typeof budget !== 'object') throw new Error("setMemoryBudget: argument must be an object { host?, device? } of byte counts or null");
  for (const k of Object.keys(budget))
    if (k !== 'host' && k !== 'device') throw new Error(`setMemoryBudget: unknown field '${k}' (expected host, device)`);
  return native().setMemoryBudget(budget.host, budget.device);
}

/** The memory budget now in force (see setMemoryBudget). */
export function memoryBudget(): MemoryBudget {
  return native().setMemoryBudget(undefined, undefined);
}

const UNITS: Record<string, number> = {
  '': 1, b: 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40,
};

/** '512MiB', '8 GB', '1e9' → bytes; '' or 'none' → null. */
export function parseByteSize(text: string, what: string): number | null {
  const s = text.trim().toLowerCase();
  if (s === '' || s === 'none') return null;
  const m = /^(\d+(?:\.\d+)?(?:e\d+)?)\s*([a-z]*)$/.exec(s);
  const unit = m ? UNITS[m[2]] : undefined;
  if (!m || unit === undefined) throw new Error(`${what}: '${text}' is not a byte size (e.g. 2147483648, 512MiB, 8GB, none)`);
  const bytes = Math.floor(Number(m[1]) * unit);
  if (!Number.isFinite(bytes) || bytes > 9e18) throw new Error(`${what}: '${text}' is too large`);
  return bytes;
}

function applyEnvBudget(addon: Native): void {
  const env = (name: string) => {
    const v = process.env[name];
    return v === undefined ? null : parseByteSize(v, name);
  };
  const host = env('FUSED_ADAPTERS_HOST_MEMORY_LIMIT');
  const device = env('FUSED_ADAPTERS_DEVICE_MEMORY_LIMIT');
  // once per process: a worker thread loading the addon again does not undo setMemoryBudget
  if (host !== null || device !== null) addon.applyEnvMemoryBudget(host, device);
}

/** Waits for queued GPU work on the device (a no-op on the CPU). */
export function synchronize(device?: string): void {
  native().synchronize(deviceIndex(device ?? defaultDevice(), 'synchronize'));
}

/** CUDA-event timer on a device's stream (benchmarks): start(), then stop() → milliseconds. */
export const cudaTimer = {
  start(device: string): void {
    native().timerStart(deviceIndex(device, 'timerStart'));
  },
  stop(device: string): number {
    return native().timerStop(deviceIndex(device, 'timerStop'));
  },
};
