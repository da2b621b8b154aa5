// Training checkpoints: trainable tensors, optimizer moments and the trainer's position.
// The checkpoint directory is replaced as a whole (lib/atomicDir.ts), so after a crash or kill
// at any instant it holds the previous checkpoint or the new one, complete; both files record
// the save's id and a pair from different saves is refused.
import * as fs from 'fs';
import { newSaveId, recoverDir, replaceDirAtomic } from '../atomicDir';
import { writeTextAtomic } from '../atomicWrite';
import * as path from 'path';
import { SafetensorsFile, writeSafetensors, TensorToWrite } from '../io/safetensors';
import type { AdamW } from '../optim/adamw';

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
  /** Written by saveCheckpoint; the same id is in the tensors file's metadata. */
  saveId?: string;
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

const STATE_FILE = 'trainer_state.json';
const TENSORS_FILE = /^checkpoint-\d+\.safetensors$/;
/** What a checkpoint directory holds (and per-file temporaries that older releases could leave). */
/** Whether an entry of a directory is one that saveCheckpoint writes (and so may replace). */
export const ownsCheckpointEntry = (n: string): boolean => n === STATE_FILE || TENSORS_FILE.test(n) || /^(trainer_state\.json|checkpoint-\d+\.safetensors)\.tmp-\d+-[0-9a-f]+$/.test(n);

export function saveCheckpoint(dir: string, data: CheckpointData, shapes: Map<string, number[]>): void {
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
  const saveId = newSaveId();
  replaceDirAtomic(dir, (tmp) => {
    writeSafetensors(path.join(tmp, file), tensors, { format: 'fused-adapters-checkpoint', save_id: saveId });
    writeJsonAtomic(path.join(tmp, STATE_FILE), { ...data.state, tensorsFile: file, saveId });
  }, { where: 'checkpoint', owns: ownsCheckpointEntry });
}

function readState(dir: string): CheckpointState | null {
  const f = path.join(dir, STATE_FILE);
  if (!fs.existsSync(f)) return null;
  try {
    return JSON.parse(fs.readFileSync(f, 'utf8')) as CheckpointState;
  } catch (e) {
    throw new Error(`checkpoint: ${f} is not valid JSON (${(e as Error).message})`);
  }
}

export function loadCheckpoint(dir: string): CheckpointData {
  dir = recoverDir(dir); // a save stopped between its renames
  const state = readState(dir);
  if (!state) throw new Error(`checkpoint: no trainer_state.json in ${dir}`);
  if (state.version !== 1) throw new Error(`checkpoint: unsupported version ${String(state.version)} in ${dir}`);
  const st = SafetensorsFile.open(path.join(dir, state.tensorsFile));
  const stId = st.metadata.save_id;
  if (state.saveId !== undefined && stId !== undefined && state.saveId !== stId)
    throw new Error(`checkpoint: trainer_state.json and ${state.tensorsFile} in ${dir} come from different saves `
      + `(save id ${state.saveId.slice(0, 12)}… and ${stId.slice(0, 12)}…)`);
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
  return fs.existsSync(path.join(recoverDir(dir), STATE_FILE));
}

/** The optimizer's part of a checkpoint: hyper-parameters and step counts, and its moment (and master) tensors. */
export function optimizerCheckpoint(opt: AdamW): Pick<CheckpointState, 'optimizer' | 'entries'> & Pick<CheckpointData, 'expAvg' | 'expAvgSq' | 'master'> {
  const st = opt.state();
  const expAvg = new Map<string, Float32Array>(), expAvgSq = new Map<string, Float32Array>(), master = new Map<string, Float32Array>();
  const entries: Record<string, { step: number; hasMaster: boolean }> = {};
  for (const [k, e] of Object.entries(st.entries)) {
    expAvg.set(k, e.expAvg);
    expAvgSq.set(k, e.expAvgSq);
    if (e.master) master.set(k, e.master);
    entries[k] = { step: e.step, hasMaster: !!e.master };
  }
  return { optimizer: { step: st.step, lr: st.lr, betas: st.betas, eps: st.eps, weightDecay: st.weightDecay }, entries, expAvg, expAvgSq, master };
}

/** Puts a checkpoint's optimizer state back into `opt`. */
export function restoreOptimizer(opt: AdamW, ck: CheckpointData): void {
  const entries: Record<string, { expAvg: Float32Array; expAvgSq: Float32Array; master?: Float32Array; step: number }> = {};
  for (const [k, e] of Object.entries(ck.state.entries))
    entries[k] = { expAvg: ck.expAvg.get(k)!, expAvgSq: ck.expAvgSq.get(k)!, master: e.hasMaster ? ck.master.get(k) : undefined, step: e.step };
  opt.loadState({ ...ck.state.optimizer, entries });
}
