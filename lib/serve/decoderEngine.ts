// Continuous batching for a decoder: requests join the running batch between steps (their prompts
// prefilled together), every step decodes one token for every running sequence with its own adapter
// (the batched adapter op; sequences whose adapters differ in shape run as separate groups), and a
// finished sequence leaves at once, freeing its cache pages. Each request samples with its own seeded
// generator, so it gets what a single generate() call with the same options gives.
import type { Decoder } from '../models/decoder/model';
import type { Tensor } from '../tensor';
import { PagedKVCache } from '../generation/cache';
import { runDeferred } from '../core/deferred';
import { decodeStep, prefill } from '../generation/cached';
import { GenerateOptions, sampleRows, checkGenerateOptions } from '../generation/generate';
import { mulberry32 } from '../core/random';

export interface GenRequest {
  prompt: number[];
  options: GenerateOptions;
  /** The model's adapter name for this request (null: none), and a key for grouping by adapter shape. */
  adapter: string | null;
  group: string;
  /** Each new token as it comes; returning false cancels the request. */
  onToken?: (id: number) => boolean | void;
}

export interface GenResult {
  tokens: number[];
  finish: 'stop' | 'length' | 'cancelled';
}

interface Running {
  req: GenRequest;
  seq: number;
  rand: () => number;
  seen: number[];
  out: number[];
  last: number;
  resolve(r: GenResult): void;
  reject(e: unknown): void;
}

export interface EngineOptions {
  maxBatch: number;
  /** Tokens the KV cache holds over all running sequences. */
  cacheTokens: number;
  pageSize?: number;
  onBatch?: (rows: number, kind: 'prefill' | 'decode') => void;
}

export class DecoderEngine {
  private readonly cache: PagedKVCache;
  private pending: Running[] = [];
  private running: Running[] = [];
  private loop: Promise<void> | null = null;

  constructor(private readonly model: Decoder, private readonly o: EngineOptions) {
    const pageSize = o.pageSize ?? 16;
    this.cache = new PagedKVCache(model, { pages: Math.ceil(o.cacheTokens / pageSize), pageSize });
  }

  get active(): number {
    return this.running.length + this.pending.length;
  }

  submit(req: GenRequest): Promise<GenResult> {
    checkGenerateOptions(req.options);
    const need = req.prompt.length + (req.options.maxNewTokens ?? 64);
    if (Math.ceil(need / this.cache.pageSize) > this.cache.pages)
      return Promise.reject(new Error(`${need} tokens (prompt and maxNewTokens) exceed the server's KV cache of ${this.cache.pages * this.cache.pageSize}`));
    return new Promise<GenResult>((resolve, reject) => {
      this.pending.push({ req, seq: -1, rand: mulberry32(req.options.seed ?? 0), seen: [...req.prompt], out: [], last: -1, resolve, reject });
      if (!this.loop) this.loop = this.run().finally(() => { this.loop = null; });
    });
  }

  /** Resolves when no request is running or waiting. */
  async idle(): Promise<void> {
    while (this.loop) await this.loop;
  }

  dispose(): void {
    this.cache.dispose();
  }

  private async run(): Promise<void> {
    while (this.pending.length || this.running.length) {
      await this.admit();
      if (this.running.length) await this.step();
      await new Promise((r) => setImmediate(r)); // HTTP requests are served between steps
    }
  }

  /** Prefills waiting requests that fit (batch slots and cache pages), sampling their first tokens. */
  private async admit(): Promise<void> {
    const joining: Running[] = [];
    let free = this.cache.freePages;
    while (this.pending.length && this.running.length + joining.length < this.o.maxBatch) {
      const r = this.pending[0];
      const pages = Math.ceil((r.req.prompt.length + (r.req.options.maxNewTokens ?? 64)) / this.cache.pageSize);
      if (pages > free) break; // waits for running sequences to finish
      free -= pages;
      joining.push(this.pending.shift()!);
    }
    for (const group of groups(joining)) {
      for (const r of group) r.seq = this.cache.add();
      try {
        this.o.onBatch?.(group.length, 'prefill');
        // the pass's CPU kernels run on a worker thread: HTTP requests are served meanwhile
        const logits = await runDeferred(() => prefill(this.model, this.cache, group.map((r) => r.seq), group.map((r) => r.req.prompt), group.map((r) => r.req.adapter)));
        this.running.push(...group);
        this.emit(group, logits);
      } catch (e) {
        this.fail(group, e);
      }
    }
  }

  private async step(): Promise<void> {
    for (const group of groups(this.running)) {
      try {
        this.o.onBatch?.(group.length, 'decode');
        const logits = await runDeferred(() => decodeStep(this.model, this.cache, group.map((r) => r.seq), group.map((r) => r.last), group.map((r) => r.req.adapter)));
        this.emit(group, logits);
      } catch (e) {
        this.fail(group, e);
      }
    }
  }

  /** Samples each row's next token, hands it to its request, and retires finished requests. */
  private emit(group: Running[], logits: Tensor): void {
    let next: number[];
    try {
      next = sampleRows(logits, group.map((r) => ({ options: r.req.options, seen: r.seen, u: r.rand() })));
    } finally {
      logits.dispose();
    }
    group.forEach((r, i) => {
      const t = next[i];
      r.seen.push(t);
      r.out.push(t);
      r.last = t;
      let finish: GenResult['finish'] | null = null;
      if (r.req.onToken?.(t) === false) finish = 'cancelled';
      else if ((r.req.options.eos ?? []).includes(t)) finish = 'stop';
      else if (r.out.length >= (r.req.options.maxNewTokens ?? 64)) finish = 'length';
      if (finish) this.retire(r, { tokens: r.out, finish });
    });
  }

  private retire(r: Running, res: GenResult): void {
    this.cache.release(r.seq);
    this.running = this.running.filter((x) => x !== r);
    r.resolve(res);
  }

  private fail(group: Running[], e: unknown): void {
    for (const r of group) {
      if (r.seq >= 0) this.cache.release(r.seq);
      this.running = this.running.filter((x) => x !== r);
      r.reject(e);
    }
  }
}

/** Requests whose adapters can share one batched op, in arrival order. */
function groups(rs: Running[]): Running[][] {
  const by = new Map<string, Running[]>();
  for (const r of rs) by.set(r.req.group, [...(by.get(r.req.group) ?? []), r]);
  return [...by.values()];
}
