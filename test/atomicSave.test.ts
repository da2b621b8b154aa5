// Whole-directory atomic saves (lib/atomicDir.ts): a child process saving adapters (or checkpoints)
// into one directory in a loop is killed with SIGKILL at random moments, and the directory always
// loads as exactly one complete save; a crash injected at every step of the generic helper; save ids
// that refuse files from different saves; the rules for directories that hold other files.
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ADAPTER_FILES, loadAdapter, loadHead, saveAdapter, saveHead } from '../lib/adapterhub/files';
import { recoverDir, replaceDirAtomic } from '../lib/atomicDir';
import { loadBackbone } from '../lib/models/bert/load';
import type { Backbone } from '../lib/models/bert/model';
import { SafetensorsFile, writeSafetensors } from '../lib/io/safetensors';
import type { Tensor } from '../lib/tensor';
import { hasCheckpoint, loadCheckpoint, saveCheckpoint } from '../lib/train/checkpoint';
import { rng } from './helpers';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const child = require('./children/atomicSave.js') as {
  values(n: number, seed: number): Float32Array;
  makeModel(load: typeof loadBackbone): Promise<Backbone>;
  prepareSave(model: Backbone, k: number): string;
  checkpointData(k: number): { data: Parameters<typeof saveCheckpoint>[1]; shapes: Map<string, number[]> };
};

const CHILD = path.join(__dirname, 'children', 'atomicSave.js');
const ROOT = path.resolve(__dirname, '..');

const dirs: string[] = [];
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-atomic-'));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

// The child runs the built package: refuse to test a stale build.
beforeAll(() => {
  const built = (src: string, out: string) => fs.statSync(path.join(ROOT, out)).mtimeMs >= fs.statSync(path.join(ROOT, src)).mtimeMs;
  for (const [src, out] of [['lib/atomicDir.ts', 'dist/lib/atomicDir.js'], ['lib/adapterhub/files.ts', 'dist/lib/adapterhub/files.js'],
    ['lib/train/checkpoint.ts', 'dist/lib/train/checkpoint.js']])
    if (!fs.existsSync(path.join(ROOT, out)) || !built(src, out)) throw new Error(`${out} is older than ${src}: run npm run build:ts`);
});

const bits = (t: Tensor | Float32Array) => {
  const a = t instanceof Float32Array ? t : t.toArray();
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('hex');
};

/** The entries next to `dir` that belong to it: `<dir>.tmp-*`, `<dir>.old-*`. */
const siblingsOf = (dir: string) => fs.readdirSync(path.dirname(dir)).filter((n) => n.startsWith(`${path.basename(dir)}.`)).sort();

interface Round { saved: number; delay: number; code: number | null; signal: NodeJS.Signals | null; stderr: string }

/** Starts the child, waits for its first complete save, kills it with SIGKILL after `delay` ms. */
function killRound(args: string[], delay: number): Promise<Round> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [CHILD, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let saved = -1;
    let buf = '';
    let stderr = '';
    let timer: NodeJS.Timeout | null = null;
    const guard = setTimeout(() => p.kill('SIGKILL'), 30000);
    p.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const l of lines) {
        const m = /^saved (\d+)/.exec(l);
        if (m) saved = Number(m[1]);
      }
      if (saved >= 0 && !timer) timer = setTimeout(() => p.kill('SIGKILL'), delay);
    });
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(guard);
      if (timer) clearTimeout(timer);
      resolve({ saved, delay, code, signal, stderr });
    });
  });
}

describe('kill -9 while saving', () => {
  test('adapters: after every kill the directory loads as exactly one complete save (adapter and head); stale temporaries go on the next save', async () => {
    const KILLS = 20;
    const work = tmp();
    const dir = path.join(work, 'adapter');
    const ref = await child.makeModel(loadBackbone); // rebuilds the values of save k
    const probe = await loadBackbone(path.join(__dirname, 'fixtures', 'tiny-bert'), { device: 'cpu' });
    const r = rng(20240611);
    const stats = { kills: 0, rolledForward: 0, leftSiblings: 0, inProgressSaveLoaded: 0 };
    for (let i = 0; i < KILLS; i++) {
      const round = await killRound(['adapters', dir], Math.floor(r.uniform() * 40));
      expect(round.stderr).toBe('');
      expect(round.signal).toBe('SIGKILL');
      expect(round.saved).toBeGreaterThanOrEqual(0);
      stats.kills++;
      if (!fs.existsSync(dir)) stats.rolledForward++;
      if (siblingsOf(dir).length) stats.leftSiblings++;

      // the last complete save, or the one in progress if its swap had happened
      const res = loadAdapter(probe, dir);
      const matches = [round.saved, round.saved + 1].filter((k) => {
        const name = child.prepareSave(ref, k);
        if (name !== res.name) return false;
        const want = [...ref.adapterParameters(name)].concat([...ref.head(name)!.parameters()]);
        const got = new Map([...probe.adapterParameters(name)].concat([...probe.head(name)!.parameters()]));
        return want.length === got.size && want.every(([key, t]) => got.has(key) && bits(got.get(key)!) === bits(t));
      });
      expect({ kill: i, delay: round.delay, saved: round.saved, matches: matches.length }).toEqual({ kill: i, delay: round.delay, saved: round.saved, matches: 1 });
      if (matches[0] === round.saved + 1) stats.inProgressSaveLoaded++;
      probe.deleteAdapter(res.name);
      probe.deleteHead(res.name);
      expect(fs.readdirSync(dir).sort()).toEqual([ADAPTER_FILES.config, ADAPTER_FILES.weights, ADAPTER_FILES.headConfig, ADAPTER_FILES.headWeights].sort());

      // the next save (here by this process) removes what the killed one left
      if (i % 4 === 3) {
        saveAdapter(ref, dir, child.prepareSave(ref, 1000 + i));
        expect(siblingsOf(dir)).toEqual([]);
      }
    }
    console.log(`atomic adapter saves: ${JSON.stringify(stats)}`);
    ref.dispose();
    probe.dispose();
  });

  test('checkpoints: after every kill the checkpoint loads complete, state and tensors of one save', async () => {
    const work = tmp();
    const dir = path.join(work, 'ck');
    const r = rng(7);
    for (let i = 0; i < 10; i++) {
      const round = await killRound(['checkpoint', dir], Math.floor(r.uniform() * 30));
      expect(round.stderr).toBe('');
      expect(round.signal).toBe('SIGKILL');
      expect(hasCheckpoint(dir)).toBe(true);
      const ck = loadCheckpoint(dir);
      const k = ck.state.position.step;
      expect([round.saved, round.saved + 1]).toContain(k);
      const want = child.checkpointData(k).data;
      for (const m of ['params', 'expAvg', 'expAvgSq'] as const)
        for (const [key, v] of want[m]) expect(bits(ck[m].get(key)!)).toBe(bits(v));
      expect(fs.readdirSync(dir).sort()).toEqual([`checkpoint-${k}.safetensors`, 'trainer_state.json']);
    }
    const { data, shapes } = child.checkpointData(5000);
    saveCheckpoint(dir, data, shapes);
    expect(siblingsOf(dir)).toEqual([]);
    expect(loadCheckpoint(dir).state.position.step).toBe(5000);
  });
});

describe('replaceDirAtomic: a crash at each step', () => {
  const read = (d: string) => fs.readdirSync(d).sort().map((n) => `${n}=${fs.readFileSync(path.join(d, n), 'utf8')}`);
  const save = (d: string, label: string) => replaceDirAtomic(d, (t) => {
    fs.writeFileSync(path.join(t, 'a.txt'), label);
    fs.writeFileSync(path.join(t, 'b.txt'), label);
  }, { where: 'test', owns: (n) => n.endsWith('.txt') });

  // the rule: before the first rename the old save stays; from the first rename on, the new one wins
  test.each([
    ['mid-write', 'old', true], ['written', 'old', true], ['old-moved', 'new', false], ['new-moved', 'new', true], ['done', 'new', true],
  ] as const)('killed at %s: the directory holds the %s save', (step, expected, dirThere) => {
    const dir = path.join(tmp(), 'save');
    save(dir, 'old');
    const r = spawnSync(process.execPath, [CHILD, 'crash', step, dir, 'new'], { encoding: 'utf8' });
    expect(r.signal).toBe('SIGKILL');
    expect(fs.existsSync(dir)).toBe(dirThere);
    if (step === 'old-moved') expect(siblingsOf(dir).map((n) => n.replace(/-.*/, ''))).toEqual(['save.old', 'save.tmp']);
    expect(recoverDir(dir)).toBe(dir);
    expect(read(dir)).toEqual([`a.txt=${expected}`, `b.txt=${expected}`]);
    save(dir, 'next');
    expect(siblingsOf(dir)).toEqual([]);
    expect(read(dir)).toEqual(['a.txt=next', 'b.txt=next']);
  });

  test('a lone .old- sibling (a save already replaced) is never brought back; a first save that died leaves nothing', () => {
    const dir = path.join(tmp(), 'save');
    save(dir, 'one');
    const r = spawnSync(process.execPath, [CHILD, 'crash', 'new-moved', dir, 'two'], { encoding: 'utf8' });
    expect(r.signal).toBe('SIGKILL');
    expect(siblingsOf(dir)).toHaveLength(1); // save.old-…, not yet removed
    fs.rmSync(dir, { recursive: true }); // the user deletes the directory
    expect(recoverDir(dir)).toBe(dir);
    expect(fs.existsSync(dir)).toBe(false);

    const fresh = path.join(tmp(), 'first');
    spawnSync(process.execPath, [CHILD, 'crash', 'written', fresh, 'x'], { encoding: 'utf8' });
    expect(recoverDir(fresh)).toBe(fresh);
    expect(fs.existsSync(fresh)).toBe(false);
    save(fresh, 'y');
    expect(siblingsOf(fresh)).toEqual([]);
  });

  test('a directory with files a save does not write is refused and left as it was; a file is not a directory', () => {
    const dir = tmp();
    fs.writeFileSync(path.join(dir, 'a.txt'), 'mine');
    fs.writeFileSync(path.join(dir, 'notes.md'), 'keep me');
    expect(() => save(dir, 'x')).toThrow(/test: .* holds 1 entry that a save does not write \(notes\.md\); a save replaces the directory as a whole/);
    expect(read(dir)).toEqual(['a.txt=mine', 'notes.md=keep me']);
    expect(siblingsOf(dir)).toEqual([]);
    const file = path.join(tmp(), 'plain');
    fs.writeFileSync(file, '');
    expect(() => save(file, 'x')).toThrow(/is not a directory/);
  });

  test('the working directory is not replaced; a symlinked directory keeps its link', () => {
    const dir = tmp();
    const cwd = process.cwd();
    try {
      process.chdir(dir);
      expect(() => save('.', 'x')).toThrow(/is \(or holds\) the working directory/);
    } finally {
      process.chdir(cwd);
    }
    const real = path.join(tmp(), 'real');
    const link = path.join(tmp(), 'link');
    save(real, 'one');
    fs.symlinkSync(real, link);
    save(link, 'two');
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
    expect(read(real)).toEqual(['a.txt=two', 'b.txt=two']);
  });
});

describe('save ids', () => {
  let model: Backbone;
  beforeAll(async () => {
    model = await child.makeModel(loadBackbone);
  });
  afterAll(() => model.dispose());

  const copy = (from: string, to: string, names: string[]) => {
    for (const n of names) fs.copyFileSync(path.join(from, n), path.join(to, n));
  };

  function twoSaves(): [string, string] {
    const d1 = tmp();
    const d2 = tmp();
    saveAdapter(model, d1, child.prepareSave(model, 0));
    saveAdapter(model, d2, child.prepareSave(model, 2)); // the same adapter 'a', other values
    return [d1, d2];
  }

  test('every file of one save records the same id, a new one per save', () => {
    const [d1, d2] = twoSaves();
    const ids = (d: string) => [
      JSON.parse(fs.readFileSync(path.join(d, ADAPTER_FILES.config), 'utf8')).backbone.save_id,
      JSON.parse(fs.readFileSync(path.join(d, ADAPTER_FILES.headConfig), 'utf8')).save_id,
      SafetensorsFile.open(path.join(d, ADAPTER_FILES.weights)).metadata.save_id,
      SafetensorsFile.open(path.join(d, ADAPTER_FILES.headWeights)).metadata.save_id,
    ];
    const [a, b] = [ids(d1), ids(d2)];
    expect(a[0]).toMatch(/^[0-9a-f]{32}$/);
    expect(new Set(a).size).toBe(1);
    expect(new Set(b).size).toBe(1);
    expect(a[0]).not.toBe(b[0]);
  });

  test('config and weights, or adapter and head, from different saves are refused; nothing stays loaded', async () => {
    const probe = await loadBackbone(path.join(__dirname, 'fixtures', 'tiny-bert'), { device: 'cpu' });
    const [d1, d2] = twoSaves();
    const weights = tmp();
    copy(d1, weights, [ADAPTER_FILES.config, ADAPTER_FILES.headConfig, ADAPTER_FILES.headWeights]);
    copy(d2, weights, [ADAPTER_FILES.weights]);
    expect(() => loadAdapter(probe, weights)).toThrow(/adapter_config\.json and adapter\.safetensors in .* come from different saves/);
    const head = tmp();
    copy(d1, head, [ADAPTER_FILES.config, ADAPTER_FILES.weights]);
    copy(d2, head, [ADAPTER_FILES.headConfig, ADAPTER_FILES.headWeights]);
    expect(() => loadAdapter(probe, head)).toThrow(/adapter_config\.json and head_config\.json in .* come from different saves/);
    const headWeights = tmp();
    copy(d1, headWeights, [ADAPTER_FILES.headConfig]);
    copy(d2, headWeights, [ADAPTER_FILES.headWeights]);
    expect(() => loadHead(probe, headWeights)).toThrow(/head_config\.json and model_head\.safetensors in .* come from different saves/);
    expect(probe.adapterNames()).toEqual([]);
    expect(probe.head('a')).toBeUndefined();
    // each directory by itself loads
    loadAdapter(probe, d2);
    probe.dispose();
  });

  test('files without a save id (AdapterHub\'s) load, also next to files of ours', async () => {
    const [d1] = twoSaves();
    const hub = tmp();
    const cfg = JSON.parse(fs.readFileSync(path.join(d1, ADAPTER_FILES.config), 'utf8'));
    delete cfg.backbone;
    fs.writeFileSync(path.join(hub, ADAPTER_FILES.config), JSON.stringify(cfg, null, 2));
    const head = JSON.parse(fs.readFileSync(path.join(d1, ADAPTER_FILES.headConfig), 'utf8'));
    delete head.save_id;
    fs.writeFileSync(path.join(hub, ADAPTER_FILES.headConfig), JSON.stringify(head, null, 2));
    for (const f of [ADAPTER_FILES.weights, ADAPTER_FILES.headWeights]) {
      const st = SafetensorsFile.open(path.join(d1, f));
      const t: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
      for (const n of st.names()) t[n] = { dtype: 'F32', shape: st.info(n).shape, data: st.getFloat32(n) };
      writeSafetensors(path.join(hub, f), t, { format: 'pt' });
    }
    const probe = await loadBackbone(path.join(__dirname, 'fixtures', 'tiny-bert'), { device: 'cpu' });
    loadAdapter(probe, hub);
    child.prepareSave(model, 0);
    for (const [k, t] of model.adapterParameters('a')) expect(bits(probe.adapterParameters('a').get(k)!)).toBe(bits(t));
    for (const [k, t] of model.head('a')!.parameters()) expect(bits(probe.head('a')!.parameters().get(k)!)).toBe(bits(t));
    // our config with AdapterHub's weights file: no id to compare, it loads
    const mixed = tmp();
    copy(d1, mixed, [ADAPTER_FILES.config]);
    copy(hub, mixed, [ADAPTER_FILES.weights]);
    loadAdapter(probe, mixed, { loadAs: 'mixed' });
    // saving over an AdapterHub directory replaces it, pickles included
    fs.writeFileSync(path.join(hub, ADAPTER_FILES.pickleWeights), 'not read');
    saveAdapter(model, hub, 'a');
    expect(fs.readdirSync(hub).sort()).toEqual([ADAPTER_FILES.config, ADAPTER_FILES.weights, ADAPTER_FILES.headConfig, ADAPTER_FILES.headWeights].sort());
    probe.dispose();
  });

  test('saveHead into an adapter directory keeps the adapter and joins its save; per-file temporaries of older releases are dropped', async () => {
    const dir = tmp();
    saveAdapter(model, dir, child.prepareSave(model, 0), { withHead: false });
    fs.writeFileSync(path.join(dir, `${ADAPTER_FILES.weights}.tmp-123-0a1b2c`), 'left by an old release');
    saveHead(model, dir, 'a', { labels: ['x', 'y', 'z'] });
    expect(fs.readdirSync(dir).sort()).toEqual([ADAPTER_FILES.config, ADAPTER_FILES.weights, ADAPTER_FILES.headConfig, ADAPTER_FILES.headWeights].sort());
    const probe = await loadBackbone(path.join(__dirname, 'fixtures', 'tiny-bert'), { device: 'cpu' });
    expect(loadAdapter(probe, dir).labels).toEqual(['x', 'y', 'z']);
    expect(() => saveAdapter(model, path.join(dir, ADAPTER_FILES.config), 'a')).toThrow(/is not a directory/);
    fs.writeFileSync(path.join(dir, 'README.md'), '# mine');
    expect(() => saveAdapter(model, dir, 'a')).toThrow(/saveAdapter: .* holds 1 entry that a save does not write \(README\.md\)/);
    expect(fs.readFileSync(path.join(dir, 'README.md'), 'utf8')).toBe('# mine');
    probe.dispose();
  });

  test('a checkpoint whose state and tensors come from different saves is refused', () => {
    const d1 = path.join(tmp(), 'ck');
    const d2 = path.join(tmp(), 'ck');
    const a = child.checkpointData(3);
    saveCheckpoint(d1, a.data, a.shapes);
    saveCheckpoint(d2, a.data, a.shapes);
    fs.copyFileSync(path.join(d2, 'checkpoint-3.safetensors'), path.join(d1, 'checkpoint-3.safetensors'));
    expect(() => loadCheckpoint(d1)).toThrow(/checkpoint: trainer_state\.json and checkpoint-3\.safetensors in .* come from different saves/);
    fs.writeFileSync(path.join(d2, 'other.txt'), '');
    expect(() => saveCheckpoint(d2, a.data, a.shapes)).toThrow(/checkpoint: .* holds 1 entry that a save does not write \(other\.txt\)/);
  });
});
