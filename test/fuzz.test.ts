// Property-based fuzzing (fast-check) of the parsers that read untrusted files: safetensors
// headers, config.json and adapter_config.json. Inputs start from the committed corpus
// (test/fuzz/corpus/) and are mutated; every input must either parse into something whose
// invariants hold, or be refused with an Error — never another exception, a crash or a hang.
// Bounded in time (FA_FUZZ_SECONDS per target, default 8); FA_FUZZ_SEED replays a run.
import * as fc from 'fast-check';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadAdapter, loadBackbone, saveAdapter } from '../lib';
import { parseConfig } from '../lib/models/bert/config';
import { resolveConfig } from '../lib/methods/bottleneck/config';
import { SafetensorsFile } from '../lib/io/safetensors';
import type { Backbone } from '../lib';

const CORPUS = path.join(__dirname, 'fuzz', 'corpus');
const seconds = Number(process.env.FA_FUZZ_SECONDS ?? 8);
const seed = process.env.FA_FUZZ_SEED ? Number(process.env.FA_FUZZ_SEED) : Date.now() % 2 ** 31;
const params = { seed, numRuns: 1_000_000, interruptAfterTimeLimit: seconds * 1000, markInterruptAsFailure: false };
console.log(`fuzz seed ${seed} (FA_FUZZ_SEED replays it), ${seconds} s per target`);

function corpus(kind: string): Buffer[] {
  const dir = path.join(CORPUS, kind);
  return fs.readdirSync(dir).sort().map((f) => fs.readFileSync(path.join(dir, f)));
}

/** Byte-level mutations: flips, overwrites, truncations, insertions, and rewrites of the header length. */
const mutation = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ maxLength: 16 }) }),
  fc.record({ kind: fc.constant('length' as const), value: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer T> ? T : never;

function mutate(src: Buffer, ms: Mutation[]): Buffer {
  let b = Buffer.from(src);
  for (const m of ms) {
    if (b.length === 0) break;
    if (m.kind === 'flip') b[m.at % b.length] ^= 1 << m.bit;
    else if (m.kind === 'set') b[m.at % b.length] = m.byte;
    else if (m.kind === 'truncate') b = b.subarray(0, m.at % b.length);
    else if (m.kind === 'insert') { const at = m.at % b.length; b = Buffer.concat([b.subarray(0, at), Buffer.from(m.bytes), b.subarray(at)]); }
    else if (b.length >= 8) b.writeBigUInt64LE(m.value, 0);
  }
  return b;
}

function mustBeError(e: unknown): void {
  if (!(e instanceof Error)) throw new Error(`threw a non-Error: ${String(e)}`);
  if (/Maximum call stack|out of memory|is not a function|Cannot read prop/.test(e.message)) throw e; // a bug, not a refusal
}

test('safetensors: mutated files parse consistently or are refused with an Error', () => {
  const seeds = corpus('safetensors');
  fc.assert(fc.property(fc.integer({ min: 0, max: seeds.length - 1 }), fc.array(mutation, { minLength: 1, maxLength: 6 }), (i, ms) => {
    const buf = mutate(seeds[i], ms);
    let st: SafetensorsFile;
    try {
      st = SafetensorsFile.fromBuffer(buf, 'fuzz');
    } catch (e) {
      mustBeError(e);
      return;
    }
    for (const n of st.names()) {
      const info = st.info(n);
      // what the header promises fits inside the file
      expect(info.byteOffset + info.byteLength).toBeLessThanOrEqual(buf.length);
      expect(info.shape.every((d) => Number.isInteger(d) && d >= 0)).toBe(true);
      expect(st.getRaw(n).length).toBe(info.byteLength);
      try {
        const a = st.getFloat32(n);
        expect(a.length).toBe(info.shape.reduce((x, y) => x * y, 1));
      } catch (e) {
        mustBeError(e);
      }
    }
    expect(new Set(st.names()).size).toBe(st.names().length);
  }), params);
});

/** JSON values to splice into configs: the types and extremes that break naive parsers. */
const hostileValue = fc.oneof(
  fc.constantFrom(0, -1, 1e9, 5e6, 2e-7, 1e308, -0, 0.5, 2, NaN, null, true, '12', [], {}, '__proto__'),
  fc.integer(), fc.double(), fc.string({ maxLength: 8 }),
);

test('config.json: mutated configs give a valid architecture or an Error naming config.json', () => {
  const seeds = corpus('config').map((b) => JSON.parse(b.toString('utf8')) as Record<string, unknown>);
  const keys = [...new Set(seeds.flatMap((s) => Object.keys(s)))];
  fc.assert(fc.property(fc.integer({ min: 0, max: seeds.length - 1 }), fc.array(fc.tuple(fc.constantFrom(...keys), hostileValue), { maxLength: 4 }),
    fc.boolean(), (i, edits, dropOne) => {
      const c: Record<string, unknown> = JSON.parse(JSON.stringify(seeds[i]));
      for (const [k, v] of edits) c[k] = v;
      if (dropOne && edits.length) delete c[edits[0][0]];
      let cfg;
      try {
        cfg = parseConfig(c);
      } catch (e) {
        mustBeError(e);
        expect((e as Error).message).toMatch(/config\.json/);
        return;
      }
      // what a parsed config promises: sizes that allocate sanely and fit together
      for (const v of [cfg.vocabSize, cfg.hiddenSize, cfg.numLayers, cfg.numHeads, cfg.intermediateSize, cfg.maxPositions])
        expect(Number.isInteger(v) && v >= 1 && v <= 4_000_000).toBe(true);
      expect(cfg.numLayers).toBeLessThanOrEqual(1000);
      expect(cfg.hiddenSize % cfg.numHeads).toBe(0);
      expect(cfg.layerNormEps > 0 && cfg.layerNormEps < 1).toBe(true);
      expect(cfg.hiddenDropout >= 0 && cfg.hiddenDropout < 1 && cfg.attentionDropout >= 0 && cfg.attentionDropout < 1).toBe(true);
    }), params);
});

describe('adapter_config.json', () => {
  let model: Backbone;
  let work: string;
  let saved: string;
  beforeAll(async () => {
    model = await loadBackbone(path.join(__dirname, 'fixtures', 'tiny-bert'), { device: 'cpu' });
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-fuzz-'));
    model.addAdapter('task', 'seq_bn');
    saved = path.join(work, 'saved');
    saveAdapter(model, saved, 'task', { withHead: false });
    model.deleteAdapter('task');
  });
  afterAll(() => {
    model?.dispose();
    fs.rmSync(work, { recursive: true, force: true });
  });

  test('mutated configs load as an adapter of the config\'s shapes or are refused, leaving nothing behind', () => {
    const ours = JSON.parse(fs.readFileSync(path.join(saved, 'adapter_config.json'), 'utf8'));
    const seeds = [ours.config, ...corpus('adapter_config').map((b) => JSON.parse(b.toString('utf8')).config)];
    const keys = [...new Set(seeds.flatMap((s) => Object.keys(s)))];
    const dir = path.join(work, 'mutated');
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(saved, 'adapter.safetensors'), path.join(dir, 'adapter.safetensors'));
    fc.assert(fc.property(fc.integer({ min: 0, max: seeds.length - 1 }), fc.array(fc.tuple(fc.constantFrom(...keys), hostileValue), { maxLength: 4 }),
      (i, edits) => {
        const c = JSON.parse(JSON.stringify(seeds[i]));
        for (const [k, v] of edits) c[k] = v;
        // the pure config path
        try {
          resolveConfig(c);
        } catch (e) {
          mustBeError(e);
        }
        // the file path, against the tiny backbone's saved weights
        fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify({ ...ours, config: c }));
        let name: string | null = null;
        try {
          name = loadAdapter(model, dir, { withHead: false }).name;
        } catch (e) {
          mustBeError(e);
          expect(model.adapterNames()).toEqual([]);
          return;
        }
        // loaded: every tensor finite, with the config's shapes (checked by the loader), then removed
        for (const t of model.adapterParameters(name).values()) expect(t.toArray().every(Number.isFinite)).toBe(true);
        model.deleteAdapter(name);
      }), params);
  });
});
