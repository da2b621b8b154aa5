// `fused-adapters serve` as users start it: the CLI, the model in a worker thread. The event loop
// answers /healthz quickly while large classify batches compute; SIGTERM finishes in-flight requests.
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadBackbone, Tensor } from '../lib';
import { rng } from './helpers';

const CLI = path.join(__dirname, '..', 'dist', 'lib', 'cli.js');
const FIX = path.join(__dirname, 'fixtures', 'tiny-bert');
let work: string;
let child: ChildProcess;
let base: string;
let stderr = '';

function randomize(params: Map<string, Tensor>, seed: number): void {
  const r = rng(seed);
  for (const t of params.values()) t.copyFrom(r.array(t.size, 0.3));
}

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-serve-cli-'));
  const lib = path.join(work, 'library');
  const m = await loadBackbone(FIX, { device: 'cpu' });
  for (const name of ['a', 'b']) {
    m.addAdapter(name, { config: 'seq_bn', reductionFactor: 4 });
    randomize(m.adapterParameters(name), name.charCodeAt(0));
    m.addClassificationHead(name, { numLabels: 2 });
    m.saveAdapter(path.join(lib, name), name, { labels: ['neg', 'pos'] });
  }
  m.dispose();
  child = spawn(process.execPath, [CLI, 'serve', '--model', FIX, '--adapters', lib, '--port', '0', '--device', 'cpu', '--quiet', '--max-batch', '64'], { stdio: ['ignore', 'ignore', 'pipe'] });
  base = await new Promise<string>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(stderr);
      if (m) resolve(m[1]);
    });
    child.on('exit', (code) => reject(new Error(`serve exited with ${code}: ${stderr}`)));
  });
});
afterAll(() => {
  if (child.exitCode === null) child.kill('SIGKILL');
  fs.rmSync(work, { recursive: true, force: true });
});

const classify = (body: unknown) => fetch(`${base}/v1/classify`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

test('the CLI serves classify requests naming adapters, and metrics', async () => {
  const r = await classify({ adapter: 'b', text: 'hello there' });
  expect(r.status).toBe(200);
  const j = await r.json() as { label: string; probabilities: Record<string, number> };
  expect(['neg', 'pos']).toContain(j.label);
  expect(j.probabilities.neg + j.probabilities.pos).toBeCloseTo(1, 5);
  expect(await (await fetch(`${base}/metrics`)).text()).toMatch(/fa_requests_total\{endpoint="classify",adapter="b@0"\} 1/);
});

test('/healthz answers while large batches compute in the worker', async () => {
  const long = 'the quick brown fox jumps over the lazy dog '.repeat(5); // under tiny-bert's 64 positions
  const load = Array.from({ length: 48 }, (_, i) => classify({ adapter: i % 2 ? 'a' : 'b', texts: new Array(64).fill(long) }));
  let busy = true;
  const all = Promise.all(load).finally(() => { busy = false; });
  const times: number[] = [];
  await new Promise((r) => setTimeout(r, 50));
  while (busy) {
    const t0 = performance.now();
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    if (busy) times.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 10));
  }
  const statuses = await all;
  for (const r of statuses) if (r.status !== 200) throw new Error(`classify: ${r.status} ${await r.text()}`);
  expect(times.length).toBeGreaterThan(3);
  times.sort((a, b) => a - b);
  console.log(`healthz during load: ${times.length} checks, median ${times[times.length >> 1].toFixed(1)} ms, max ${times[times.length - 1].toFixed(1)} ms`);
  expect(times[times.length >> 1]).toBeLessThan(50);
});

test('SIGTERM: requests in flight finish, then the process exits', async () => {
  const inFlight = Array.from({ length: 8 }, () => classify({ adapter: 'a', texts: new Array(32).fill('some words to classify here') }));
  await new Promise((r) => setTimeout(r, 30));
  child.kill('SIGTERM');
  const done = await Promise.all(inFlight.map((p) => p.then((r) => r.status, () => 'refused')));
  const code = await new Promise((r) => (child.exitCode !== null ? r(child.exitCode) : child.on('exit', r)));
  expect(code).toBe(0);
  expect(done.filter((s) => s === 200).length).toBeGreaterThan(0);
  expect(done.every((s) => s === 200 || s === 503 || s === 'refused')).toBe(true);
});
