// The optimizer: AdamW (torch semantics, fp32 moments and masters), learning-rate schedules
// (transformers' constant / linear / cosine with warmup) and gradient clipping by global norm.
export { AdamW, adamwStep, defaultNoDecay } from './adamw';
export type { AdamWOptions, AdamWState, AdamWStateInput, AdamWEntryState, AdamWHyper } from './adamw';
export { LRSchedule, lrAt } from './schedule';
export type { ScheduleKind, ScheduleOptions } from './schedule';
export { clipGradNorm, globalGradNorm, sumOfSquares, scaleInPlace } from './clip';
