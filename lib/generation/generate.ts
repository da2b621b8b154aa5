// Text generation with a frozen decoder and (optionally) an adapter: prefill the prompts into a paged
// KV cache, then one token per step, greedy or sampled on the model's device (temperature, top-k,
// top-p, repetition penalty; the uniform draws come from a seeded generator here, so the same seed
// gives the same text on every device), stopping at end-of-sequence tokens, stop strings or
// maxNewTokens. Prompts of different lengths take only their own pages; a finished sequence leaves
// the batch. streamText yields each token as it comes and lets the event loop run between steps;
// breaking out of it frees the cache.
import type { Decoder } from '../models/decoder/model';
import { ChatMessage, renderChat } from '../train/chat';
import type { Tokenizer } from '../train/tokenizer';
import { Tensor, tensor } from '../tensor';
import { decodeStep, prefill } from './cached';
import { PagedKVCache } from './cache';
import { sampleTokens, SAMPLE_PARAMS } from './kernels';
import { mulberry32 as rng } from '../core/random';
import { runDeferred } from '../core/deferred';

export interface GenerateOptions {
  /** Default 64. */
  maxNewTokens?: number;
  /** 0 (default): greedy. */
  temperature?: number;
  topK?: number;
  topP?: number;
  /** > 1 makes tokens already in the sequence less likely (transformers' definition). */
  repetitionPenalty?: number;
  /** Sampling seed (default 0). */
  seed?: number;
  /** Token ids that end a sequence (default: the tokenizer's EOS, when given one). */
  eos?: number[];
  /** Strings that end a sequence (text functions only); the text is cut before them. */
  stop?: string[];
  /** The adapter to run (null: none); default: the model's active adapter. */
  adapter?: string | null;
  /** One adapter per prompt (null: none), all in one batch through the batched adapter op. */
  adapters?: (string | null)[];
  /** Called once when generation ends (also when the caller stops early): timings and cache memory. */
  onStats?: (stats: GenerateStats) => void;
}

export interface GenerateStats {
  promptTokens: number;
  newTokens: number;
  /** Seconds of the prefill (the prompts) and of the decode steps after it. */
  prefillSeconds: number;
  decodeSeconds: number;
  /** KV-cache bytes of one token (keys and values, all layers), and the cache's whole preallocated pool. */
  cacheBytesPerToken: number;
  cacheBytes: number;
}


/** Throws on options generate does not take. */
export function checkGenerateOptions(o: GenerateOptions): void {
  const max = o.maxNewTokens ?? 64;
  if (!Number.isInteger(max) || max < 0) throw new Error(`generate: maxNewTokens must be a non-negative integer, got ${max}`);
  if (o.temperature !== undefined && !(o.temperature >= 0)) throw new Error(`generate: temperature must be >= 0, got ${o.temperature}`);
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) throw new Error(`generate: topP must be in (0, 1], got ${o.topP}`);
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK >= 0)) throw new Error(`generate: topK must be a non-negative integer, got ${o.topK}`);
  if (o.repetitionPenalty !== undefined && !(o.repetitionPenalty > 0)) throw new Error(`generate: repetitionPenalty must be > 0, got ${o.repetitionPenalty}`);
}

/**
 * Token-level generation: for each prompt (token ids), yields the step's new token of every row that
 * is still running ({ row, token }) until all stop. The cache is freed when the iteration ends (also
 * by `break`).
 */
export async function* streamTokens(model: Decoder, prompts: number[][], o: GenerateOptions = {}): AsyncGenerator<{ row: number; token: number }> {
  checkGenerateOptions(o);
  if (!Array.isArray(prompts) || !prompts.length) throw new Error('generate: prompts must be a non-empty array of token id arrays');
  prompts.forEach((p, i) => {
    if (!Array.isArray(p) || !p.length) throw new Error(`generate: prompt ${i} is empty (it needs at least one token)`);
  });
  const maxNew = o.maxNewTokens ?? 64;
  const B = prompts.length;
  const Tp = Math.max(...prompts.map((p) => p.length));
  // the context: learned positions (GPT-2) or max_position_embeddings / the GGUF's context length (RoPE models)
  const limit = model.config.maxPositions;
  if (Tp + maxNew > limit) throw new Error(`generate: ${Tp} prompt tokens + ${maxNew} new ones exceed the model's ${limit} positions`);
  if (o.adapters !== undefined && (!Array.isArray(o.adapters) || o.adapters.length !== prompts.length))
    throw new Error(`generate: adapters must hold one adapter name (or null) per prompt (${prompts.length})`);
  if (o.adapters !== undefined && o.adapter !== undefined) throw new Error('generate: pass adapter or adapters, not both');
  if (maxNew === 0) return;
  const previous = model.activeAdapters;
  if (o.adapter !== undefined) model.setActiveAdapter(o.adapter);
  const cache = PagedKVCache.forLengths(model, prompts.map((p) => p.length + maxNew));
  const rand = rng(o.seed ?? 0);
  const eos = new Set(o.eos ?? []);
  const seen = prompts.map((p) => [...p]);
  const clock = () => Number(process.hrtime.bigint()) / 1e9;
  const t0 = clock();
  let t1 = t0;
  let produced = 0;
  try {
    let rows = prompts.map((_, b) => b); // the running rows, in order
    const seqs = rows.map(() => cache.add());
    const adaptersOf = (rs: number[]) => (o.adapters ? rs.map((b) => o.adapters![b]) : undefined);
    // each pass's CPU kernels run on a worker thread: the event loop goes on while a step computes
    let logits = await runDeferred(() => prefill(model, cache, seqs, prompts, o.adapters));
    for (let step = 0; ; step++) {
      let next: number[];
      try {
        next = pick(logits, rows.map((b) => seen[b]), o, rand);
      } finally {
        logits.dispose();
      }
      if (step === 0) t1 = clock();
      produced += next.length;
      const still: number[] = [];
      for (const [j, b] of rows.entries()) {
        seen[b].push(next[j]);
        yield { row: b, token: next[j] };
        if (!eos.has(next[j])) still.push(j);
      }
      if (!still.length || step + 1 === maxNew) break;
      for (const [j, id] of seqs.entries()) if (!still.includes(j)) cache.release(id);
      rows = still.map((j) => rows[j]);
      seqs.splice(0, seqs.length, ...still.map((j) => seqs[j]));
      await new Promise((resolve) => setImmediate(resolve)); // a turn of the event loop on CUDA too
      logits = await runDeferred(() => decodeStep(model, cache, seqs, still.map((j) => next[j]), adaptersOf(rows)));
    }
  } finally {
    const end = clock();
    cache.dispose();
    if (o.adapter !== undefined) model.setActiveAdapters(previous);
    o.onStats?.({
      promptTokens: prompts.reduce((a, p) => a + p.length, 0), newTokens: produced, prefillSeconds: t1 - t0,
      decodeSeconds: end - t1, cacheBytesPerToken: cache.bytesPerToken, cacheBytes: cache.bytesPerToken * cache.pages * cache.pageSize,
    });
  }
}

/** The next token of each row from its logits [B, V], sampled on their device (see kernels.ts). */
function pick(logits: Tensor, seen: number[][], o: GenerateOptions, rand: () => number): number[] {
  return sampleRows(logits, seen.map((s) => ({ options: o, seen: s, u: rand() })));
}

/**
 * One token per row of logits [B, V] on their device, each row with its own options, earlier tokens
 * (for the repetition penalty) and uniform draw u ∈ [0, 1). Throws when a row has no finite logit.
 */
export function sampleRows(logits: Tensor, rows: { options: GenerateOptions; seen: number[]; u: number }[]): number[] {
  const B = rows.length;
  const params = new Float32Array(B * SAMPLE_PARAMS.length);
  rows.forEach(({ options: o, u }, b) =>
    params.set([o.temperature ?? 0, o.topK ?? 0, o.topP ?? 1, o.repetitionPenalty ?? 1, u], b * SAMPLE_PARAMS.length));
  const dev = logits.device;
  const p = tensor(params, [B, SAMPLE_PARAMS.length], { device: dev });
  let ids: Tensor | undefined;
  if (rows.some((r) => (r.options.repetitionPenalty ?? 1) !== 1)) {
    const uniq = rows.map((r) => ((r.options.repetitionPenalty ?? 1) !== 1 ? [...new Set(r.seen)] : []));
    const P = Math.max(1, ...uniq.map((u) => u.length));
    const flat = new Int32Array(B * P).fill(-1);
    uniq.forEach((u, b) => flat.set(u, b * P));
    ids = tensor(flat, [B, P], { dtype: 'int32', device: dev });
  }
  try {
    const t = sampleTokens(logits, p, ids);
    const out = Array.from(t.toArray());
    t.dispose();
    const bad = out.findIndex((x) => x < 0);
    if (bad >= 0) throw new Error(`generate: the logits of row ${bad} hold no finite value`);
    return out;
  } finally {
    p.dispose();
    ids?.dispose();
  }
}

/** Generates from token-id prompts; returns each row's new token ids (EOS included when reached). */
export async function generate(model: Decoder, prompts: number[][], o: GenerateOptions = {}): Promise<number[][]> {
  const out: number[][] = prompts.map(() => []);
  for await (const { row, token } of streamTokens(model, prompts, o)) out[row].push(token);
  return out;
}

/** Prompt text or chat messages → token ids, as the model's template and tokenizer write them. */
export function promptIds(tokenizer: Tokenizer, prompt: string | ChatMessage[]): number[] {
  if (typeof prompt === 'string') return tokenizer.encode(prompt).ids;
  return tokenizer.hf.encode(renderChat(tokenizer, prompt, { addGenerationPrompt: true }), { add_special_tokens: false }).ids;
}

/**
 * Text generation from a prompt or a chat: yields the text as it grows (each new piece) and stops at
 * EOS (the tokenizer's, by default), a stop string (cut before it) or maxNewTokens.
 */
export async function* streamText(model: Decoder, tokenizer: Tokenizer, prompt: string | ChatMessage[], o: GenerateOptions = {}): AsyncGenerator<string> {
  const eos = o.eos ?? (tokenizer.eosId !== undefined ? [tokenizer.eosId] : []);
  const ids: number[] = [];
  let shown = '';
  for await (const { token } of streamTokens(model, [promptIds(tokenizer, prompt)], { ...o, eos })) {
    if (eos.includes(token)) break;
    ids.push(token);
    let text = tokenizer.decode(ids);
    const cut = (o.stop ?? []).map((st) => text.indexOf(st)).filter((i) => i >= 0);
    if (cut.length) text = text.slice(0, Math.min(...cut));
    if (text.length > shown.length && text.startsWith(shown)) {
      yield text.slice(shown.length);
      shown = text;
    }
    if (cut.length) break;
  }
}

/** The whole generated text (see streamText). */
export async function generateText(model: Decoder, tokenizer: Tokenizer, prompt: string | ChatMessage[], o: GenerateOptions = {}): Promise<string> {
  let text = '';
  for await (const piece of streamText(model, tokenizer, prompt, o)) text += piece;
  return text;
}
