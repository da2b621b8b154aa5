// `fused-adapters serve`: one frozen model, a library of adapters, requests batched across adapters.
// Fastify routes with JSON schemas (validated; the OpenAPI document at /openapi.json), pino logs,
// Prometheus metrics at /metrics, admin routes behind a bearer token, graceful close (in-flight
// requests finish). Encoders answer /v1/classify and /v1/embed; decoders /v1/completions and
// /v1/chat/completions in OpenAI's shapes (streamed as server-sent events with stream: true).
import Fastify, { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import { Backbone } from '../models/bert/model';
import { Decoder } from '../models/decoder/model';
import type { Tokenizer } from '../train/tokenizer';
import { promptIds } from '../generation/generate';
import type { ChatMessage } from '../train/chat';
import { AdapterLibrary, LibraryEntry } from './library';
import { AdapterCache, AdapterLoadError, RefusedAdapterError } from './adapterCache';
import { ServeMetrics } from './metrics';
import { EncoderService } from './encoderService';
import { DecoderEngine } from './decoderEngine';

export interface ServeOptions {
  model: Backbone | Decoder;
  tokenizer: Tokenizer;
  library: AdapterLibrary;
  maxBatch?: number;
  maxWaitMs?: number;
  cacheAdapters?: number;
  /** Bearer token for POST/DELETE /v1/adapters (without one those routes answer 403). */
  adminToken?: string;
  /** Re-scan the library this often (ms; 0: only on POST /v1/adapters/reload). Default 2000. */
  watchMs?: number;
  /** KV-cache tokens for decoders (all running sequences together). Default 16384. */
  cacheTokens?: number;
  logger?: boolean | object;
  bodyLimit?: number;
}

class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** 4xx for what the request (or the adapter it names) got wrong, 500 for the rest. */
function statusOf(err: unknown): number {
  const e = err as Error & { statusCode?: number; validation?: unknown };
  if (e instanceof HttpError) return e.status;
  if (e instanceof RefusedAdapterError) return 409;
  if (e instanceof AdapterLoadError) return 422;
  if (e.validation) return 400;
  return e.statusCode && e.statusCode >= 400 && e.statusCode < 500 ? e.statusCode : 500;
}

const textOrTexts = {
  type: 'object', additionalProperties: false,
  properties: {
    adapter: { type: 'string', minLength: 1, maxLength: 200 },
    text: { type: 'string', minLength: 1 },
    texts: { type: 'array', minItems: 1, maxItems: 1024, items: { type: 'string', minLength: 1 } },
  },
  oneOf: [{ required: ['text'] }, { required: ['texts'] }],
} as const;

const sampling = {
  adapter: { type: 'string', minLength: 1, maxLength: 200 },
  model: { type: 'string' },
  max_tokens: { type: 'integer', minimum: 1, maximum: 32768 },
  temperature: { type: 'number', minimum: 0, maximum: 100 },
  top_p: { type: 'number', exclusiveMinimum: 0, maximum: 1 },
  top_k: { type: 'integer', minimum: 0 },
  repetition_penalty: { type: 'number', exclusiveMinimum: 0 },
  seed: { type: 'integer' },
  stop: { anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string', minLength: 1 }, maxItems: 8 }] },
  stream: { type: 'boolean' },
} as const;

export async function createServer(o: ServeOptions): Promise<FastifyInstance> {
  const { model, tokenizer, library } = o;
  const isDecoder = model instanceof Decoder;
  const metrics = new ServeMetrics();
  // no type coercion: a number where a string belongs is a 400, not the string "5"
  const app = Fastify({ logger: o.logger ?? false, bodyLimit: o.bodyLimit ?? 1 << 20, ajv: { customOptions: { coerceTypes: false } }, forceCloseConnections: 'idle' });
  await app.register(swagger, { openapi: { info: { title: 'fused-adapters', version: '1' } } });
  library.scan();
  const cache = new AdapterCache(model, library, o.cacheAdapters ?? 32, {
    hit: () => metrics.cache.inc({ event: 'hit' }), miss: () => metrics.cache.inc({ event: 'miss' }), evict: () => metrics.cache.inc({ event: 'evict' }),
  });
  const counts = new Map<string, { requests: number; errors: number }>();
  const maxBatch = o.maxBatch ?? 64;
  const maxWaitMs = o.maxWaitMs ?? 5;
  const encoder = isDecoder ? undefined : new EncoderService(model as Backbone, tokenizer, { maxBatch, maxWaitMs, onBatch: (n) => metrics.batchRows.observe({ kind: 'encode' }, n) });
  const engine = isDecoder ? new DecoderEngine(model as Decoder, { maxBatch, cacheTokens: o.cacheTokens ?? 16384, onBatch: (n, kind) => metrics.batchRows.observe({ kind }, n) }) : undefined;
  const watch = o.watchMs ?? 2000;
  const timer = watch > 0 ? setInterval(() => rescan(), watch) : undefined;
  timer?.unref();

  function rescan(): void {
    try {
      const { removed } = library.scan();
      for (const ref of removed) cache.drop(ref);
    } catch (e) {
      app.log.error(e, 'adapter library scan failed');
    }
  }

  // Responses finished while closing end their keep-alive connection, so close() does not wait for
  // Fastify's 72 s keep-alive timeout on them.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onSend', async (_req, reply) => {
    if (closing) void reply.header('connection', 'close');
  });
  app.addHook('onClose', async () => {
    if (timer) clearInterval(timer);
    await encoder?.batcher.drain();
    await engine?.idle();
    engine?.dispose();
  });

  app.setErrorHandler((err: Error & { statusCode?: number; validation?: unknown }, _req, reply) => {
    const status = statusOf(err);
    if (status >= 500) app.log.error(err);
    void reply.status(status).send({ error: { message: err.message, status } });
  });

  /** The library entry a request names ('auto' is resolved by the caller), or a 404. */
  function entryOf(ref: string): LibraryEntry {
    const e = library.resolve(ref);
    if (!e) throw new HttpError(404, `no adapter '${ref}' in the library (${library.list().map((x) => x.ref).join(', ') || 'empty'})`);
    return e;
  }

  /** Runs f with the adapter loaded and held, counting the request, its errors and latency under the adapter's ref. */
  async function withAdapter<T>(endpoint: string, ref: string | null, f: (a: { key: string | null; labels?: string[]; group: string }) => Promise<T>): Promise<T> {
    const t0 = process.hrtime.bigint();
    const entry = ref === null ? undefined : library.resolve(ref);
    const label = entry?.ref ?? ref ?? 'none'; // counted under name@version once resolved
    metrics.requests.inc({ endpoint, adapter: label });
    const c = counts.get(label) ?? { requests: 0, errors: 0 };
    counts.set(label, c);
    c.requests++;
    try {
      if (ref !== null && !entry) entryOf(ref); // throws the 404
      const held = entry ? cache.acquire(entry) : { key: null };
      try {
        return await f({ ...held, group: entry ? JSON.stringify(entry.config) : 'none' });
      } finally {
        if (entry) cache.release(entry.ref);
      }
    } catch (e) {
      c.errors++;
      metrics.errors.inc({ endpoint, adapter: label, status: String(statusOf(e)) });
      throw e;
    } finally {
      metrics.latency.observe({ endpoint, adapter: label }, Number(process.hrtime.bigint() - t0) / 1e9);
    }
  }

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/metrics', async (_req, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  app.get('/v1/adapters', async () => ({
    backbone: { model: model.modelName, weight_hash: model.weightHash, kind: isDecoder ? 'decoder' : 'encoder' },
    adapters: library.list().map((e) => ({
      name: e.name, version: e.version, ref: e.ref, config: e.config, backbone_hash: e.backboneHash ?? null,
      compatible: !e.backboneHash || !model.weightHash || e.backboneHash === model.weightHash,
      loaded: cache.has(e.ref), requests: counts.get(e.ref)?.requests ?? 0, errors: counts.get(e.ref)?.errors ?? 0,
    })),
    unreadable: Object.fromEntries(library.errors),
  }));

  const admin = async (req: FastifyRequest) => {
    if (!o.adminToken) throw new HttpError(403, 'admin routes are off: start the server with --admin-token');
    if (req.headers.authorization !== `Bearer ${o.adminToken}`) throw new HttpError(401, 'admin routes need Authorization: Bearer <admin token>');
  };
  app.post('/v1/adapters', {
    preHandler: admin,
    schema: { body: { type: 'object', additionalProperties: false, required: ['adapter'], properties: { adapter: { type: 'string', minLength: 1 } } } },
  }, async (req) => {
    rescan();
    const e = entryOf((req.body as { adapter: string }).adapter);
    cache.acquire(e);
    cache.release(e.ref);
    return { loaded: e.ref };
  });
  app.post('/v1/adapters/reload', { preHandler: admin }, async () => {
    rescan();
    return { adapters: library.list().map((e) => e.ref), unreadable: Object.fromEntries(library.errors) };
  });
  app.delete('/v1/adapters/:name', { preHandler: admin }, async (req) => {
    const e = entryOf((req.params as { name: string }).name);
    if (!cache.has(e.ref)) throw new HttpError(404, `adapter ${e.ref} is not loaded`);
    if (!cache.drop(e.ref)) throw new HttpError(409, `adapter ${e.ref} is in use; try again`);
    return { unloaded: e.ref };
  });

  if (encoder) registerEncoderRoutes(app, encoder, library, withAdapter, model as Backbone);
  if (engine) registerDecoderRoutes(app, engine, tokenizer, withAdapter, model as Decoder, metrics);
  return app;
}

type WithAdapter = <T>(endpoint: string, ref: string | null, f: (a: { key: string | null; labels?: string[]; group: string }) => Promise<T>) => Promise<T>;

function registerEncoderRoutes(app: FastifyInstance, encoder: EncoderService, library: AdapterLibrary, withAdapter: WithAdapter, model: Backbone): void {
  const texts = (b: { text?: string; texts?: string[] }) => {
    const t = b.texts ?? [b.text!];
    t.forEach((x, i) => {
      const n = encoder.tokenCount(x);
      if (n > model.config.maxPositions) throw new HttpError(400, `text ${i} takes ${n} tokens; the model reads at most ${model.config.maxPositions}`);
    });
    return t;
  };
  const classify = (ref: string, t: string[]) => withAdapter('classify', ref, async (a) => {
    if (!a.labels) throw new HttpError(400, `adapter ${ref} has no classification head`);
    const r = await encoder.batcher.submit({ kind: 'classify', texts: t, adapter: a.key, group: a.group, labels: a.labels });
    return r.kind === 'classify' ? r.results : [];
  });
  app.post('/v1/classify', { schema: { body: textOrTexts } }, async (req) => {
    const b = req.body as { adapter?: string; text?: string; texts?: string[] };
    const t = texts(b);
    let ref = b.adapter;
    if (ref === undefined) {
      const all = library.list();
      if (library.resolve('router')) ref = 'auto';
      else if (new Set(all.map((e) => e.name)).size === 1) ref = all[0].name;
      else throw new HttpError(400, 'name an adapter ("adapter": "name" or "name@version", or "auto" with a router in the library)');
    }
    let results: { label: string; probabilities: Record<string, number>; adapter?: string }[];
    if (ref === 'auto') {
      if (!library.resolve('router')) throw new HttpError(400, 'adapter "auto" needs a router adapter (named "router") in the library');
      const routes = await classify('router', t);
      results = [];
      // each text to the adapter the router names, batched per adapter
      const by = new Map<string, number[]>();
      routes.forEach((r, i) => by.set(r.label, [...(by.get(r.label) ?? []), i]));
      await Promise.all([...by.entries()].map(async ([name, idx]) => {
        const rs = await classify(name, idx.map((i) => t[i]));
        idx.forEach((i, j) => { results[i] = { ...rs[j], adapter: name }; });
      }));
    } else results = await classify(ref, t);
    return b.texts ? { adapter: ref, results } : { adapter: ref, ...results[0] };
  });
  app.post('/v1/embed', { schema: { body: textOrTexts } }, async (req) => {
    const b = req.body as { adapter?: string; text?: string; texts?: string[] };
    const t = texts(b);
    const r = await withAdapter('embed', b.adapter ?? null, async (a) => encoder.batcher.submit({ kind: 'embed', texts: t, adapter: a.key, group: a.group }));
    const embeddings = r.kind === 'embed' ? r.embeddings : [];
    return b.texts ? { adapter: b.adapter ?? null, embeddings } : { adapter: b.adapter ?? null, embedding: embeddings[0] };
  });
}

interface CompletionBody {
  adapter?: string; model?: string; max_tokens?: number; temperature?: number; top_p?: number; top_k?: number;
  repetition_penalty?: number; seed?: number; stop?: string | string[]; stream?: boolean;
  prompt?: string; messages?: ChatMessage[];
}

function registerDecoderRoutes(app: FastifyInstance, engine: DecoderEngine, tokenizer: Tokenizer, withAdapter: WithAdapter, model: Decoder, metrics: ServeMetrics): void {
  let nextId = 0;
  const run = (chat: boolean) => async (req: FastifyRequest, reply: FastifyReply) => {
    const b = req.body as CompletionBody;
    const ids = promptIds(tokenizer, chat ? b.messages! : b.prompt!);
    if (!ids.length) throw new HttpError(400, 'the prompt is empty');
    const stops = typeof b.stop === 'string' ? [b.stop] : b.stop ?? [];
    const maxNew = b.max_tokens ?? 256;
    const id = `${chat ? 'chatcmpl' : 'cmpl'}-${Date.now().toString(36)}${(nextId++).toString(36)}`;
    const created = Math.floor(Date.now() / 1000);
    const name = b.adapter ?? null;
    const limit = model.config.family === 'gpt2' ? model.config.maxPositions : Number.MAX_SAFE_INTEGER;
    if (ids.length + maxNew > limit) throw new HttpError(400, `${ids.length} prompt tokens + ${maxNew} new ones exceed the model's ${limit} positions`);
    const chunk = (text: string, finish: string | null) => (chat
      ? { id, object: 'chat.completion.chunk', created, model: b.model ?? model.modelName, choices: [{ index: 0, delta: text ? { role: 'assistant', content: text } : {}, finish_reason: finish }] }
      : { id, object: 'text_completion', created, model: b.model ?? model.modelName, choices: [{ index: 0, text, finish_reason: finish }] });
    return withAdapter(chat ? 'chat' : 'completions', name, async (a) => {
      const out: number[] = [];
      let shown = '';
      let stopped = false;
      const eos = tokenizer.eosId !== undefined ? [tokenizer.eosId] : [];
      if (b.stream) {
        reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
        reply.hijack();
      }
      let closed = false;
      // the client went away (the response closes before it is finished)
      reply.raw.on('close', () => { if (!reply.raw.writableFinished) closed = true; });
      const onToken = (t: number) => {
        if (eos.includes(t)) return;
        out.push(t);
        let text = tokenizer.decode(out);
        const cut = stops.map((st) => text.indexOf(st)).filter((i) => i >= 0);
        if (cut.length) {
          text = text.slice(0, Math.min(...cut));
          stopped = true;
        }
        if (b.stream && text.length > shown.length && text.startsWith(shown)) reply.raw.write(`data: ${JSON.stringify(chunk(text.slice(shown.length), null))}\n\n`);
        if (text.startsWith(shown)) shown = text;
        if (stopped || (b.stream && closed)) return false;
      };
      let res;
      try {
        res = await engine.submit({
          prompt: ids, adapter: a.key, group: a.group, onToken,
          options: { maxNewTokens: maxNew, temperature: b.temperature ?? 0, topP: b.top_p, topK: b.top_k, repetitionPenalty: b.repetition_penalty, seed: b.seed ?? 0, eos },
        });
      } catch (e) {
        if (!b.stream) throw e;
        // the status line is sent: the error goes into the stream
        if (!closed) reply.raw.end(`data: ${JSON.stringify({ error: { message: (e as Error).message, status: 500 } })}\n\n`);
        throw e;
      }
      metrics.tokens.inc({ adapter: name ?? 'none', kind: 'prompt' }, ids.length);
      metrics.tokens.inc({ adapter: name ?? 'none', kind: 'generated' }, res.tokens.length);
      const finish = stopped || res.finish === 'stop' ? 'stop' : res.finish === 'length' ? 'length' : 'stop';
      if (b.stream) {
        if (!closed) {
          reply.raw.write(`data: ${JSON.stringify(chunk('', finish))}\n\n`);
          reply.raw.end('data: [DONE]\n\n');
        }
        return reply;
      }
      const usage = { prompt_tokens: ids.length, completion_tokens: res.tokens.length, total_tokens: ids.length + res.tokens.length };
      return chat
        ? { id, object: 'chat.completion', created, model: b.model ?? model.modelName, adapter: name, choices: [{ index: 0, message: { role: 'assistant', content: shown }, finish_reason: finish }], usage }
        : { id, object: 'text_completion', created, model: b.model ?? model.modelName, adapter: name, choices: [{ index: 0, text: shown, finish_reason: finish }], usage };
    });
  };
  app.post('/v1/completions', {
    schema: { body: { type: 'object', additionalProperties: false, required: ['prompt'], properties: { ...sampling, prompt: { type: 'string', minLength: 1 } } } },
  }, run(false));
  app.post('/v1/chat/completions', {
    schema: {
      body: {
        type: 'object', additionalProperties: false, required: ['messages'],
        properties: {
          ...sampling,
          messages: {
            type: 'array', minItems: 1, maxItems: 256,
            items: { type: 'object', required: ['role', 'content'], properties: { role: { type: 'string', enum: ['system', 'user', 'assistant'] }, content: { type: 'string' } } },
          },
        },
      },
    },
  }, run(true));
}
