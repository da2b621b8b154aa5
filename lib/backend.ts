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
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const load = require('node-gyp-build');
    cached = load(root);
  } catch (e) {
    const msg = (e as Error).message;
    throw new Error(
      `fused-adapters: the native addon could not be loaded (${msg}). ` +
        'Run `npm install` (or `npm run build:native`) in the package to build it; ' +
        'building needs cmake and a C++ compiler (or node-gyp for the CPU-only build).',
    );
  }
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
  cpuThreads: number;
  cudaArchitectures?: string;
}

export interface MemoryStats {
  allocatedBytes: number;
  reservedBytes: number;
  liveTensors: number;
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
