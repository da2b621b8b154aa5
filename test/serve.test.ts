// `fused-adapters serve` over real HTTP on loopback: an encoder server (tiny BERT, a library of
// seq_bn adapters with heads, versions, a router) and a decoder server (tiny LLaMA with a chat
// tokenizer). Each request gets what a single direct call gives, also when many requests with mixed
// adapters arrive together; schema errors, unknown and foreign adapters, corrupt files, hot add and
// remove, admin routes, metrics and graceful shutdown.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { FastifyInstance } from 'fastify';
import { generateText, loadBackbone, loadDecoder, Tensor, Tokenizer } from '../lib';
import type { Backbone, Decoder } from '../lib';
import { createServer } from '../lib/serve/server';
import { ggufTokenizerFiles } from '../lib/train/tokenizer';
import { tinyChatTokenizerMetadata, writeTinyChatModel } from './decoderFixture';
import { rng } from './helpers';
import { HubServer, startHubServer } from './hubServer';

const FIX = path.join(__dirname, 'fixtures', 'tiny-bert');
const SEED = Math.floor(Math.random() * 2 ** 31);
let work: string;
beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-serve-'));
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

function randomize(params: Map<string, Tensor>, seed: number): void {
  const r = rng(seed);
  for (const t of params.values()) t.copyFrom(r.array(t.size, 0.3));
}

async function post(base: string, url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: any }> {
  const res = await fetch(base + url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  return { status: res.status, json: await res.json() };
}

/** The probabilities a single direct forward with this adapter and head gives. */
function direct(model: Backbone, tok: Tokenizer, name: string, text: string): number[] {
  model.setActiveAdapter(name);
  model.setActiveHead(name);
  const enc = tok.encodeBatch([text]);
  const r = model.forward({ inputIds: enc.inputIds, attentionMask: enc.attentionMask, tokenTypeIds: enc.tokenTypeIds, shape: enc.shape });
  const l = Array.from(r.logits!.toArray());
  r.dispose();
  const e = l.map((x) => Math.exp(x - Math.max(...l)));
  return e.map((x) => x / e.reduce((a, b) => a + b, 0));
}

describe(`an encoder server (seed ${SEED})`, () => {
  let ref: Backbone;
  let tok: Tokenizer;
  let lib: string;
  let app: FastifyInstance;
  let base: string;
  const LABELS: Record<string, string[]> = { a: ['no', 'yes'], b1: ['x', 'y', 'z'], b2: ['x', 'y', 'z'], router: ['a', 'b'] };
  const FOLDERS: Record<string, string> = { a: 'a', b1: 'b@1', b2: 'b@2', router: 'router' };

  beforeAll(async () => {
    ref = await loadBackbone(FIX, { device: 'cpu' });
    tok = await Tokenizer.fromDir(FIX);
    lib = path.join(work, 'library');
    fs.mkdirSync(lib);
    Object.keys(LABELS).forEach((name, i) => {
      ref.addAdapter(name, { config: 'seq_bn', reductionFactor: 4 });
      randomize(ref.adapterParameters(name), SEED + i);
      ref.addClassificationHead(name, { numLabels: LABELS[name].length });
      randomize(ref.head(name)!.parameters(), SEED + 50 + i);
      ref.saveAdapter(path.join(lib, FOLDERS[name]), name, { labels: LABELS[name] });
    });
    const served = await loadBackbone(FIX, { device: 'cpu' });
    app = await createServer({ model: served, tokenizer: tok, library: lib, maxBatch: 16, maxWaitMs: 10, cacheAdapters: 2, adminToken: 'sesame', watchMs: 0 });
    base = await app.listen({ port: 0, host: '127.0.0.1' });
  });
  afterAll(async () => {
    await app.close();
    ref.dispose();
  });

  test('health, the OpenAPI document and the adapter list', async () => {
    expect(await (await fetch(`${base}/healthz`)).json()).toMatchObject({ status: 'ok', kind: 'encoder' });
    const doc = await (await fetch(`${base}/openapi.json`)).json() as { paths: Record<string, unknown> };
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/v1/classify', '/v1/embed', '/v1/adapters']));
    const list = await (await fetch(`${base}/v1/adapters`)).json() as { backbone: { weight_hash: string }; adapters: { ref: string; compatible: boolean; backbone_hash: string }[] };
    expect(list.adapters.map((a) => a.ref).sort()).toEqual(['a@0', 'b@1', 'b@2', 'router@0']);
    expect(list.adapters.every((a) => a.compatible && a.backbone_hash === list.backbone.weight_hash)).toBe(true);
  });

  test('32 concurrent classify requests with mixed adapters each get what a single direct call gives', async () => {
    const texts = ['the cat sat', 'a dog ran far away', 'hello', 'the the the', 'is it raining today'];
    const jobs = Array.from({ length: 32 }, (_, i) => ({ adapter: ['a', 'b', 'b@1'][i % 3], text: texts[i % texts.length] }));
    const res = await Promise.all(jobs.map((j) => post(base, '/v1/classify', j)));
    res.forEach((r, i) => {
      expect(r.status).toBe(200);
      const name = jobs[i].adapter === 'a' ? 'a' : jobs[i].adapter === 'b' ? 'b2' : 'b1';
      const want = direct(ref, tok, name, jobs[i].text);
      const got = LABELS[name].map((l) => r.json.probabilities[l]);
      got.forEach((p: number, k: number) => expect(Math.abs(p - want[k])).toBeLessThan(1e-5));
      expect(r.json.label).toBe(LABELS[name][want.indexOf(Math.max(...want))]);
    });
    // texts in one request, and routing with "auto"
    const many = await post(base, '/v1/classify', { adapter: 'a', texts });
    expect(many.json.results).toHaveLength(texts.length);
    const auto = await post(base, '/v1/classify', { adapter: 'auto', texts });
    expect(auto.status).toBe(200);
    auto.json.results.forEach((r: { adapter: string }, i: number) => {
      const route = direct(ref, tok, 'router', texts[i]);
      expect(r.adapter).toBe(LABELS.router[route.indexOf(Math.max(...route))]);
    });
  });

  test('embeddings: the mean of the last hidden states, with and without an adapter', async () => {
    for (const adapter of [undefined, 'a']) {
      const r = await post(base, '/v1/embed', { adapter, text: 'the cat sat' });
      expect(r.status).toBe(200);
      ref.setActiveAdapter(adapter ?? null);
      const enc = tok.encodeBatch(['the cat sat']);
      const out = ref.forward({ inputIds: enc.inputIds, attentionMask: enc.attentionMask, tokenTypeIds: enc.tokenTypeIds, shape: enc.shape });
      const h = out.lastHiddenState.toArray();
      const H = ref.config.hiddenSize;
      const T = enc.shape[1];
      const want = Array.from({ length: H }, (_, d) => Array.from({ length: T }, (_, t) => h[t * H + d]).reduce((a, b) => a + b, 0) / T);
      out.dispose();
      r.json.embedding.forEach((x: number, d: number) => expect(Math.abs(x - want[d])).toBeLessThan(1e-5));
    }
  });

  test('bad requests get a 4xx JSON error and do not disturb the requests batched with them', async () => {
    const good = Array.from({ length: 6 }, () => post(base, '/v1/classify', { adapter: 'a', text: 'hello there' }));
    const bad = await Promise.all([
      post(base, '/v1/classify', { adapter: 'a' }),
      post(base, '/v1/classify', { adapter: 'a', text: '' }),
      post(base, '/v1/classify', { adapter: 'a', text: 5 }),
      post(base, '/v1/classify', { adapter: 'nope', text: 'hi' }),
      post(base, '/v1/classify', { adapter: 'a', text: 'word '.repeat(600) }),
      post(base, '/v1/classify', '{"adapter": "a", "text": '),
      post(base, '/v1/classify', { adapter: 'a', text: 'x'.repeat(2 << 20) }),
    ]);
    expect(bad.map((b) => b.status)).toEqual([400, 400, 400, 404, 400, 400, 413]);
    for (const b of bad) expect(typeof b.json.error?.message ?? b.json.message).toBe('string');
    expect(bad[3].json.error.message).toMatch(/no adapter 'nope' in the library/);
    expect(bad[4].json.error.message).toMatch(/takes \d+ tokens; the model reads at most/);
    for (const g of await Promise.all(good)) expect(g.status).toBe(200);
  });

  test('a foreign adapter is refused naming both hashes; a corrupt one is refused; hot add and remove; admin routes', async () => {
    // foreign: the same files, claiming another backbone
    fs.cpSync(path.join(lib, 'a'), path.join(lib, 'foreign'), { recursive: true });
    const cfgFile = path.join(lib, 'foreign', 'adapter_config.json');
    const cfg = JSON.parse(fs.readFileSync(cfgFile, 'utf8'));
    cfg.backbone.weight_hash = 'f'.repeat(64);
    fs.writeFileSync(cfgFile, JSON.stringify(cfg));
    // corrupt: a weights file cut short
    fs.cpSync(path.join(lib, 'a'), path.join(lib, 'broken'), { recursive: true });
    const wf = fs.readdirSync(path.join(lib, 'broken')).find((f) => f.startsWith('pytorch_adapter') || f.endsWith('.safetensors'))!;
    fs.truncateSync(path.join(lib, 'broken', wf), 100);
    expect((await post(base, '/v1/classify', { adapter: 'foreign', text: 'hi' })).status).toBe(404); // not scanned yet
    expect((await post(base, '/v1/adapters/reload', {})).status).toBe(401);
    expect((await post(base, '/v1/adapters/reload', {}, { authorization: 'Bearer sesame' })).status).toBe(200);
    const foreign = await post(base, '/v1/classify', { adapter: 'foreign', text: 'hi' });
    expect(foreign.status).toBe(409);
    expect(foreign.json.error.message).toMatch(/weight hash ffffffffffffffff…; this server's backbone .* has [0-9a-f]{16}…/);
    const broken = await post(base, '/v1/classify', { adapter: 'broken', text: 'hi' });
    expect(broken.status).toBe(422);
    expect(broken.json.error.message).toMatch(/adapter broken@0 could not be loaded/);
    expect((await post(base, '/v1/classify', { adapter: 'a', text: 'hi' })).status).toBe(200);
    // remove b@2: "b" falls back to b@1
    fs.rmSync(path.join(lib, 'b@2'), { recursive: true });
    await post(base, '/v1/adapters/reload', {}, { authorization: 'Bearer sesame' });
    const b = await post(base, '/v1/classify', { adapter: 'b', text: 'hello' });
    const want = direct(ref, tok, 'b1', 'hello');
    expect(Math.abs(b.json.probabilities.x - want[0])).toBeLessThan(1e-5);
    // admin load and unload
    expect((await post(base, '/v1/adapters', { adapter: 'router' }, { authorization: 'Bearer sesame' })).json).toEqual({ loaded: 'router@0' });
    const del = await fetch(`${base}/v1/adapters/router`, { method: 'DELETE', headers: { authorization: 'Bearer sesame' } });
    expect(await del.json()).toEqual({ unloaded: 'router@0' });
    const del2 = await fetch(`${base}/v1/adapters/router`, { method: 'DELETE', headers: { authorization: 'Bearer sesame' } });
    expect(del2.status).toBe(404);
    fs.rmSync(path.join(lib, 'foreign'), { recursive: true });
    fs.rmSync(path.join(lib, 'broken'), { recursive: true });
    await post(base, '/v1/adapters/reload', {}, { authorization: 'Bearer sesame' });
  });

  test('an adapter that cannot run batched fails its own requests only; a byte budget evicts least recently used adapters', async () => {
    const m = await loadBackbone(FIX, { device: 'cpu' });
    m.addAdapter('learned', { config: 'seq_bn', reductionFactor: 4, scaling: 'learned' });
    m.addClassificationHead('learned', { numLabels: 2 });
    m.saveAdapter(path.join(lib, 'learned'), 'learned', { labels: ['p', 'q'] });
    m.dispose();
    await post(base, '/v1/adapters/reload', {}, { authorization: 'Bearer sesame' });
    const [bad, good] = await Promise.all([post(base, '/v1/classify', { adapter: 'learned', text: 'hi' }), post(base, '/v1/classify', { adapter: 'a', text: 'hi' })]);
    expect(bad.status).toBe(500);
    expect(bad.json.error.message).toMatch(/learned scaling/);
    expect(good.status).toBe(200);
    fs.rmSync(path.join(lib, 'learned'), { recursive: true });
    // a second server whose cache holds about one adapter's bytes
    const one = (await (await fetch(`${base}/v1/adapters`)).json() as { cache: { bytes: number; adapters: number } }).cache;
    const small = await createServer({ model: await loadBackbone(FIX, { device: 'cpu' }), tokenizer: tok, library: lib, cacheAdapterBytes: 1.5 * one.bytes / one.adapters, watchMs: 0 });
    const url = await small.listen({ port: 0, host: '127.0.0.1' });
    try {
      for (const name of ['a', 'b@1', 'a']) expect((await post(url, '/v1/classify', { adapter: name, text: 'hi' })).status).toBe(200);
      const list = await (await fetch(`${url}/v1/adapters`)).json() as { adapters: { ref: string; loaded: boolean }[]; cache: { adapters: number } };
      expect(list.cache.adapters).toBe(1);
      expect(list.adapters.filter((x) => x.loaded).map((x) => x.ref)).toEqual(['a@0']);
      expect(await (await fetch(`${url}/metrics`)).text()).toMatch(/fa_adapter_cache_total\{event="evict"\} 2/);
    } finally {
      await small.close();
    }
  });

  test('metrics count the requests sent, per adapter', async () => {
    const before = await (await fetch(`${base}/metrics`)).text();
    const count = (text: string) => Number(/fa_requests_total\{endpoint="classify",adapter="b@1"\} (\d+)/.exec(text)?.[1] ?? 0);
    await Promise.all(Array.from({ length: 5 }, () => post(base, '/v1/classify', { adapter: 'b@1', text: 'one two' })));
    const after = await (await fetch(`${base}/metrics`)).text();
    expect(count(after) - count(before)).toBe(5);
    expect(after).toMatch(/fa_adapter_cache_total\{event="(hit|miss|evict)"\} \d+/);
    expect(after).toMatch(/fa_batch_rows_bucket/);
  });
});

describe(`a decoder server (seed ${SEED})`, () => {
  let model: Decoder;
  let tok: Tokenizer;
  let app: FastifyInstance;
  let base: string;

  beforeAll(async () => {
    const dir = writeTinyChatModel(path.join(work, 'llm'), SEED, ggufTokenizerFiles(tinyChatTokenizerMetadata()));
    model = await loadDecoder(dir, { device: 'cpu' });
    tok = await Tokenizer.fromDir(dir);
    const lib = path.join(work, 'llm-library');
    for (const [i, name] of ['p', 'q'].entries()) {
      model.addAdapter(name, { config: 'seq_bn', reductionFactor: 4 });
      randomize(model.adapterParameters(name), SEED + 7 * i);
      model.saveAdapter(path.join(lib, name), name);
    }
    const served = await loadDecoder(dir, { device: 'cpu' });
    app = await createServer({ model: served, tokenizer: tok, library: lib, maxBatch: 8, watchMs: 0 });
    base = await app.listen({ port: 0, host: '127.0.0.1' });
  });
  afterAll(async () => {
    await app.close();
    model.dispose();
  });

  test('completions and chat completions, concurrent with mixed adapters, equal single generate calls', async () => {
    const jobs = Array.from({ length: 9 }, (_, i) => ({
      adapter: [undefined, 'p', 'q'][i % 3], chat: i % 2 === 0, prompt: ['the tea', 'he t', 'tea the'][i % 3],
      temperature: i % 4 === 3 ? 0.8 : 0, seed: i,
    }));
    const res = await Promise.all(jobs.map((j) => (j.chat
      ? post(base, '/v1/chat/completions', { adapter: j.adapter, messages: [{ role: 'user', content: j.prompt }], max_tokens: 12, temperature: j.temperature, seed: j.seed })
      : post(base, '/v1/completions', { adapter: j.adapter, prompt: j.prompt, max_tokens: 12, temperature: j.temperature, seed: j.seed }))));
    for (const [i, j] of jobs.entries()) {
      expect(res[i].status).toBe(200);
      const want = await generateText(model, tok, j.chat ? [{ role: 'user', content: j.prompt }] : j.prompt,
        { maxNewTokens: 12, temperature: j.temperature, seed: j.seed, adapter: j.adapter ?? null });
      const c = res[i].json.choices[0];
      expect(j.chat ? c.message.content : c.text).toBe(want);
      expect(res[i].json.usage.completion_tokens).toBeGreaterThan(0);
    }
  });

  test('streaming sends the same text as server-sent events, ending with [DONE]', async () => {
    const body = { adapter: 'p', messages: [{ role: 'user', content: 'the tea' }], max_tokens: 12 };
    const plain = await post(base, '/v1/chat/completions', body);
    const res = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...body, stream: true }) });
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
    const events = (await res.text()).split('\n\n').filter(Boolean).map((e) => e.replace(/^data: /, ''));
    expect(events[events.length - 1]).toBe('[DONE]');
    const text = events.slice(0, -1).map((e) => JSON.parse(e).choices[0].delta.content ?? '').join('');
    expect(text).toBe(plain.json.choices[0].message.content);
    expect(JSON.parse(events[events.length - 2]).choices[0].finish_reason).toMatch(/stop|length/);
  });

  test('graceful shutdown: requests in flight finish, new ones are turned away, then the server closes', async () => {
    // streams that have sent their first token are surely in flight when close() begins
    const streams = await Promise.all(Array.from({ length: 4 }, async (_, i) => {
      const res = await fetch(`${base}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: 'the tea', max_tokens: 40, stream: true, adapter: i % 2 ? 'p' : undefined }) });
      const reader = res.body!.getReader();
      const first = await reader.read();
      return { reader, text: new TextDecoder().decode(first.value) };
    }));
    const closing = app.close();
    const late = await fetch(`${base}/healthz`).then((r) => r.status, () => 'refused');
    expect([503, 'refused']).toContain(late);
    const ends = await Promise.all(streams.map(async (st) => {
      let text = st.text;
      for (let c = await st.reader.read(); !c.done; c = await st.reader.read()) text += new TextDecoder().decode(c.value);
      return text;
    }));
    await closing;
    for (const t of ends) expect(t.trim().endsWith('data: [DONE]')).toBe(true);
    await expect(fetch(`${base}/healthz`)).rejects.toThrow();
  });
});

describe('a decoder named by a hub id, served from the worker thread', () => {
  const saved: Record<string, string | undefined> = {};
  let hub: HubServer;
  let app: FastifyInstance | undefined;
  beforeAll(async () => {
    const dir = writeTinyChatModel(path.join(work, 'hub-llm'), SEED, ggufTokenizerFiles(tinyChatTokenizerMetadata()));
    hub = await startHubServer({ 'org/tiny-chat': { dir } });
    for (const k of ['HF_ENDPOINT', 'HF_HOME', 'HF_HUB_CACHE', 'HF_HUB_OFFLINE']) saved[k] = process.env[k];
    process.env.HF_ENDPOINT = hub.url;
    process.env.HF_HOME = path.join(work, 'hf-home');
    delete process.env.HF_HUB_CACHE;
    delete process.env.HF_HUB_OFFLINE;
  });
  afterAll(async () => {
    await app?.close();
    await hub.close();
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  test('it is tried as an encoder, found to be a LLaMA, and served as a decoder', async () => {
    const lib = path.join(work, 'empty-library');
    fs.mkdirSync(lib, { recursive: true });
    app = await createServer({ source: 'org/tiny-chat', device: 'cpu', library: lib, watchMs: 0 });
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    expect(await (await fetch(`${base}/healthz`)).json()).toMatchObject({ status: 'ok', kind: 'decoder' });
    const r = await post(base, '/v1/completions', { prompt: 'the tea', max_tokens: 6 });
    expect(r.status).toBe(200);
    expect(r.json.usage.completion_tokens).toBeGreaterThan(0);
  });
});
