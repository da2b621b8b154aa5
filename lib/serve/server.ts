// `fused-adapters serve`: one frozen model, a library of adapters, requests batched across adapters.
// Fastify routes with JSON schemas (validated, no type coercion; the OpenAPI document at
// /openapi.json), pino logs, Prometheus metrics at /metrics, admin routes behind a bearer token,
// graceful close (in-flight requests finish). Encoders answer /v1/classify and /v1/embed; decoders
// /v1/completions and /v1/chat/completions in OpenAI's shapes (server-sent events with stream: true).
// The model runs in a host (host.ts): in this thread when the caller passes a model, else in a
// worker thread (workerHost.ts), so that the event loop answers while a batch computes.
import Fastify, { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import type { Backbone } from '../models/bert/model';
import type { Decoder } from '../models/decoder/model';
import type { Tokenizer } from '../train/tokenizer';
import { Classified, Completion, CompletionRequest, HostEvents, HostInfo, HostOptions, HttpError, Labelled, LocalHost, statusOf } from './host';
import { WorkerHost } from './workerHost';
import { ServeMetrics } from './metrics';

export interface ServeOptions extends HostOptions {
  /** The adapter library directory. */
  library: string;
  /** A loaded model (and its tokenizer), served from this thread ... */
  model?: Backbone | Decoder;
  tokenizer?: Tokenizer;
  /** ... or a model source (directory, hub id, GGUF file) that a worker thread opens. */
  source?: string;
  device?: string;
  /** Bearer token for the admin routes (without one they answer 403). */
  adminToken?: string;
  /** Re-scan the library this often (ms; 0: only on POST /v1/adapters/reload). Default 2000. */
  watchMs?: number;
  logger?: boolean | object;
  bodyLimit?: number;
}

/** The host's methods, called the same way in this thread or in the worker. */
type Call = <T>(method: string, args: unknown[], onPiece?: (p: string) => boolean | void) => Promise<T>;

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
  stop: { anyOf: [{ type: 'string', minLength: 1 }, { type: 'array', items: { type: 'string', minLength: 1 }, maxItems: 8 }] },
  stream: { type: 'boolean' },
} as const;

export async function createServer(o: ServeOptions): Promise<FastifyInstance> {
  const metrics = new ServeMetrics();
  const events: HostEvents = {
    batch: (kind, rows) => metrics.batchRows.observe({ kind }, rows),
    cache: (event) => metrics.cache.inc({ event }),
    tokens: (adapter, kind, n) => metrics.tokens.inc({ adapter, kind }, n),
  };
  const hostOptions: HostOptions = { maxBatch: o.maxBatch, maxWaitMs: o.maxWaitMs, cacheAdapters: o.cacheAdapters, cacheAdapterBytes: o.cacheAdapterBytes, cacheTokens: o.cacheTokens };
  let call: Call;
  let info: HostInfo;
  let closeHost: () => Promise<void>;
  if (o.model) {
    if (!o.tokenizer) throw new Error('serve: a model needs its tokenizer');
    const host = new LocalHost(o.model, o.tokenizer, o.library, hostOptions, events);
    const methods = host as unknown as Record<string, (...a: unknown[]) => unknown>;
    call = async (method, args, onPiece) => methods[method].apply(host, onPiece ? [...args, onPiece] : args) as never;
    info = host.info();
    closeHost = () => host.close();
  } else {
    if (!o.source) throw new Error('serve: pass a model or a model source');
    const host = await WorkerHost.start(o.source, o.device ?? 'cpu', o.library, hostOptions, events);
    call = (method, args, onPiece) => host.call(method, args, onPiece);
    info = host.info();
    closeHost = () => host.close();
  }

  // no type coercion: a number where a string belongs is a 400, not the string "5"
  const app = Fastify({ logger: o.logger ?? false, bodyLimit: o.bodyLimit ?? 1 << 20, ajv: { customOptions: { coerceTypes: false } } });
  await app.register(swagger, { openapi: { info: { title: 'fused-adapters', version: '1' } } });
  const watch = o.watchMs ?? 2000;
  const timer = watch > 0 ? setInterval(() => call('rescan', []).catch((e) => app.log.error(e, 'adapter library scan failed')), watch) : undefined;
  timer?.unref();

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
    await closeHost();
  });
  app.setErrorHandler((err: Error, _req, reply) => {
    const status = statusOf(err);
    if (status >= 500) app.log.error(err);
    void reply.status(status).send({ error: { message: err.message, status } });
  });

  /** Counts a request under the adapter label the host resolved (name@version), with its latency and errors. */
  async function counted<T>(endpoint: string, asked: string | undefined, f: () => Promise<Labelled<T>>): Promise<T> {
    const t0 = process.hrtime.bigint();
    let label = asked ?? 'none';
    try {
      const r = await f();
      label = r.label;
      return r.value;
    } catch (e) {
      label = (e as { label?: string }).label ?? label;
      metrics.errors.inc({ endpoint, adapter: label, status: String(statusOf(e)) });
      throw e;
    } finally {
      metrics.requests.inc({ endpoint, adapter: label });
      metrics.latency.observe({ endpoint, adapter: label }, Number(process.hrtime.bigint() - t0) / 1e9);
    }
  }

  app.get('/healthz', async () => ({ status: 'ok', model: info.modelName, kind: info.kind }));
  app.get('/metrics', async (_req, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  app.get('/v1/adapters', async () => call('listAdapters', []));

  const admin = async (req: FastifyRequest) => {
    if (!o.adminToken) throw new HttpError(403, 'admin routes are off: start the server with --admin-token');
    if (req.headers.authorization !== `Bearer ${o.adminToken}`) throw new HttpError(401, 'admin routes need Authorization: Bearer <admin token>');
  };
  const adapterBody = { type: 'object', additionalProperties: false, required: ['adapter'], properties: { adapter: { type: 'string', minLength: 1 } } };
  app.post('/v1/adapters', { preHandler: admin, schema: { body: adapterBody } }, async (req) => ({ loaded: await call('load', [(req.body as { adapter: string }).adapter]) }));
  app.post('/v1/adapters/reload', { preHandler: admin }, async () => ({ adapters: await call('rescan', []) }));
  app.delete('/v1/adapters/:name', { preHandler: admin }, async (req) => ({ unloaded: await call('unload', [(req.params as { name: string }).name]) }));

  if (info.kind === 'encoder') {
    app.post('/v1/classify', { schema: { body: textOrTexts } }, async (req) => {
      const b = req.body as { adapter?: string; text?: string; texts?: string[] };
      const r = await counted('classify', b.adapter, () => call<Labelled<{ adapter: string; results: Classified[] }>>('classify', [b.adapter, b.texts ?? [b.text!]]));
      return b.texts ? r : { adapter: r.adapter, ...r.results[0] };
    });
    app.post('/v1/embed', { schema: { body: textOrTexts } }, async (req) => {
      const b = req.body as { adapter?: string; text?: string; texts?: string[] };
      const e = await counted('embed', b.adapter, () => call<Labelled<number[][]>>('embed', [b.adapter, b.texts ?? [b.text!]]));
      return b.texts ? { adapter: b.adapter ?? null, embeddings: e } : { adapter: b.adapter ?? null, embedding: e[0] };
    });
  } else registerCompletions(app, call, info, counted);
  return app;
}

type Counted = <T>(endpoint: string, asked: string | undefined, f: () => Promise<Labelled<T>>) => Promise<T>;

interface CompletionBody {
  adapter?: string; model?: string; max_tokens?: number; temperature?: number; top_p?: number; top_k?: number;
  repetition_penalty?: number; seed?: number; stop?: string | string[]; stream?: boolean;
  prompt?: string; messages?: { role: string; content: string }[];
}

function registerCompletions(app: FastifyInstance, call: Call, info: HostInfo, counted: Counted): void {
  let nextId = 0;
  const run = (chat: boolean) => async (req: FastifyRequest, reply: FastifyReply) => {
    const b = req.body as CompletionBody;
    const id = `${chat ? 'chatcmpl' : 'cmpl'}-${Date.now().toString(36)}${(nextId++).toString(36)}`;
    const created = Math.floor(Date.now() / 1000);
    const modelName = b.model ?? info.modelName;
    const request: CompletionRequest = {
      chat, prompt: b.prompt, messages: b.messages as CompletionRequest['messages'], adapter: b.adapter, maxTokens: b.max_tokens,
      temperature: b.temperature, topP: b.top_p, topK: b.top_k, repetitionPenalty: b.repetition_penalty, seed: b.seed,
      stop: typeof b.stop === 'string' ? [b.stop] : b.stop,
    };
    const chunk = (text: string, finish: string | null) => (chat
      ? { id, object: 'chat.completion.chunk', created, model: modelName, choices: [{ index: 0, delta: text ? { role: 'assistant', content: text } : {}, finish_reason: finish }] }
      : { id, object: 'text_completion', created, model: modelName, choices: [{ index: 0, text, finish_reason: finish }] });
    if (!b.stream) {
      const c = await counted(chat ? 'chat' : 'completions', b.adapter, () => call<Labelled<Completion>>('complete', [request]));
      const usage = { prompt_tokens: c.promptTokens, completion_tokens: c.completionTokens, total_tokens: c.promptTokens + c.completionTokens };
      return chat
        ? { id, object: 'chat.completion', created, model: modelName, adapter: b.adapter ?? null, choices: [{ index: 0, message: { role: 'assistant', content: c.text }, finish_reason: c.finish }], usage }
        : { id, object: 'text_completion', created, model: modelName, adapter: b.adapter ?? null, choices: [{ index: 0, text: c.text, finish_reason: c.finish }], usage };
    }
    // streamed: the status line goes out now; later errors go into the stream
    let gone = false;
    reply.raw.on('close', () => { if (!reply.raw.writableFinished) gone = true; });
    reply.hijack();
    reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    const send = (data: unknown) => {
      if (!gone) reply.raw.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
    };
    try {
      const c = await counted(chat ? 'chat' : 'completions', b.adapter, () => call<Labelled<Completion>>('complete', [request], (piece) => {
        send(chunk(piece, null));
        return !gone;
      }));
      send(chunk('', c.finish));
    } catch (e) {
      send({ error: { message: (e as Error).message, status: statusOf(e) } });
    }
    send('[DONE]');
    reply.raw.end();
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
            items: { type: 'object', additionalProperties: false, required: ['role', 'content'], properties: { role: { type: 'string', enum: ['system', 'user', 'assistant'] }, content: { type: 'string' } } },
          },
        },
      },
    },
  }, run(true));
}
