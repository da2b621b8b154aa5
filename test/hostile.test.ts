// Hostile files and configs (issue 11): values that size allocations are checked against each
// other and against the weights file's header before anything is allocated; silent wraps,
// integer weights, duplicate header names, non-finite weights and bad names are refused.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { fill, full, loadBackbone, memoryStats, saveAdapter, loadAdapter, setMemoryBudget, tensor, zeros } from '../lib';
import { SafetensorsFile, TensorToWrite, writeSafetensors } from '../lib/io/safetensors';

const FIX = path.join(__dirname, 'fixtures', 'tiny-bert');
const CLI = path.join(__dirname, '..', 'dist', 'lib', 'cli.js');
let work: string;
beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-hostile-'));
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

let n = 0;
/** tiny-bert copied with its config edited and its tensors rewritten by `edit`. */
function variant(editConfig: (c: Record<string, unknown>) => void, edit?: (t: Record<string, TensorToWrite>) => void): string {
  const dir = path.join(work, `v${n++}`);
  fs.mkdirSync(dir);
  const cfg = JSON.parse(fs.readFileSync(path.join(FIX, 'config.json'), 'utf8'));
  editConfig(cfg);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
  if (edit) {
    const src = SafetensorsFile.open(path.join(FIX, 'model.safetensors'));
    const t: Record<string, TensorToWrite> = {};
    for (const name of src.names()) t[name] = { dtype: 'F32', shape: src.info(name).shape, data: src.getFloat32(name) };
    src.close();
    edit(t);
    writeSafetensors(path.join(dir, 'model.safetensors'), t);
  } else {
    fs.copyFileSync(path.join(FIX, 'model.safetensors'), path.join(dir, 'model.safetensors'));
  }
  return dir;
}

async function timed<T>(p: Promise<T>): Promise<{ ms: number; err: Error | null }> {
  const t0 = Date.now();
  try {
    await p;
    return { ms: Date.now() - t0, err: null };
  } catch (e) {
    return { ms: Date.now() - t0, err: e as Error };
  }
}

describe('config values that size allocations', () => {
  test.each([5_000_000, 1e9, 1e6])('num_hidden_layers %d fails at once, naming the field, before any allocation', async (layers) => {
    const dir = variant((c) => { c.num_hidden_layers = layers; });
    const before = memoryStats('cpu').liveTensors;
    setMemoryBudget({ host: memoryStats('cpu').allocatedBytes + 16 * 2 ** 20 }); // memory is the point: 16 MiB to spare
    const r = await timed(loadBackbone(dir, { device: 'cpu' })).finally(() => setMemoryBudget({ host: null }));
    expect(r.err?.message).toMatch(/num_hidden_layers must be an integer in \[1, 1000\]/);
    expect(r.ms).toBeLessThan(2000);
    expect(memoryStats('cpu').liveTensors).toBeLessThanOrEqual(before); // earlier tests' dropped tensors may be collected meanwhile
  });

  test('a layer count within limits but beyond the file fails on the header with a summary', async () => {
    const dir = variant((c) => { c.num_hidden_layers = 900; });
    const r = await timed(loadBackbone(dir, { device: 'cpu' }));
    expect(r.err?.message).toMatch(/config.json says num_hidden_layers: 900, but the weights hold 2 layer\(s\) \(no 'bert\.encoder\.layer\.2\.attention\.self\.query\.weight'\)/);
    expect(r.ms).toBeLessThan(2000);
  });

  test('the CLI reports the same and exits 1', () => {
    const dir = variant((c) => { c.num_hidden_layers = 5_000_000; });
    const p = spawnSync(process.execPath, [CLI, 'summary', '--model', dir], { encoding: 'utf8', timeout: 60_000 });
    expect(p.status).toBe(1);
    expect(p.stderr).toMatch(/num_hidden_layers must be an integer/);
  });

  test.each([
    ['layer_norm_eps', -1, /layer_norm_eps must be in \(0, 1\)/],
    ['hidden_dropout_prob', 2, /hidden_dropout_prob must be in \[0, 1\)/],
    ['attention_probs_dropout_prob', -0.5, /attention_probs_dropout_prob must be in \[0, 1\)/],
    ['hidden_size', 1e7, /hidden_size must be an integer in \[1, 65536\]/],
    ['vocab_size', 2.5, /vocab_size must be an integer/],
    ['pad_token_id', 1e9, /pad_token_id must be a token id/],
  ])('%s = %p is refused', async (field, value, msg) => {
    const dir = variant((c) => { c[field] = value; });
    await expect(loadBackbone(dir, { device: 'cpu' })).rejects.toThrow(msg);
  });

  test('a vocabulary larger than the embedding in the file fails on the header', async () => {
    const dir = variant((c) => { c.vocab_size = 3_000_000; });
    const r = await timed(loadBackbone(dir, { device: 'cpu' }));
    expect(r.err?.message).toMatch(/word_embeddings\.weight' has shape \[\d+, 64\], the config needs \[3000000, 64\]/);
    expect(r.ms).toBeLessThan(2000);
  });
});

describe('weights files', () => {
  test('integer tensors in a backbone are refused, not read as floats', async () => {
    for (const dtype of ['I64', 'I32'] as const) {
      const dir = variant(() => {}, (t) => {
        const k = 'bert.encoder.layer.0.attention.output.LayerNorm.bias';
        t[k] = { dtype, shape: t[k].shape, data: new Int32Array(t[k].shape[0]).fill(1) };
      });
      await expect(loadBackbone(dir, { device: 'cpu' })).rejects.toThrow(new RegExp(`LayerNorm\\.bias' is ${dtype}; backbone weights must be floating point`));
    }
  });

  test('NaN or Infinity in backbone weights is refused unless allowed', async () => {
    const dir = variant(() => {}, (t) => {
      const k = 'bert.encoder.layer.1.intermediate.dense.weight';
      (t[k].data as Float32Array)[7] = NaN;
      (t['bert.embeddings.LayerNorm.weight'].data as Float32Array)[3] = Infinity;
    });
    await expect(loadBackbone(dir, { device: 'cpu' })).rejects.toThrow(/holds (NaN|Infinity) at element (7|3) \(pass allowNonFinite: true/);
    const m = await loadBackbone(dir, { device: 'cpu', allowNonFinite: true });
    m.dispose();
  });

  test('a tensor named twice in a safetensors header is refused', async () => {
    const dir = path.join(work, 'dup');
    fs.mkdirSync(dir);
    const header = '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},'
      + '"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}';
    const h = Buffer.from(header);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(h.length));
    fs.writeFileSync(path.join(dir, 'x.safetensors'), Buffer.concat([len, h, Buffer.alloc(8)]));
    expect(() => SafetensorsFile.open(path.join(dir, 'x.safetensors'))).toThrow(/header names "a" twice/);
    // also when the second spelling only differs by an escape
    const h2 = Buffer.from('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"\\u0061":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}');
    len.writeBigUInt64LE(BigInt(h2.length));
    fs.writeFileSync(path.join(dir, 'y.safetensors'), Buffer.concat([len, h2, Buffer.alloc(4)]));
    expect(() => SafetensorsFile.open(path.join(dir, 'y.safetensors'))).toThrow(/header names "a" twice/);
  });
});

describe('adapters', () => {
  async function savedAdapter(): Promise<string> {
    const m = await loadBackbone(FIX, { device: 'cpu' });
    m.addAdapter('task', 'seq_bn');
    const dir = path.join(work, `adapter${n++}`);
    saveAdapter(m, dir, 'task', { withHead: false });
    m.dispose();
    return dir;
  }
  function editConfig(dir: string, edit: (c: Record<string, unknown>) => void): void {
    const f = path.join(dir, 'adapter_config.json');
    const j = JSON.parse(fs.readFileSync(f, 'utf8'));
    edit(j.config);
    fs.writeFileSync(f, JSON.stringify(j));
  }

  test('a 300-byte config with reduction_factor 2e-7 fails on a shape comparison, allocating nothing', async () => {
    const dir = await savedAdapter();
    editConfig(dir, (c) => { c.reduction_factor = 2e-7; });
    const m = await loadBackbone(FIX, { device: 'cpu' });
    const before = memoryStats('cpu');
    const t0 = Date.now();
    // under a memory budget of what is live plus 16 MiB: a [4e7, 8]-sized allocation would fail loudly here
    setMemoryBudget({ host: before.allocatedBytes + 16 * 2 ** 20 });
    try {
      expect(() => loadAdapter(m, dir)).toThrow(/has shape \[4, 64\], but its config \(reduction_factor 2e-7, hidden 64\) implies \[320000000, 64\]/);
    } finally {
      setMemoryBudget({ host: null });
    }
    expect(Date.now() - t0).toBeLessThan(2000);
    // nothing new stays allocated (dropped tensors of earlier tests may be collected meanwhile)
    expect(memoryStats('cpu').allocatedBytes).toBeLessThanOrEqual(before.allocatedBytes);
    expect(m.adapterNames()).toEqual([]);
    // and addAdapter with such a factor is refused by name too
    expect(() => m.addAdapter('x', { config: 'seq_bn', reductionFactor: 2e-7 })).toThrow(/gives a bottleneck of 320000000 at layer 0, over 16× the hidden size 64/);
    m.dispose();
  });

  test('leave_out outside the layers, NaN weights and reserved names are refused', async () => {
    const m = await loadBackbone(FIX, { device: 'cpu' });
    expect(() => m.addAdapter('a', { config: 'seq_bn', leaveOut: [-1, 99] })).toThrow(/leave_out holds -1; the backbone has layers 0\.\.1/);
    expect(() => m.addAdapter('__proto__', 'seq_bn')).toThrow(/'__proto__' cannot name an adapter/);
    // found by test/fuzz.test.ts: a non-string non_linearity was a TypeError, now a clear refusal
    expect(() => m.addAdapter('b', { config: 'seq_bn', non_linearity: 0 as unknown as string })).toThrow(/non_linearity must be a string, got 0/);
    expect(() => m.addClassificationHead('constructor', { numLabels: 2 })).toThrow(/'constructor' cannot name a head/);
    const dir = await savedAdapter();
    editConfig(dir, (c) => { c.leave_out = [99]; });
    expect(() => loadAdapter(m, dir)).toThrow(/leave_out holds 99/);
    const nan = await savedAdapter();
    const wf = path.join(nan, 'adapter.safetensors');
    const st = SafetensorsFile.open(wf);
    const t: Record<string, TensorToWrite> = {};
    for (const k of st.names()) t[k] = { dtype: 'F32', shape: st.info(k).shape, data: st.getFloat32(k) };
    st.close();
    const k = Object.keys(t).find((x) => x.endsWith('adapter_up.weight'))!;
    (t[k].data as Float32Array)[5] = NaN;
    writeSafetensors(wf, t, { format: 'pt' });
    expect(() => loadAdapter(m, nan)).toThrow(/holds NaN at element 5; weights must be finite/);
    expect(m.adapterNames()).toEqual([]);
    m.dispose();
  });
});

describe('int32 values', () => {
  test('creation, full and fill refuse values int32 cannot hold instead of wrapping', () => {
    expect(() => tensor([1e20], [1], { dtype: 'int32' })).toThrow(/data\[0\] is 100000000000000000000, which is not an int32/);
    expect(() => tensor([1, 2.5], [2], { dtype: 'int32' })).toThrow(/data\[1\] is 2.5/);
    expect(() => full([2], 2 ** 31, { dtype: 'int32' })).toThrow(/full: value is 2147483648/);
    const t = zeros([3], { dtype: 'int32' });
    expect(() => fill(t, 1e20)).toThrow(/fill: value is 100000000000000000000/);
    expect(() => t.copyFrom([1, 2, -1e12])).toThrow(/copyFrom: data\[2\]/);
    fill(t, -2147483648);
    expect(Array.from(t.toArray())).toEqual([-2147483648, -2147483648, -2147483648]);
    t.dispose();
  });
});
