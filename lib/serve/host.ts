// The model side of a server: the frozen model, its adapter library and cache, the encoder batcher
// or the decoder engine. Every method takes and returns plain data, so the same host runs in the
// server's thread (tests, scripts) or in a worker thread (workerHost.ts: the HTTP event loop stays
// free while a batch computes). Errors carry an HTTP status.
import { Backbone } from '../models/bert/model';
import { Decoder } from '../models/decoder/model';
import type { Tokenizer } from '../train/tokenizer';
import type { ChatMessage } from '../train/chat';
import { promptIds } from '../generation/generate';
import { AdapterLibrary, LibraryEntry } from './library';
import { AdapterCache, AdapterLoadError, RefusedAdapterError } from './adapterCache';
import { EncoderService } from './encoderService';
import { DecoderEngine } from './decoderEngine';

export class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** 4xx for what the request (or the adapter it names) got wrong, 500 for the rest. */
export function statusOf(err: unknown): number {
  const e = err as Error & { status?: number; statusCode?: number; validation?: unknown };
  if (e instanceof HttpError || (typeof e.status === 'number' && e.status >= 400 && e.status < 600)) return e.status!;
  if (e instanceof RefusedAdapterError) return 409;
  if (e instanceof AdapterLoadError) return 422;
  if (e.validation) return 400;
  return e.statusCode && e.statusCode >= 400 && e.statusCode < 500 ? e.statusCode : 500;
}

export interface HostOptions {
  maxBatch?: number;
  maxWaitMs?: number;
  cacheAdapters?: number;
  /** Bytes of adapter parameters the cache may hold (null: no byte limit, only cacheAdapters). */
  cacheAdapterBytes?: number | null;
  cacheTokens?: number;
}

/** What the host reports as it works (the server's metrics). */
export interface HostEvents {
  batch(kind: string, rows: number): void;
  cache(event: 'hit' | 'miss' | 'evict'): void;
  tokens(adapter: string, kind: 'prompt' | 'generated', n: number): void;
}

export interface HostInfo {
  kind: 'encoder' | 'decoder';
  modelName: string;
  weightHash: string;
  device: string;
}

export interface Classified { label: string; probabilities: Record<string, number>; adapter?: string }

export interface CompletionRequest {
  chat: boolean;
  prompt?: string;
  messages?: ChatMessage[];
  adapter?: string;
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  repetitionPenalty?: number;
  seed?: number;
  stop?: string[];
}

export interface Completion { text: string; finish: 'stop' | 'length'; promptTokens: number; completionTokens: number }

/** A call's result and the label (name@version, or what was asked for) it counts under. */
export interface Labelled<T> { label: string; value: T }

export class LocalHost {
  readonly library: AdapterLibrary;
  private readonly cache: AdapterCache;
  private readonly encoder?: EncoderService;
  private readonly engine?: DecoderEngine;
  private readonly counts = new Map<string, { requests: number; errors: number }>();

  constructor(readonly model: Backbone | Decoder, private readonly tokenizer: Tokenizer, libraryDir: string, o: HostOptions, private readonly events: HostEvents) {
    this.library = new AdapterLibrary(libraryDir);
    this.library.scan();
    this.cache = new AdapterCache(model, this.library, o.cacheAdapters ?? 32, { hit: () => events.cache('hit'), miss: () => events.cache('miss'), evict: () => events.cache('evict') }, o.cacheAdapterBytes ?? null);
    const maxBatch = o.maxBatch ?? 64;
    if (model instanceof Decoder)
      this.engine = new DecoderEngine(model, { maxBatch, cacheTokens: o.cacheTokens ?? 16384, onBatch: (n, kind) => events.batch(kind, n) });
    else this.encoder = new EncoderService(model, tokenizer, { maxBatch, maxWaitMs: o.maxWaitMs ?? 5, onBatch: (n) => events.batch('encode', n) });
  }

  info(): HostInfo {
    const m = this.model;
    return { kind: m instanceof Decoder ? 'decoder' : 'encoder', modelName: m.modelName, weightHash: m.weightHash, device: m.device };
  }

  listAdapters() {
    const m = this.model;
    return {
      backbone: { model: m.modelName, weight_hash: m.weightHash, kind: this.info().kind },
      adapters: this.library.list().map((e) => ({
        name: e.name, version: e.version, ref: e.ref, config: e.config, backbone_hash: e.backboneHash ?? null,
        compatible: !e.backboneHash || !m.weightHash || e.backboneHash === m.weightHash,
        loaded: this.cache.has(e.ref), has_head: e.hasHead,
        requests: this.counts.get(e.ref)?.requests ?? 0, errors: this.counts.get(e.ref)?.errors ?? 0,
      })),
      unreadable: Object.fromEntries(this.library.errors),
      cache: { adapters: this.library.list().filter((e) => this.cache.has(e.ref)).length, bytes: this.cache.bytes, capacity: this.cache.capacity, budget_bytes: this.cache.budgetBytes },
    };
  }

  rescan(): string[] {
    const { removed } = this.library.scan();
    for (const ref of removed) this.cache.drop(ref);
    return this.library.list().map((e) => e.ref);
  }

  load(ref: string): string {
    this.rescan();
    const e = this.entryOf(ref);
    this.cache.acquire(e);
    this.cache.release(e.ref);
    return e.ref;
  }

  unload(ref: string): string {
    const e = this.entryOf(ref);
    if (!this.cache.has(e.ref)) throw new HttpError(404, `adapter ${e.ref} is not loaded`);
    if (!this.cache.drop(e.ref)) throw new HttpError(409, `adapter ${e.ref} is in use; try again`);
    return e.ref;
  }

  async classify(adapter: string | undefined, texts: string[]): Promise<Labelled<{ adapter: string; results: Classified[] }>> {
    const enc = this.needEncoder('classify');
    this.checkLengths(texts);
    let ref = adapter;
    if (ref === undefined) {
      const names = new Set(this.library.list().map((e) => e.name));
      if (names.has('router')) ref = 'auto';
      else if (names.size === 1) ref = [...names][0];
      else throw new HttpError(400, 'name an adapter ("adapter": "name" or "name@version", or "auto" with a router in the library)');
    }
    const one = (r: string, t: string[]) => this.withAdapter(r, async (a) => {
      if (!a.labels) throw new HttpError(400, `adapter ${r} has no classification head`);
      const res = await enc.batcher.submit({ kind: 'classify', texts: t, adapter: a.key, group: a.group, labels: a.labels });
      return res.kind === 'classify' ? res.results : [];
    });
    if (ref !== 'auto') {
      const r = await one(ref, texts);
      return { label: r.label, value: { adapter: ref, results: r.value } };
    }
    if (!this.library.resolve('router')) throw new HttpError(400, 'adapter "auto" needs a router adapter (named "router") in the library');
    const routes = (await one('router', texts)).value;
    const results: Classified[] = [];
    const by = new Map<string, number[]>();
    routes.forEach((r, i) => by.set(r.label, [...(by.get(r.label) ?? []), i]));
    await Promise.all([...by.entries()].map(async ([name, idx]) => {
      const rs = (await one(name, idx.map((i) => texts[i]))).value;
      idx.forEach((i, j) => { results[i] = { ...rs[j], adapter: name }; });
    }));
    return { label: 'auto', value: { adapter: 'auto', results } };
  }

  async embed(adapter: string | undefined, texts: string[]): Promise<Labelled<number[][]>> {
    const enc = this.needEncoder('embed');
    this.checkLengths(texts);
    return this.withAdapter(adapter ?? null, async (a) => {
      const r = await enc.batcher.submit({ kind: 'embed', texts, adapter: a.key, group: a.group });
      return r.kind === 'embed' ? r.embeddings : [];
    });
  }

  /** A completion; onText gets each new piece of text as it is generated (return false to stop). */
  async complete(req: CompletionRequest, onText?: (piece: string) => boolean | void): Promise<Labelled<Completion>> {
    const engine = this.engine;
    if (!engine) throw new HttpError(404, `this server runs an encoder (${this.model.modelName}); completions need a decoder`);
    const model = this.model as Decoder;
    const ids = promptIds(this.tokenizer, req.chat ? req.messages! : req.prompt!);
    if (!ids.length) throw new HttpError(400, 'the prompt is empty');
    const maxNew = req.maxTokens ?? 256;
    // the context: learned positions (GPT-2) or max_position_embeddings / the GGUF's context length (RoPE models)
    const limit = model.config.maxPositions;
    if (ids.length + maxNew > limit) throw new HttpError(400, `${ids.length} prompt tokens + ${maxNew} new ones exceed the model's ${limit} positions`);
    const stops = req.stop ?? [];
    const eos = this.tokenizer.eosId !== undefined ? [this.tokenizer.eosId] : [];
    return this.withAdapter(req.adapter ?? null, async (a, label) => {
      const out: number[] = [];
      let shown = '';
      let stopped = false;
      let cancelled = false;
      const onToken = (t: number) => {
        if (eos.includes(t)) return;
        out.push(t);
        let text = this.tokenizer.decode(out);
        const cut = stops.map((st) => text.indexOf(st)).filter((i) => i >= 0);
        if (cut.length) {
          text = text.slice(0, Math.min(...cut));
          stopped = true;
        }
        if (text.length > shown.length && text.startsWith(shown)) {
          if (onText?.(text.slice(shown.length)) === false) cancelled = true;
          shown = text;
        }
        if (stopped || cancelled) return false;
      };
      const res = await engine.submit({
        prompt: ids, adapter: a.key, group: a.group, onToken,
        options: { maxNewTokens: maxNew, temperature: req.temperature ?? 0, topP: req.topP, topK: req.topK, repetitionPenalty: req.repetitionPenalty, seed: req.seed ?? 0, eos },
      });
      this.events.tokens(label, 'prompt', ids.length);
      this.events.tokens(label, 'generated', res.tokens.length);
      return { text: shown, finish: stopped || res.finish !== 'length' ? 'stop' : 'length', promptTokens: ids.length, completionTokens: res.tokens.length };
    });
  }

  async close(): Promise<void> {
    await this.encoder?.batcher.drain();
    await this.engine?.idle();
    this.engine?.dispose();
    this.model.dispose();
  }

  private needEncoder(what: string): EncoderService {
    if (!this.encoder) throw new HttpError(404, `this server runs a decoder (${this.model.modelName}); ${what} needs an encoder`);
    return this.encoder;
  }

  private checkLengths(texts: string[]): void {
    const max = (this.model as Backbone).config.maxPositions;
    texts.forEach((x, i) => {
      const n = this.encoder!.tokenCount(x);
      if (n > max) throw new HttpError(400, `text ${i} takes ${n} tokens; the model reads at most ${max}`);
    });
  }

  private entryOf(ref: string): LibraryEntry {
    const e = this.library.resolve(ref);
    if (!e) throw new HttpError(404, `no adapter '${ref}' in the library (${this.library.list().map((x) => x.ref).join(', ') || 'empty'})`);
    return e;
  }

  /** Runs f with the adapter loaded and held; counts the call and its errors under name@version. */
  private async withAdapter<T>(ref: string | null, f: (a: { key: string | null; labels?: string[]; group: string }, label: string) => Promise<T>): Promise<Labelled<T>> {
    const entry = ref === null ? undefined : this.library.resolve(ref);
    const label = entry?.ref ?? ref ?? 'none';
    const c = this.counts.get(label) ?? { requests: 0, errors: 0 };
    this.counts.set(label, c);
    c.requests++;
    try {
      if (ref !== null && !entry) this.entryOf(ref); // throws the 404
      const held = entry ? this.cache.acquire(entry) : { key: null };
      try {
        return { label, value: await f({ ...held, group: entry ? JSON.stringify(entry.config) : 'none' }, label) };
      } finally {
        if (entry) this.cache.release(entry.ref);
      }
    } catch (e) {
      c.errors++;
      (e as { label?: string }).label = label;
      throw e;
    }
  }
}
