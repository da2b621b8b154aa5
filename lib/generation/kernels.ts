// The generation kernels (native/generation.h): the paged KV-cache write, decode attention over the
// paged cache and the sampler. Each runs on the device its inputs live on.
import { native } from '../backend';
import { handle, Tensor } from '../tensor';

/** pool [slots, ...] row slots[i] = src [N, ...] row i, in place; slot −1 skips the row (padding). slots: int32 [N]. */
export function cacheScatter(pool: Tensor, src: Tensor, slots: Tensor): void {
  const op = 'cacheScatter';
  native().cacheScatter(handle(pool, op, 'pool'), handle(src, op, 'src'), handle(slots, op, 'slots'));
}

export interface DecodeAttentionOptions {
  /** Default 1/√D. */
  scale?: number;
  /** Parts each sequence's keys are split into, their softmaxes merged after (0 or absent: chosen for the device). */
  splits?: number;
}

/**
 * One query token per sequence against its cached keys and values: q [B, Hq, D]; kPool, vPool
 * [slots, Hkv, D] (pages of pageSize rows); pageTable int32 [B, maxPages]; seqLens int32 [B] (each
 * at most maxLength, a bound the host knows). Returns softmax(scale·q·kᵀ)·v, [B, Hq, D] (zeros for an
 * empty sequence). Query head h reads K/V head h / (Hq / Hkv).
 */
export function decodeAttention(
  q: Tensor, kPool: Tensor, vPool: Tensor, pageTable: Tensor, seqLens: Tensor, pageSize: number, maxLength: number,
  opts: DecodeAttentionOptions = {},
): Tensor {
  const op = 'decodeAttention';
  return new Tensor(native().decodeAttention(handle(q, op, 'q'), handle(kPool, op, 'kPool'), handle(vPool, op, 'vPool'),
    handle(pageTable, op, 'pageTable'), handle(seqLens, op, 'seqLens'), pageSize, maxLength, opts.scale, opts.splits));
}

/** Columns of sampleTokens' params. */
export const SAMPLE_PARAMS = ['temperature', 'topK', 'topP', 'repetitionPenalty', 'u'] as const;

/**
 * One token per row of logits [B, V] on their device: params fp32 [B, 5] = (temperature ≤ 0 for
 * greedy, topK (0: off), topP (1: off), repetitionPenalty (1: off), u ∈ [0, 1) drawn by the caller);
 * penaltyIds int32 [B, P] lists each row's distinct earlier tokens (−1 pads). The kept set and the
 * draw are defined in native/generation.h; no sort of the vocabulary. Returns int32 [B] (−1 for a row
 * without a finite logit).
 */
export function sampleTokens(logits: Tensor, params: Tensor, penaltyIds?: Tensor): Tensor {
  const op = 'sampleTokens';
  return new Tensor(native().sampleTokens(handle(logits, op, 'logits'), handle(params, op, 'params'),
    penaltyIds === undefined ? null : handle(penaltyIds, op, 'penaltyIds')));
}
