// Learning-rate schedules as in Hugging Face transformers (LambdaLR multipliers of the base lr):
//   constant: get_constant_schedule (get_constant_schedule_with_warmup when warmupSteps > 0)
//   linear:   get_linear_schedule_with_warmup — 0 → base over the warmup, then linearly to 0 at totalSteps
//   cosine:   get_cosine_schedule_with_warmup (num_cycles 0.5) — warmup, then a half cosine to 0
// `step` is the 0-based optimizer step: the lr of the first step is lrAt(kind, 0, ...).

export type ScheduleKind = 'constant' | 'linear' | 'cosine';

export interface ScheduleOptions {
  baseLr: number;
  warmupSteps: number;
  totalSteps: number;
}

const KINDS: readonly string[] = ['constant', 'linear', 'cosine'];

function checkKind(kind: unknown, op: string): asserts kind is ScheduleKind {
  if (typeof kind !== 'string' || !KINDS.includes(kind))
    throw new Error(`${op}: argument 'kind' must be one of ${KINDS.join(', ')}, got '${String(kind)}'`);
}

function checkCount(v: unknown, op: string, name: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0)
    throw new Error(`${op}: argument '${name}' must be an integer >= 0, got ${String(v)}`);
  return v;
}

function checkOptions(opts: ScheduleOptions, op: string): void {
  if (opts == null || typeof opts !== 'object') throw new Error(`${op}: argument 'opts' must be { baseLr, warmupSteps, totalSteps }`);
  if (typeof opts.baseLr !== 'number' || !Number.isFinite(opts.baseLr) || opts.baseLr < 0)
    throw new Error(`${op}: argument 'baseLr' must be a finite number >= 0, got ${String(opts.baseLr)}`);
  checkCount(opts.warmupSteps, op, 'warmupSteps');
  checkCount(opts.totalSteps, op, 'totalSteps');
}

/** The multiplier of the base lr at 0-based step `step` (transformers' lr_lambda). */
function multiplier(kind: ScheduleKind, step: number, warmup: number, total: number): number {
  if (step < warmup) return step / Math.max(1, warmup);
  if (kind === 'constant') return 1;
  if (kind === 'linear') return Math.max(0, (total - step) / Math.max(1, total - warmup));
  const progress = (step - warmup) / Math.max(1, total - warmup);
  return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2 * progress)));
}

/** The learning rate of 0-based optimizer step `step`. */
export function lrAt(kind: ScheduleKind, step: number, opts: ScheduleOptions): number {
  const op = 'lrAt';
  checkKind(kind, op);
  checkOptions(opts, op);
  checkCount(step, op, 'step');
  return opts.baseLr * multiplier(kind, step, opts.warmupSteps, opts.totalSteps);
}

export class LRSchedule {
  readonly kind: ScheduleKind;
  readonly opts: Readonly<ScheduleOptions>;

  constructor(kind: ScheduleKind, opts: ScheduleOptions) {
    checkKind(kind, 'LRSchedule');
    checkOptions(opts, 'LRSchedule');
    this.kind = kind;
    this.opts = Object.freeze({ baseLr: opts.baseLr, warmupSteps: opts.warmupSteps, totalSteps: opts.totalSteps });
  }

  /** The learning rate of 0-based optimizer step `step`. */
  lr(step: number): number {
    checkCount(step, 'LRSchedule.lr', 'step');
    return this.opts.baseLr * multiplier(this.kind, step, this.opts.warmupSteps, this.opts.totalSteps);
  }
}
