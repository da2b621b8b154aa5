// Text generation with a frozen decoder and (optionally) an adapter: prefill the prompts into a KV
// cache, then one token per step, greedy or sampled (temperature, top-k, top-p, repetition penalty;
// seeded, so the same seed gives the same text), stopping at end-of-sequence tokens, stop strings or
// maxNewTokens. Prompts of different lengths are padded on the left. streamText yields each token as
// it comes and lets the event loop run between steps; breaking out of it frees the cache.
import type { Decoder } from '../models/decoder/model';
import { ChatMessage, renderChat } from '../train/chat';
import type { Tokenizer } from '../train/tokenizer';
import { tensor } from '../tensor';
import { cachedStep, createCache } from './cached';
import { mulberry32 as rng } from '../core/random';

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
}


/** The next token from one row of logits. */
export function pickToken(logits: Float32Array, seen: Iterable<number>, o: GenerateOptions, rand: () => number): number {
  const l = Float32Array.from(logits);
  if (o.repetitionPenalty !== undefined && o.repetitionPenalty !== 1)
    for (const id of new Set(seen)) l[id] = l[id] > 0 ? l[id] / o.repetitionPenalty : l[id] * o.repetitionPenalty;
  const argmax = () => {
    let best = 0;
    for (let i = 1; i < l.length; i++) if (l[i] > l[best]) best = i;
    return best;
  };
  const temperature = o.temperature ?? 0;
  if (temperature <= 0) return argmax();
  let ids = Array.from(l.keys());
  if (o.topK !== undefined && o.topK > 0 && o.topK < ids.length) {
    // the k largest without sorting the vocabulary: a partial selection
    const kth = [...l].sort((a, b) => b - a)[o.topK - 1];
    ids = ids.filter((i) => l[i] >= kth);
  }
  const mx = Math.max(...ids.map((i) => l[i]));
  let probs = ids.map((i) => Math.exp((l[i] - mx) / temperature));
  if (o.topP !== undefined && o.topP < 1) {
    const order = ids.map((_, j) => j).sort((a, b) => probs[b] - probs[a]);
    const total = probs.reduce((a, b) => a + b, 0);
    let acc = 0;
    const keep = new Set<number>();
    for (const j of order) {
      keep.add(j);
      acc += probs[j] / total;
      if (acc >= o.topP) break;
    }
    ids = ids.filter((_, j) => keep.has(j));
    probs = probs.filter((_, j) => keep.has(j));
  }
  const total = probs.reduce((a, b) => a + b, 0);
  let r = rand() * total;
  for (let j = 0; j < ids.length; j++) {
    r -= probs[j];
    if (r <= 0) return ids[j];
  }
  return ids[ids.length - 1];
}

function checkOptions(o: GenerateOptions): void {
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
  checkOptions(o);
  if (!Array.isArray(prompts) || !prompts.length) throw new Error('generate: prompts must be a non-empty array of token id arrays');
  prompts.forEach((p, i) => {
    if (!Array.isArray(p) || !p.length) throw new Error(`generate: prompt ${i} is empty (it needs at least one token)`);
  });
  const maxNew = o.maxNewTokens ?? 64;
  const B = prompts.length;
  const Tp = Math.max(...prompts.map((p) => p.length));
  const capacity = Tp + maxNew;
  const limit = model.config.family === 'gpt2' ? model.config.maxPositions : Number.MAX_SAFE_INTEGER;
  if (Tp + maxNew > limit) throw new Error(`generate: ${Tp} prompt tokens + ${maxNew} new ones exceed the model's ${limit} positions`);
  if (o.adapters !== undefined && (!Array.isArray(o.adapters) || o.adapters.length !== prompts.length))
    throw new Error(`generate: adapters must hold one adapter name (or null) per prompt (${prompts.length})`);
  if (o.adapters !== undefined && o.adapter !== undefined) throw new Error('generate: pass adapter or adapters, not both');
  const previous = model.active;
  if (o.adapter !== undefined) model.setActiveAdapter(o.adapter);
  const cache = createCache(model, B, capacity);
  const mask = new Float32Array(B * capacity).fill(1);
  prompts.forEach((p, b) => mask.fill(0, b * capacity, b * capacity + (Tp - p.length))); // left padding
  const keyMask = tensor(mask, [B, capacity], { device: model.device });
  const rand = rng(o.seed ?? 0);
  const eos = new Set(o.eos ?? []);
  const seen = prompts.map((p) => [...p]);
  const done = new Array(B).fill(false);
  try {
    if (maxNew === 0) return;
    // prefill: every prompt, left-padded, positions counting real tokens
    const ids = prompts.map((p) => [...new Array(Tp - p.length).fill(p[0]), ...p]);
    const pos = prompts.map((p) => [...new Array(Tp - p.length).fill(0), ...p.map((_, i) => i)]);
    let logits = cachedStep(model, cache, ids, pos, keyMask, o.adapters);
    const V = model.config.vocabSize;
    for (let step = 0; step < maxNew; step++) {
      const next = new Array<number>(B);
      for (let b = 0; b < B; b++) {
        if (done[b]) {
          next[b] = seen[b][seen[b].length - 1];
          continue;
        }
        next[b] = pickToken(logits.subarray(b * V, (b + 1) * V), seen[b], o, rand);
        seen[b].push(next[b]);
        yield { row: b, token: next[b] };
        if (eos.has(next[b])) done[b] = true;
      }
      if (done.every(Boolean) || step + 1 === maxNew) break;
      await new Promise((resolve) => setImmediate(resolve)); // let the event loop run between steps
      logits = cachedStep(model, cache, next.map((t) => [t]), seen.map((s) => [s.length - 1]), keyMask, o.adapters);
    }
  } finally {
    cache.dispose();
    keyMask.dispose();
    if (o.adapter !== undefined) model.setActiveAdapter(previous);
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
