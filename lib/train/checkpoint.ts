// Training checkpoints: trainable tensors, optimizer moments and the trainer's position,
// written atomically (each file to a temporary name, then renamed; the JSON that names
// the tensor file last), so a crash mid-save leaves the previous checkpoint usable.
import * as fs from 'fs';
import { writeTextAtomic } from '../atomicWrite';
import * as path from 'path';
import { SafetensorsFile, writeSafetensors, TensorToWrite } from '../backbone/safetensors';

export interface TrainerPosition {
  step: number; // optimizer steps done
  epoch: number;
  index: number; // next batch within the epoch
}

export interface CheckpointState {
  version: 1;
  position: TrainerPosition;
  seed: number;
  optimizer: { step: number; lr: number; betas: [number, number]; eps: number; weightDecay: number };
  entries: Record<string, { step: number; hasMaster: boolean }>;
  best: { score: number; step: number; metrics?: import('./metrics').Metrics } | null;
  evalsWithoutImprovement: number;
  labels: (string | number)[];
  tensorsFile: string;
}

export interface CheckpointData {
  state: CheckpointState;
  params: Map<string, Float32Array>;
  expAvg: Map<string, Float32Array>;
  expAvgSq: Map<string, Float32Array>;
  master: Map<string, Float32Array>;
  best: Map<string, Float32Array>; // the best parameters so far (empty when none)
}

function writeJsonAtomic(file: string, value: unknown): void {
  writeTextAtomic(file, JSON.stringify(value, null, 2));
}

export function saveCheckpoint(dir: string, data: CheckpointData, shapes: Map<string, number[]>): void {
  fs.mkdirSync(dir, { recursive: true });
  const tensors: Record<string, TensorToWrite> = {};
  const put = (prefix: string, m: Map<string, Float32Array>) => {
    for (const [k, v] of m) tensors[`${prefix}${k}`] = { dtype: 'F32', shape: shapes.get(k) ?? [v.length], data: v };
  };
  put('param.', data.params);
  put('exp_avg.', data.expAvg);
  put('exp_avg_sq.', data.expAvgSq);
  put('master.', data.master);
  put('best.', data.best);
  const file = `checkpoint-${data.state.position.step}.safetensors`;
  writeSafetensors(path.join(dir, file), tensors, { format: 'fused-adapters-checkpoint' });
  const previous = readState(dir);
  writeJsonAtomic(path.join(dir, 'trainer_state.json'), { ...data.state, tensorsFile: file });
  if (previous && previous.tensorsFile !== file) fs.rmSync(path.join(dir, previous.tensorsFile), { force: true });
}

function readState(dir: string): CheckpointState | null {
  const f = path.join(dir, 'trainer_state.json');
  if (!fs.existsSync(f)) return null;
  try {
    return JSON.parse(fs.readFileSync(f, 'utf8')) as CheckpointState;
  } catch (e) {
    throw new Error(`checkpoint: ${f} is not valid JSON (${(e as Error).message})`);
  }
}

export function loadCheckpoint(dir: string): CheckpointData {
  const state = readState(dir);
  if (!state) throw new Error(`checkpoint: no trainer_state.json in ${dir}`);
  if (state.version !== 1) throw new Error(`checkpoint: unsupported version ${String(state.version)} in ${dir}`);
  const st = SafetensorsFile.open(path.join(dir, state.tensorsFile));
  const maps = { param: new Map(), exp_avg: new Map(), exp_avg_sq: new Map(), master: new Map(), best: new Map() } as Record<string, Map<string, Float32Array>>;
  for (const n of st.names()) {
    const dot = n.indexOf('.');
    const kind = n.slice(0, dot);
    if (!maps[kind]) throw new Error(`checkpoint: unexpected tensor '${n}' in ${state.tensorsFile}`);
    maps[kind].set(n.slice(dot + 1), st.getFloat32(n));
  }
  return { state, params: maps.param, expAvg: maps.exp_avg, expAvgSq: maps.exp_avg_sq, master: maps.master, best: maps.best };
}

export function hasCheckpoint(dir: string): boolean {
  return fs.existsSync(path.join(dir, 'trainer_state.json'));
}
