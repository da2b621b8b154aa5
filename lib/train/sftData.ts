// Instruction-tuning data: JSONL rows of {prompt, response}, {instruction, input?, output} or
// {messages: [{role, content}, ...]}, turned into token ids with labels on the assistant's tokens
// only (-100 elsewhere), through the model's chat template when it has one.
//
// With a template, each assistant turn's tokens are found as transformers' users find them: the
// conversation up to that turn rendered with add_generation_prompt (the prompt) is a prefix of the
// conversation including it; the tokens after the prefix (the answer and its end-of-turn marker)
// are the labels. Without a template: "prompt\n" + response + EOS, labels on response + EOS.
import { promises as fsp } from 'fs';
import { ChatMessage, chatTemplateOf, renderChat } from './chat';
import type { Tokenizer } from './tokenizer';

export interface SftExample {
  messages: ChatMessage[];
}

export interface SftEncoded {
  ids: number[];
  /** -100 where no loss is taken. */
  labels: number[];
}

const ROLES = new Set(['system', 'user', 'assistant']);

/** One JSONL object → an SftExample, or an Error naming the line and what is wrong. */
export function toSftExample(obj: unknown, where: string): SftExample {
  if (!obj || typeof obj !== 'object' || Array.isArray(obj)) throw new Error(`${where}: expected a JSON object`);
  const o = obj as Record<string, unknown>;
  const str = (k: string, optional = false): string | undefined => {
    const v = o[k];
    if (v === undefined && optional) return undefined;
    if (typeof v !== 'string') throw new Error(`${where}: '${k}' must be a string, got ${v === undefined ? 'nothing' : typeof v}`);
    return v;
  };
  if ('messages' in o) {
    const m = o.messages;
    if (!Array.isArray(m) || m.length === 0) throw new Error(`${where}: 'messages' must be a non-empty array`);
    const messages = m.map((x, i) => {
      if (!x || typeof x !== 'object' || typeof (x as ChatMessage).role !== 'string' || typeof (x as ChatMessage).content !== 'string')
        throw new Error(`${where}: messages[${i}] must be { role, content } with string fields`);
      const role = (x as ChatMessage).role;
      if (!ROLES.has(role)) throw new Error(`${where}: messages[${i}].role '${role}' is not system, user or assistant`);
      return { role, content: (x as ChatMessage).content };
    });
    if (!messages.some((x) => x.role === 'assistant')) throw new Error(`${where}: no assistant message to learn from`);
    return { messages };
  }
  if ('prompt' in o || 'response' in o) return { messages: [{ role: 'user', content: str('prompt')! }, { role: 'assistant', content: str('response')! }] };
  if ('instruction' in o) {
    const input = str('input', true);
    const user = input ? `${str('instruction')}\n\n${input}` : str('instruction')!;
    return { messages: [{ role: 'user', content: user }, { role: 'assistant', content: str('output')! }] };
  }
  throw new Error(`${where}: expected {prompt, response}, {instruction, input?, output} or {messages} (found keys: ${Object.keys(o).join(', ') || 'none'})`);
}

/** Reads a JSONL file of examples (see the top of this file). */
export async function readSftExamples(file: string): Promise<SftExample[]> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (e) {
    throw new Error(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const out: SftExample[] = [];
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      throw new Error(`${file}:${i + 1}: invalid JSON (${(e as Error).message})`);
    }
    out.push(toSftExample(obj, `${file}:${i + 1}`));
  });
  if (!out.length) throw new Error(`${file}: no examples`);
  return out;
}

function startsWith(a: number[], prefix: number[]): boolean {
  if (prefix.length > a.length) return false;
  for (let i = 0; i < prefix.length; i++) if (a[i] !== prefix[i]) return false;
  return true;
}

/** Token ids of rendered chat text: the template writes the special tokens itself. */
function chatIds(tokenizer: Tokenizer, messages: ChatMessage[], addGenerationPrompt: boolean): number[] {
  const text = renderChat(tokenizer, messages, { addGenerationPrompt });
  return tokenizer.hf.encode(text, { add_special_tokens: false }).ids;
}

/** Ids and labels of one example; truncated to maxLength (labels follow), at least one label kept or an Error. */
export function encodeSft(tokenizer: Tokenizer, ex: SftExample, opts: { maxLength?: number } = {}): SftEncoded {
  let ids: number[];
  let labels: number[];
  if (chatTemplateOf(tokenizer) !== undefined) {
    ids = chatIds(tokenizer, ex.messages, false);
    labels = new Array(ids.length).fill(-100);
    ex.messages.forEach((m, i) => {
      if (m.role !== 'assistant') return;
      const prompt = chatIds(tokenizer, ex.messages.slice(0, i), true);
      const upto = chatIds(tokenizer, ex.messages.slice(0, i + 1), false);
      if (!startsWith(upto, prompt) || !startsWith(ids, upto))
        throw new Error('encodeSft: the chat template does not render the conversation as a growing prefix; the answer tokens cannot be found');
      for (let t = prompt.length; t < upto.length; t++) labels[t] = ids[t];
    });
  } else {
    const prompt = ex.messages.filter((m) => m.role !== 'assistant').map((m) => m.content).join('\n') + '\n';
    const answer = ex.messages.filter((m) => m.role === 'assistant').map((m) => m.content).join('\n');
    const p = tokenizer.hf.encode(prompt, { add_special_tokens: true }).ids;
    const a = tokenizer.hf.encode(answer, { add_special_tokens: false }).ids;
    if (tokenizer.eosId !== undefined) a.push(tokenizer.eosId);
    ids = [...p, ...a];
    labels = [...new Array(p.length).fill(-100), ...a];
  }
  if (opts.maxLength !== undefined && ids.length > opts.maxLength) {
    ids = ids.slice(0, opts.maxLength);
    labels = labels.slice(0, opts.maxLength);
  }
  if (!labels.some((l) => l !== -100)) throw new Error(`encodeSft: no answer token is left within maxLength ${opts.maxLength}`);
  return { ids, labels };
}

/** Rows padded on the left (as generation pads) into a batch: ids, mask, labels. */
export function padSftBatch(rows: SftEncoded[], padId: number): { inputIds: number[][]; attentionMask: number[][]; labels: number[][] } {
  const T = rows.reduce((m, r) => Math.max(m, r.ids.length), 0);
  return {
    inputIds: rows.map((r) => [...new Array(T - r.ids.length).fill(padId), ...r.ids]),
    attentionMask: rows.map((r) => [...new Array(T - r.ids.length).fill(0), ...new Array(r.ids.length).fill(1)]),
    labels: rows.map((r) => [...new Array(T - r.ids.length).fill(-100), ...r.labels]),
  };
}

/** Several examples in one row, each its own segment (0, 1, 2, ...). */
export interface SftPacked extends SftEncoded {
  segments: number[];
}

/**
 * Packs encoded examples, in order, into rows of at most maxLength tokens (a new row when the next
 * example does not fit): fewer padding tokens per batch. The model keeps attention and prediction
 * within each segment (DecoderInputs.segmentIds).
 */
export function packSft(rows: SftEncoded[], maxLength: number): SftPacked[] {
  if (!Number.isInteger(maxLength) || maxLength < 1) throw new Error(`packSft: maxLength must be a positive integer, got ${maxLength}`);
  const out: SftPacked[] = [];
  let cur: SftPacked | null = null;
  for (const r of rows) {
    if (r.ids.length > maxLength) throw new Error(`packSft: an example has ${r.ids.length} tokens, more than maxLength ${maxLength}`);
    if (!cur || cur.ids.length + r.ids.length > maxLength) {
      cur = { ids: [], labels: [], segments: [] };
      out.push(cur);
    }
    const seg = cur.segments.length ? cur.segments[cur.segments.length - 1] + 1 : 0;
    cur.ids.push(...r.ids);
    cur.labels.push(...r.labels);
    for (let i = 0; i < r.ids.length; i++) cur.segments.push(seg);
  }
  return out;
}

/** Packed rows padded on the left into a batch, with segment ids (-1 on padding). */
export function padPackedBatch(rows: SftPacked[], padId: number): ReturnType<typeof padSftBatch> & { segmentIds: number[][] } {
  const b = padSftBatch(rows, padId);
  const T = b.inputIds[0]?.length ?? 0;
  return { ...b, segmentIds: rows.map((r) => [...new Array(T - r.segments.length).fill(-1), ...r.segments]) };
}
