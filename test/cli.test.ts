// The command line as a person uses it: train → files → eval / predict / summary, errors a
// person can act on, and the demo on a reduced setting.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { runDemo } from '../lib/demo/run';

const root = path.resolve(__dirname, '..');
const CLI = path.join(root, 'dist', 'lib', 'cli.js');
const MODEL = path.join(__dirname, 'fixtures', 'tiny-bert');

function cli(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: root, encoding: 'utf8', input, env: { ...process.env, FUSED_ADAPTERS_DEVICE: 'cpu' } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('fused-adapters command line', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-cli-'));
  const trainFile = path.join(tmp, 'train.jsonl');
  const evalFile = path.join(tmp, 'eval.csv');
  const rows = (n: number) => Array.from({ length: n }, (_, i) => ({ text: i % 2 ? 'please refund my order' : 'the order is good thanks', label: i % 2 ? 'refund' : 'ok' }));
  fs.writeFileSync(trainFile, rows(24).map((r) => JSON.stringify(r)).join('\n'));
  fs.writeFileSync(evalFile, 'text,label\n' + rows(6).map((r) => `"${r.text}",${r.label}`).join('\n'));
  const out = path.join(tmp, 'adapter');

  test('train writes an AdapterHub adapter with its head; eval, predict and summary read it', () => {
    const t = cli(['train', '--model', MODEL, '--train', trainFile, '--eval', evalFile, '--adapter', 'pfeiffer', '--name', 'support',
      '--epochs', '2', '--lr', '0.003', '--batch-size', '8', '--out', out]);
    expect(t.err).not.toMatch(/fused-adapters:/);
    expect(t.code).toBe(0);
    expect(t.out).toMatch(/eval: accuracy/);
    for (const f of ['adapter_config.json', 'adapter.safetensors', 'head_config.json', 'model_head.safetensors'])
      expect(fs.existsSync(path.join(out, f))).toBe(true);
    const e = cli(['eval', '--model', MODEL, '--adapter', out, '--data', evalFile]);
    expect(e.code).toBe(0);
    expect(JSON.parse(e.out.trim().split('\n').pop()!)).toMatchObject({ adapter: 'support', count: 6 });
    const p = cli(['predict', '--model', MODEL, '--adapter', out, 'please refund my order']);
    expect(p.code).toBe(0);
    const pred = JSON.parse(p.out.trim());
    expect(pred.task).toBe('support');
    expect(['refund', 'ok']).toContain(pred.label);
    expect(Object.values(pred.probabilities as Record<string, number>).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 4);
    const ps = cli(['predict', '--model', MODEL, '--adapter', out], 'support: the order is good\n');
    expect(JSON.parse(ps.out.trim()).text).toBe('the order is good');
    const s = cli(['summary', '--model', MODEL, '--adapter', out]);
    expect(s.out).toMatch(/adapter support \(seq_bn/);
  });

  test('errors a person can act on', () => {
    expect(cli(['train', '--model', MODEL, '--train', path.join(tmp, 'nope.jsonl'), '--out', out]).err).toMatch(/fused-adapters: training file '.*nope.jsonl' does not exist/);
    const bad = path.join(tmp, 'bad.jsonl');
    fs.writeFileSync(bad, JSON.stringify({ sentence: 'x', label: 'a' }));
    expect(cli(['train', '--model', MODEL, '--train', bad, '--out', out]).err).toMatch(/column 'text'/);
    const unknown = path.join(tmp, 'unknown.jsonl');
    fs.writeFileSync(unknown, JSON.stringify({ text: 'x', label: 'mystery' }));
    expect(cli(['train', '--model', MODEL, '--train', trainFile, '--eval', unknown, '--out', out]).err).toMatch(/unknown label 'mystery'/);
    expect(cli(['train', '--model', MODEL, '--train', trainFile, '--adapter', 'lora', '--out', out]).err).toMatch(/adapter config 'lora' is unknown/);
    expect(cli(['predict', '--model', path.join(__dirname, 'fixtures', 'tiny-roberta'), '--adapter', out, 'hi']).err).toMatch(/fused-adapters: .*(bert|roberta)/);
    expect(cli(['train', '--model', MODEL, '--train', trainFile, '--out', out, '--epochs', '0']).err).toMatch(/positive integer/);
  });
});

describe('demo', () => {
  test('trains one adapter per task, routes queries, and reports sizes (reduced setting)', async () => {
    const lines: string[] = [];
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-demo-'));
    const r = await runDemo({ device: 'cpu', outDir: dir, model: false, perIntent: 12, epochs: 2, log: (l) => lines.push(l) });
    expect(r.tasks.map((t) => t.name)).toEqual(['order_status', 'tech_support', 'billing']);
    expect(r.routed).toHaveLength(6);
    for (const q of r.routed) expect(['order_status', 'tech_support', 'billing']).toContain(q.routedTask);
    expect(r.routerAccuracy).toBeGreaterThanOrEqual(0);
    expect(r.trainableParams).toBeLessThan(r.backboneParams / 5);
    expect(r.tasks[0].adapterBytes).toBeLessThan(r.backboneBytes);
    expect(lines.join('\n')).toMatch(/RANDOM weights/);
    expect(lines.join('\n')).toMatch(/accuracy .* → /);
  });
});
