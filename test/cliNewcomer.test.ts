// The command line as a newcomer meets it (issue 12): outputs never land on inputs and are checked
// before training starts; adapters are named after their folder and routed by those names; eval
// takes the column flags; NaN from a damaged backbone is an error; small messages read right.
// Each case runs the real binary in a temporary directory and checks the exit code, the message
// and that no input file changed.
import { spawnSync } from 'child_process';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.resolve(__dirname, '..');
const CLI = path.join(root, 'dist', 'lib', 'cli.js');
const MODEL = path.join(__dirname, 'fixtures', 'tiny-bert');

let work: string;
beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-newcomer-'));
  const rows = (n: number, text = 'text', label = 'label') => Array.from({ length: n }, (_, i) => JSON.stringify({
    [text]: i % 2 ? 'please refund my order' : 'the order is good thanks', [label]: i % 2 ? 'refund' : 'ok',
  })).join('\n');
  fs.writeFileSync(path.join(work, 't2.jsonl'), rows(16));
  fs.writeFileSync(path.join(work, 'custom.jsonl'), rows(8, 'sentence', 'intent'));
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

function cli(args: string[], input?: string) {
  const r = spawnSync(CLI, args, { cwd: work, encoding: 'utf8', input, env: { ...process.env, FUSED_ADAPTERS_DEVICE: 'cpu' } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** Every file under the work directory with its hash: to show that a refused command changed nothing. */
function snapshot(): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[path.relative(work, p)] = createHash('sha256').update(fs.readFileSync(p)).digest('hex');
    }
  };
  walk(work);
  return out;
}

const train = (extra: string[]) => ['train', '--model', MODEL, '--train', 't2.jsonl', '--epochs', '1', '--batch-size', '8', ...extra];

test('the CLI is executable as built (npx fused-adapters works in a clone)', () => {
  expect(fs.statSync(CLI).mode & 0o111).toBe(0o111);
  const r = cli(['--version']);
  expect(r.code).toBe(0);
  expect(r.out.trim()).toMatch(/^\d+\.\d+\.\d+/);
});

describe('outputs never land on inputs, and are checked before the first step', () => {
  test.each([
    [['--log', 't2.jsonl', '--out', 'o1'], /train: --log t2\.jsonl is the --train input; writing there would change or destroy it/],
    [['--log', './sub/../t2.jsonl', '--out', 'o1'], /--log \.\/sub\/\.\.\/t2\.jsonl is the --train input/],
    [['--eval', 't2.jsonl', '--log', 't2.jsonl', '--out', 'o1'], /--log t2\.jsonl is the --train input/],
    [['--out', 't2.jsonl/sub'], /train: cannot create --out t2\.jsonl\/sub: .*t2\.jsonl is not a directory/],
    [['--out', 't2.jsonl'], /train: --out t2\.jsonl is the --train input/],
    [['--out', '.'], /train: --out \. holds the --train input t2\.jsonl; a save replaces that directory as a whole/],
    [['--out', MODEL], /train: --out .*tiny-bert is the --model input/],
    [['--out', 'o1', '--checkpoint-dir', 'o1'], /train: --out and --checkpoint-dir are the same path \(o1\)/],
    [['--out', 'o1', '--log', 'o1/log.jsonl'], /train: --log o1\/log\.jsonl lies inside --out o1, which a save replaces as a whole/],
    [['--out', 'o1', '--resume'], /--resume needs --checkpoint-dir/],
  ])('train %j is refused at once, changing nothing', (extra, msg) => {
    const before = snapshot();
    const t0 = Date.now();
    const r = cli(train(extra as string[]));
    expect(r.err).toMatch(msg);
    expect(r.code).toBe(1);
    expect(r.out).not.toMatch(/training adapter/); // refused before the model loaded
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect(snapshot()).toEqual(before);
  });

  test('an --out directory holding other files is refused before training', () => {
    fs.mkdirSync(path.join(work, 'mine'));
    fs.writeFileSync(path.join(work, 'mine', 'notes.md'), 'keep');
    const before = snapshot();
    const r = cli(train(['--out', 'mine']));
    expect(r.err).toMatch(/train: --out: mine holds 1 entry that a save does not write \(notes\.md\)/);
    expect(r.out).not.toMatch(/training adapter/);
    expect(snapshot()).toEqual(before);
  });
});

describe('adapters named after their folders, routed by name', () => {
  beforeAll(() => {
    for (const d of ['billing', 'support']) {
      const r = cli(train(['--out', d, '--log', `${d}.log.jsonl`]));
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      expect(r.out).toMatch(new RegExp(`saved adapter '${d}' to ${d}`));
      expect(r.out).toMatch(/^2 steps, /m); // plural right; 16 examples / 8 per batch
    }
  });

  test('two trained adapters route by their folder names; the log went to its own file', () => {
    expect(fs.readFileSync(path.join(work, 'billing.log.jsonl'), 'utf8')).toMatch(/"event":"step"/);
    const r = cli(['predict', '--model', MODEL, '--adapter', 'billing', '--adapter', 'support'], 'billing: my order\nsupport: thanks\n');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out.trim().split('\n').map((l) => JSON.parse(l).task)).toEqual(['billing', 'support']);
    const which = cli(['predict', '--model', MODEL, '--adapter', 'billing', '--adapter', 'support', 'no prefix']);
    expect(which.code).toBe(1);
    expect(which.err).toMatch(/which adapter for "no prefix"\? prefix it with one of billing, support \("name: text"\) or pass --task/);
  });

  test('--adapter name=dir loads under another name; two folders saved under one name must be named apart', () => {
    const r = cli(['predict', '--model', MODEL, '--adapter', 'refunds=billing', '--adapter', 'support', '--task', 'refunds', 'hello']);
    expect(r.err).toBe('');
    expect(JSON.parse(r.out.trim()).task).toBe('refunds');
    fs.cpSync(path.join(work, 'billing'), path.join(work, 'billing-copy'), { recursive: true });
    const twice = cli(['predict', '--model', MODEL, '--adapter', 'billing', '--adapter', 'billing-copy', 'billing: x']);
    expect(twice.code).toBe(1);
    expect(twice.err).toMatch(/two adapters are named 'billing' \(billing and billing-copy\); load them under names of your own: --adapter billing=billing --adapter billing-copy=billing-copy/);
    const unknownTask = cli(['predict', '--model', MODEL, '--adapter', 'billing', '--task', 'nope', 'x']);
    expect(unknownTask.err).toMatch(/--task nope: no adapter of that name \(loaded: billing\)/);
  });

  test('predict without --adapter says what to pass', () => {
    const r = cli(['predict', '--model', MODEL, 'hello']);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/predict needs an adapter: --adapter <dir>/);
  });

  test('eval takes --text-column and --label-column; a missing column names the flag', () => {
    const t = cli(train(['--train', 'custom.jsonl', '--text-column', 'sentence', '--label-column', 'intent', '--out', 'custom']));
    expect(t.err).toBe('');
    const e = cli(['eval', '--model', MODEL, '--adapter', 'custom', '--data', 'custom.jsonl', '--text-column', 'sentence', '--label-column', 'intent']);
    expect(e.err).toBe('');
    expect(JSON.parse(e.out.trim())).toMatchObject({ adapter: 'custom', count: 8 });
    const missing = cli(['eval', '--model', MODEL, '--adapter', 'custom', '--data', 'custom.jsonl']);
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/missing column 'text' .*choose the text column with --text-column/);
    expect(missing.err).not.toMatch(/textColumn/);
  });

  test('a backbone with scrambled weights: predict and eval fail naming where NaN appeared, exit 1', () => {
    const bad = path.join(work, 'bad-model');
    fs.mkdirSync(bad);
    for (const f of fs.readdirSync(MODEL)) fs.copyFileSync(path.join(MODEL, f), path.join(bad, f));
    const file = path.join(bad, 'model.safetensors');
    const bytes = fs.readFileSync(file);
    const data = 8 + Number(bytes.readBigUInt64LE(0));
    let s = 99;
    for (let i = data + 512; i < data + 4000; i++) bytes[i] ^= (s = (s * 1103515245 + 12345) % 2 ** 31) & 0xff;
    for (let i = data + 512; i < data + 4000; i += 4) if (!Number.isFinite(bytes.readFloatLE(i))) bytes[i + 3] &= 0xbf;
    fs.writeFileSync(file, bytes);
    const p = cli(['predict', '--model', bad, '--adapter', 'billing', 'my order']);
    expect(p.code).toBe(1);
    expect(p.err).toMatch(/fused-adapters: forward: non-finite values \(.*\) first appear in /);
    expect(p.out).toBe('');
    expect(p.err.match(/different weights/g)).toHaveLength(1); // the weight-hash warning, once
    const e = cli(['eval', '--model', bad, '--adapter', 'billing', '--data', 't2.jsonl']);
    expect(e.code).toBe(1);
    expect(e.err).toMatch(/non-finite values/);
  });
});
