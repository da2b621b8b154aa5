// Safetensors reader/writer: round trips, exact 16-bit float conversions (exhaustive), files
// written byte by byte and by PyTorch, sharded checkpoints, and every malformed-file case.
import { spawnSync } from 'child_process';
import { randomInt } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, MAX_HEADER_BYTES, openCheckpoint, SafetensorsError, SafetensorsFile,
  serializeSafetensors, ShardedSafetensors, TensorToWrite, writeSafetensors,
} from '../lib/io/safetensors';
import { referenceEnv, referenceSkipReason } from './reference/env';

// Fresh data every run; the seed is in the suite name so that a failure can be replayed.
const SEED = process.env.SAFETENSORS_SEED !== undefined ? Number(process.env.SAFETENSORS_SEED) : randomInt(2 ** 31);

function mulberry(seed: number) {
  let s = seed >>> 0;
  const u32 = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  const uniform = () => u32() / 4294967296;
  const normal = () => Math.sqrt(-2 * Math.log(uniform() + 1e-12)) * Math.cos(2 * Math.PI * uniform());
  return { u32, uniform, normal, int: (lo: number, hi: number) => lo + Math.floor(uniform() * (hi - lo + 1)) };
}
const rand = mulberry(SEED);

function randomF32(n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rand.normal() * scale;
  return a;
}
function randomI32(n: number, lo = -(2 ** 31), hi = 2 ** 31 - 1): Int32Array {
  const a = new Int32Array(n);
  for (let i = 0; i < n; i++) a[i] = rand.int(lo, hi);
  return a;
}
function bitsOf(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

let tmpRoot: string;
beforeAll(() => {
  tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'safetensors-test-'));
});
afterAll(() => {
  fs.rmSync(tmpRoot, { recursive: true, force: true });
});
let dirCount = 0;
function freshDir(): string {
  const d = path.join(tmpRoot, `d${dirCount++}`);
  fs.mkdirSync(d);
  return d;
}

// ---------------------------------------------------------------------------------------------
// Independent references for binary16 / bfloat16: decode from the definition, round by search.
// ---------------------------------------------------------------------------------------------

function refHalf(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}
function refBf16(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 7) & 0xff;
  const m = h & 0x7f;
  if (e === 0) return s * m * 2 ** -133;
  if (e === 255) return m ? NaN : s * Infinity;
  return s * (1 + m / 128) * 2 ** (e - 127);
}
// Positive codes are ordered by value; the code one past the largest finite one stands for the
// next binade's first value (65536 / 2^128), so that overflow rounds to infinity like IEEE does.
function makeRounder(decode: (h: number) => number, maxFinite: number, virtualNext: number) {
  const val = (c: number) => (c > maxFinite ? virtualNext : decode(c));
  return (x: number): number => {
    if (Number.isNaN(x)) return NaN;
    const a = Math.abs(x);
    let lo = 0;
    let hi = maxFinite + 1; // val(lo) <= a < val(hi), or a >= val(hi)
    if (a >= virtualNext) return x < 0 ? -Infinity : Infinity;
    while (hi - lo > 1) {
      const mid = (lo + hi) >>> 1;
      if (val(mid) <= a) lo = mid;
      else hi = mid;
    }
    const dl = a - val(lo);
    const dh = val(hi) - a;
    const c = dl < dh ? lo : dh < dl ? hi : lo % 2 === 0 ? lo : hi;
    const v = c > maxFinite ? Infinity : decode(c);
    return x < 0 || Object.is(x, -0) ? -v : v;
  };
}
const refRoundHalf = makeRounder(refHalf, 0x7bff, 65536);
const refRoundBf16 = makeRounder(refBf16, 0x7f7f, 2 ** 128);

function sameFloat(a: number, b: number): boolean {
  return Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));
}
function expectSameFloats(actual: ArrayLike<number>, expected: ArrayLike<number>, inputs?: ArrayLike<number>): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    if (!sameFloat(actual[i], expected[i])) {
      throw new Error(`element ${i}${inputs ? ` (input ${inputs[i]})` : ''}: got ${actual[i]}, expected ${expected[i]}`);
    }
  }
}

// Random float32 values over the whole range: random bit patterns (no NaN) and scaled normals.
function wideF32(n: number): Float32Array {
  const a = new Float32Array(n);
  const bits = bitsOf(a);
  for (let i = 0; i < n; i++) {
    if (i % 2 === 0) {
      let u = rand.u32();
      if ((u & 0x7f800000) === 0x7f800000) u &= 0xbfffffff; // avoid inf/NaN here
      bits[i] = u;
    } else {
      a[i] = rand.normal() * 2 ** rand.int(-30, 20);
    }
  }
  return a;
}

// ---------------------------------------------------------------------------------------------
// Hand-built files
// ---------------------------------------------------------------------------------------------

/** 8-byte length + header text (+ spaces to `padTo`) + data. `len` overrides the stored length. */
function rawFile(header: string | Buffer, data: Buffer = Buffer.alloc(0), len?: bigint): Buffer {
  const h = typeof header === 'string' ? Buffer.from(header, 'utf8') : header;
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(len ?? BigInt(h.length));
  return Buffer.concat([prefix, h, data]);
}

interface HandTensor { name: string; dtype: string; shape: number[]; bytes: Buffer; gapBefore?: number }
/** A file laid out in the given order, with optional gaps, trailing bytes, and no header padding. */
function handFile(tensors: HandTensor[], metadata?: Record<string, string>, trailing = 0): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  const chunks: Buffer[] = [];
  let off = 0;
  for (const t of tensors) {
    if (t.gapBefore) {
      chunks.push(Buffer.alloc(t.gapBefore, 0xab));
      off += t.gapBefore;
    }
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.bytes.length] };
    chunks.push(t.bytes);
    off += t.bytes.length;
  }
  chunks.push(Buffer.alloc(trailing, 0xcd));
  return rawFile(JSON.stringify(header), Buffer.concat(chunks));
}

function u16le(...v: number[]): Buffer {
  const b = Buffer.alloc(2 * v.length);
  v.forEach((x, i) => b.writeUInt16LE(x, 2 * i));
  return b;
}
function i64le(...v: bigint[]): Buffer {
  const b = Buffer.alloc(8 * v.length);
  v.forEach((x, i) => b.writeBigInt64LE(x, 8 * i));
  return b;
}

function errorOf(fn: () => unknown): SafetensorsError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SafetensorsError);
    return e as SafetensorsError;
  }
  throw new Error('expected an error');
}
function expectBad(buf: Buffer, re: RegExp, label = 'bad.safetensors'): SafetensorsError {
  const e = errorOf(() => SafetensorsFile.fromBuffer(buf, label));
  expect(e.file).toBe(label);
  expect(e.message.startsWith(`${label}: `)).toBe(true);
  expect(e.message).toMatch(re);
  return e;
}
const entry = (dtype: unknown, shape: unknown, offs: unknown) => ({ dtype, shape, data_offsets: offs });
const hdr = (o: Record<string, unknown>) => JSON.stringify(o);

// =============================================================================================

describe(`safetensors (seed ${SEED})`, () => {
  describe('16-bit float conversions', () => {
    test('every binary16 code decodes exactly and re-encodes to itself', () => {
      for (let h = 0; h < 0x10000; h++) {
        const v = f16ToF32(h);
        const r = refHalf(h);
        if (!sameFloat(v, r)) throw new Error(`half 0x${h.toString(16)}: got ${v}, expected ${r}`);
        const back = f32ToF16(v);
        if (Number.isNaN(r)) expect(Number.isNaN(f16ToF32(back))).toBe(true);
        else if (back !== h) throw new Error(`half 0x${h.toString(16)} re-encodes to 0x${back.toString(16)}`);
      }
    });

    test('every bfloat16 code decodes exactly and re-encodes to itself', () => {
      for (let h = 0; h < 0x10000; h++) {
        const v = bf16ToF32(h);
        const r = refBf16(h);
        if (!sameFloat(v, r)) throw new Error(`bf16 0x${h.toString(16)}: got ${v}, expected ${r}`);
        const back = f32ToBf16(v);
        if (Number.isNaN(r)) expect(Number.isNaN(bf16ToF32(back))).toBe(true);
        else if (back !== h) throw new Error(`bf16 0x${h.toString(16)} re-encodes to 0x${back.toString(16)}`);
      }
    });

    test('every midpoint between neighbouring codes rounds to the even one; one float32 ulp off, to the nearer', () => {
      const f = new Float32Array(1);
      const nextUp = (x: number) => {
        f[0] = x;
        const u = bitsOf(f);
        u[0] += 1;
        return f[0];
      };
      const nextDown = (x: number) => {
        f[0] = x;
        const u = bitsOf(f);
        u[0] -= 1;
        return f[0];
      };
      const cases: [string, (x: number) => number, (h: number) => number, number][] = [
        ['F16', f32ToF16, refHalf, 0x7bff], ['BF16', f32ToBf16, refBf16, 0x7f7f],
      ];
      for (const [name, enc, dec, maxFinite] of cases) {
        for (let c = 0; c < maxFinite; c++) {
          const mid = (dec(c) + dec(c + 1)) / 2;
          if (Math.fround(mid) !== mid) throw new Error(`${name} midpoint after 0x${c.toString(16)} is not a float32`);
          const even = c % 2 === 0 ? c : c + 1;
          for (const sign of [1, -1]) {
            const s = sign < 0 ? 0x8000 : 0;
            if (enc(sign * mid) !== (s | even)) throw new Error(`${name} midpoint after 0x${c.toString(16)}: got 0x${enc(sign * mid).toString(16)}`);
            if (enc(sign * nextDown(mid)) !== (s | c)) throw new Error(`${name} below midpoint after 0x${c.toString(16)}`);
            if (enc(sign * nextUp(mid)) !== (s | (c + 1))) throw new Error(`${name} above midpoint after 0x${c.toString(16)}`);
          }
        }
      }
    });

    test('random float32 values round like the reference search (nearest, ties to even)', () => {
      const x = wideF32(20000);
      for (let i = 0; i < x.length; i++) {
        const h = f16ToF32(f32ToF16(x[i]));
        const b = bf16ToF32(f32ToBf16(x[i]));
        if (!sameFloat(h, refRoundHalf(x[i]))) throw new Error(`F16 of ${x[i]}: got ${h}, expected ${refRoundHalf(x[i])}`);
        if (!sameFloat(b, refRoundBf16(x[i]))) throw new Error(`BF16 of ${x[i]}: got ${b}, expected ${refRoundBf16(x[i])}`);
      }
    });
  });

  describe('writing and reading back', () => {
    test('every writable dtype round-trips, with metadata', () => {
      const dir = freshDir();
      const file = path.join(dir, 'all.safetensors');

      const specials = [NaN, -0, 0, Infinity, -Infinity, 1e-45, -3.4028234663852886e38, 1.1754943508222875e-38];
      const f32 = randomF32(3 * 17);
      specials.forEach((v, i) => (f32[5 * i] = v));

      const named: [number, number, number][] = [
        // input, F16 result, BF16 result (as PyTorch 1.13 rounds them)
        [1.00390625, 1.00390625, 1.0], // 1 + 2^-8: a BF16 tie, rounds to even (1.0)
        [1.01171875, 1.01171875, 1.015625], // 1 + 3·2^-8: a BF16 tie, rounds up to even
        [65504, 65504, 65536],
        [65519.99, 65504, 65536],
        [65520, Infinity, 65536], // F16 tie with the (even) overflow code: infinity
        [70000, Infinity, 70144],
        [-70000, -Infinity, -70144],
        [6e-8, 5.960464477539063e-8, 6.007030606269836e-8],
        [2.9802322387695312e-8, 0, 2.9802322387695312e-8], // half of the smallest F16 subnormal: tie to 0
        [1e-8, 0, 1.0011717677116394e-8],
        [6.103515625e-5, 6.103515625e-5, 6.103515625e-5], // smallest normal F16
        [3.14159265, 3.140625, 3.140625],
        [3.4028234663852886e38, Infinity, Infinity],
        [NaN, NaN, NaN],
        [-0, -0, -0],
      ];
      const rnd = wideF32(1000);
      const f16in = new Float32Array([...named.map((c) => c[0]), ...rnd]);
      const f16want = [...named.map((c) => c[1]), ...Array.from(rnd, refRoundHalf)];
      const bf16want = [...named.map((c) => Math.fround(c[2])), ...Array.from(rnd, refRoundBf16)];

      const i32 = randomI32(40);
      i32[0] = -(2 ** 31);
      i32[1] = 2 ** 31 - 1;
      const i64 = randomI32(24);
      i64[0] = -1;
      i64[1] = -(2 ** 31);
      const rawF16 = u16le(...Array.from({ length: 6 }, () => rand.int(0, 0x7bff)));
      const meta = { format: 'pt', note: 'ünïcødé ✓ "quoted"', __proto__x: 'not special', empty: '' };

      writeSafetensors(file, {
        weight: { dtype: 'F32', shape: [3, 17], data: f32 },
        half: { dtype: 'F16', shape: [f16in.length], data: f16in },
        brain: { dtype: 'BF16', shape: [f16in.length], data: f16in },
        ids: { dtype: 'I32', shape: [5, 8], data: i32 },
        long: { dtype: 'I64', shape: [2, 3, 4], data: i64 },
        rawhalf: { dtype: 'F16', shape: [2, 3], data: rawF16 },
        empty: { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
        scalar: { dtype: 'F32', shape: [], data: new Float32Array([rand.normal()]) },
      }, meta);

      for (const mode of ['memory', 'fd'] as const) {
        const st = SafetensorsFile.open(file, { mode });
        try {
          expect(st.metadata).toEqual(meta);
          expect(st.names()).toEqual(['brain', 'empty', 'half', 'ids', 'long', 'rawhalf', 'scalar', 'weight']);
          expect(st.notes).toEqual([]);

          expect(Array.from(bitsOf(st.getFloat32('weight')))).toEqual(Array.from(bitsOf(f32)));
          expect(st.info('weight')).toMatchObject({ name: 'weight', dtype: 'F32', shape: [3, 17], byteLength: 3 * 17 * 4, file });
          expectSameFloats(st.getFloat32('half'), f16want, f16in);
          expectSameFloats(st.getFloat32('brain'), bf16want, f16in);
          expect(Array.from(st.getInt32('ids'))).toEqual(Array.from(i32));
          expect(Array.from(st.getFloat32('ids'))).toEqual(Array.from(i32, Math.fround));
          expect(Array.from(st.getInt32('long'))).toEqual(Array.from(i64));
          const longRaw = st.getRaw('long');
          expect(longRaw.length).toBe(24 * 8);
          for (let i = 0; i < 24; i++) expect(longRaw.readBigInt64LE(8 * i)).toBe(BigInt(i64[i]));
          expect(st.getRaw('rawhalf').equals(rawF16)).toBe(true);
          expect(st.getFloat32('empty')).toHaveLength(0);
          expect(st.info('empty').shape).toEqual([0, 4]);
          expect(st.info('scalar').shape).toEqual([]);
          expect(st.getFloat32('scalar')).toHaveLength(1);
          // info() hands out copies
          st.info('weight').shape.push(99);
          expect(st.info('weight').shape).toEqual([3, 17]);
        } finally {
          st.close();
        }
      }
    });

    test('layout: 8-byte aligned space-padded header, sorted names, contiguous data; serialize matches the file', () => {
      const dir = freshDir();
      const file = path.join(dir, 'layout.safetensors');
      const names = ['z.weight', '10', '2', 'a.bias', '__proto__', 'é', 'B'];
      // fromEntries: a plain assignment of "__proto__" would set the prototype instead
      const tensors: Record<string, TensorToWrite> = Object.fromEntries(names.map((n): [string, TensorToWrite] => {
        const len = rand.int(1, 9);
        return [n, rand.uniform() < 0.5
          ? { dtype: 'BF16', shape: [len], data: randomF32(len) }
          : { dtype: 'I64', shape: [1, len], data: randomI32(len) }];
      }));
      writeSafetensors(file, tensors, { k: 'v' });
      const bytes = fs.readFileSync(file);
      expect(SafetensorsFile.fromBuffer(serializeSafetensors(tensors, { k: 'v' })).names()).toEqual([...names].sort());
      expect(serializeSafetensors(tensors, { k: 'v' }).equals(bytes)).toBe(true);

      const n = Number(bytes.readBigUInt64LE(0));
      expect(n % 8).toBe(0);
      const text = bytes.subarray(8, 8 + n).toString('utf8');
      const json = text.trimEnd();
      expect(text.slice(json.length)).toMatch(/^ *$/);
      expect(text.length - json.length).toBeLessThan(8);
      // key order in the text: __metadata__, then names sorted (integer-like keys not hoisted)
      const sorted = [...names].sort();
      const positions = sorted.map((k) => text.indexOf(`${JSON.stringify(k)}:{"dtype"`));
      expect(positions.every((p) => p > text.indexOf('"__metadata__"'))).toBe(true);
      expect([...positions].sort((a, b) => a - b)).toEqual(positions);
      const parsed = JSON.parse(json);
      let off = 0;
      for (const k of sorted) {
        expect(parsed[k].data_offsets[0]).toBe(off);
        off = parsed[k].data_offsets[1];
      }
      expect(bytes.length).toBe(8 + n + off);
      const st = SafetensorsFile.fromBuffer(bytes);
      expect(st.has('__proto__')).toBe(true);
      expect(st.has('toString')).toBe(false);
      expect(st.info('__proto__').dataOffsets[1] - st.info('__proto__').dataOffsets[0]).toBe(st.info('__proto__').byteLength);
    });

    test('atomic write: replaces an existing file and leaves no temporary file; a failed write changes nothing', () => {
      const dir = freshDir();
      const file = path.join(dir, 'model.safetensors');
      const first = randomF32(33);
      const second = randomF32(21);
      writeSafetensors(file, { w: { dtype: 'F32', shape: [33], data: first } });
      const reader = SafetensorsFile.open(file, { mode: 'fd' });
      writeSafetensors(file, { w: { dtype: 'F32', shape: [3, 7], data: second } }, { v: '2' });
      expect(fs.readdirSync(dir)).toEqual(['model.safetensors']);
      const st = SafetensorsFile.open(file);
      expect(st.metadata).toEqual({ v: '2' });
      expect(st.info('w').shape).toEqual([3, 7]);
      expect(Array.from(st.getFloat32('w'))).toEqual(Array.from(second));
      // a reader opened before the replacement still sees the old, complete file
      expect(Array.from(reader.getFloat32('w'))).toEqual(Array.from(first));
      reader.close();

      const before = fs.readFileSync(file);
      expect(() => writeSafetensors(file, { w: { dtype: 'F32', shape: [4], data: randomF32(5) } }))
        .toThrow(/tensor "w": data has 5 elements, but shape \[4\] has 4/);
      expect(() => writeSafetensors(path.join(dir, 'no', 'such', 'dir.safetensors'), { w: { dtype: 'F32', shape: [1], data: randomF32(1) } }))
        .toThrow(/write failed: ENOENT/);
      expect(fs.readdirSync(dir)).toEqual(['model.safetensors']);
      expect(fs.readFileSync(file).equals(before)).toBe(true);
    });

    test('the writer refuses bad input', () => {
      const f = path.join(freshDir(), 'x.safetensors');
      const w = (t: Record<string, unknown>, m?: unknown) => () => writeSafetensors(f, t as Record<string, TensorToWrite>, m as Record<string, string>);
      expect(w({ __metadata__: { dtype: 'F32', shape: [1], data: randomF32(1) } })).toThrow(/reserved/);
      expect(w({ a: { dtype: 'F64', shape: [1], data: randomF32(1) } })).toThrow(/cannot write dtype "F64"/);
      expect(w({ a: { dtype: 'I32', shape: [2], data: randomF32(2) } })).toThrow(/Float32Array data cannot be written as I32/);
      expect(w({ a: { dtype: 'F16', shape: [2], data: randomI32(2) } })).toThrow(/Int32Array data cannot be written as F16/);
      expect(w({ a: { dtype: 'F16', shape: [3], data: Buffer.alloc(5) } })).toThrow(/Buffer data is 5 bytes, but shape \[3\] × F16 needs 6/);
      expect(w({ a: { dtype: 'F32', shape: [-1], data: randomF32(1) } })).toThrow(/shape\[0\] is number -1/);
      expect(w({ a: { dtype: 'F32', shape: [1], data: [1] } })).toThrow(/must be a Float32Array, Int32Array or Buffer/);
      expect(w({ a: { dtype: 'F32', shape: [1], data: randomF32(1) } }, { n: 5 })).toThrow(/metadata\["n"\] is number 5/);
      expect(fs.readdirSync(path.dirname(f))).toEqual([]);
    });
  });

  describe('files from elsewhere', () => {
    test('a file written byte by byte: every readable dtype, gaps, trailing bytes, unsupported F8', () => {
      const f64 = Buffer.alloc(16);
      f64.writeDoubleLE(1 / 3, 0);
      f64.writeDoubleLE(-1e300, 8);
      const buf = handFile([
        { name: 'h', dtype: 'F16', shape: [2, 3], bytes: u16le(0x3c00, 0x7bff, 0x0001, 0x8400, 0xfc00, 0x7e00) },
        { name: 'b', dtype: 'BF16', shape: [3], bytes: u16le(0x3f80, 0x4049, 0xff80) },
        { name: 'd', dtype: 'F64', shape: [2], bytes: f64, gapBefore: 2 },
        { name: 'q', dtype: 'I64', shape: [3], bytes: i64le(-5n, 2147483647n, -2147483648n) },
        { name: 'big', dtype: 'I64', shape: [2], bytes: i64le(7n, 2147483648n) },
        { name: 's', dtype: 'I16', shape: [2], bytes: u16le(0xffff, 0x7fff) },
        { name: 'c', dtype: 'I8', shape: [2], bytes: Buffer.from([0x80, 0x7f]) },
        { name: 'u', dtype: 'U8', shape: [2], bytes: Buffer.from([0, 255]) },
        { name: 'm', dtype: 'BOOL', shape: [3], bytes: Buffer.from([0, 1, 1]) },
        { name: 'mbad', dtype: 'BOOL', shape: [2], bytes: Buffer.from([1, 2]) },
        { name: 'f8', dtype: 'F8_E4M3', shape: [2], bytes: Buffer.from([0x38, 0xb8]) },
        { name: 'e', dtype: 'F32', shape: [2, 0], bytes: Buffer.alloc(0) },
      ], { format: 'pt' }, 5);
      const st = SafetensorsFile.fromBuffer(buf, 'hand.safetensors');
      expect(st.label).toBe('hand.safetensors');
      expect(st.metadata).toEqual({ format: 'pt' });
      expectSameFloats(st.getFloat32('h'), [1, 65504, 5.960464477539063e-8, -6.103515625e-5, -Infinity, NaN]);
      expectSameFloats(st.getFloat32('b'), [1, 3.140625, -Infinity]);
      expectSameFloats(st.getFloat32('d'), [Math.fround(1 / 3), -Infinity]);
      expect(Array.from(st.getInt32('q'))).toEqual([-5, 2147483647, -2147483648]);
      expect(Array.from(st.getFloat32('big'))).toEqual([7, 2147483648]);
      expect(() => st.getInt32('big')).toThrow(/hand\.safetensors: tensor "big": I64 element 1 is 2147483648, which does not fit in int32/);
      expect(Array.from(st.getInt32('s'))).toEqual([-1, 32767]);
      expect(Array.from(st.getInt32('c'))).toEqual([-128, 127]);
      expect(Array.from(st.getInt32('u'))).toEqual([0, 255]);
      expect(Array.from(st.getFloat32('u'))).toEqual([0, 255]);
      expect(Array.from(st.getInt32('m'))).toEqual([0, 1, 1]);
      expect(() => st.getInt32('mbad')).toThrow(/BOOL element 1 holds byte 2, expected 0 or 1/);
      expect(() => st.getInt32('h')).toThrow(/getInt32 needs an integer dtype .* but the tensor is F16 \(use getFloat32\)/);
      expect(st.info('f8').dtype).toBe('F8_E4M3');
      expect(st.getRaw('f8').equals(Buffer.from([0x38, 0xb8]))).toBe(true);
      expect(() => st.getFloat32('f8')).toThrow(/dtype F8_E4M3 is known but not supported for conversion to float32/);
      expect(st.getFloat32('e')).toHaveLength(0);
      expect(st.notes.join('\n')).toMatch(/gap of 2 unused bytes before tensor "d"/);
      expect(st.notes.join('\n')).toMatch(/5 trailing bytes after the last tensor/);
      const n = Number(buf.readBigUInt64LE(0));
      expect(st.info('h').byteOffset).toBe(8 + n);
      expect(st.info('d').byteOffset).toBe(8 + n + 12 + 6 + 2);
    });

    // The reference environment's PyTorch (scripts/setup-reference.sh), else Debian's python3-torch.
    const PY = referenceEnv?.python ?? '/usr/bin/python3';
    const havePy = fs.existsSync(PY) && spawnSync(PY, ['-c', 'import torch, numpy'], { timeout: 60000 }).status === 0;
    if (!havePy) console.warn(`skipped 'a file written by PyTorch…': no python with torch and numpy at ${PY} (${referenceSkipReason})`);
    (havePy ? test : test.skip)('a file written by PyTorch reads back as torch converts it; a file we write reads in PyTorch', () => {
      const dir = freshDir();
      const x = wideF32(600);
      x[0] = 1.00390625;
      x[1] = 65520;
      x[2] = 6e-8;
      const ints = randomI32(50);
      fs.writeFileSync(path.join(dir, 'in.json'), JSON.stringify({ bits: Array.from(bitsOf(x)), ints: Array.from(ints) }));
      writeSafetensors(path.join(dir, 'ours.safetensors'), {
        f16: { dtype: 'F16', shape: [600], data: x },
        bf16: { dtype: 'BF16', shape: [20, 30], data: x },
        i64: { dtype: 'I64', shape: [50], data: ints },
      });
      const script = `
import json, struct, sys, torch, numpy as np
d = sys.argv[1]
inp = json.load(open(d + '/in.json'))
x = torch.from_numpy(np.array(inp['bits'], dtype=np.uint32).view(np.float32).copy())
ints = torch.tensor(inp['ints'], dtype=torch.int64)
ts = {'f32': x.reshape(20, 30), 'f16': x.to(torch.float16), 'bf16': x.to(torch.bfloat16).reshape(30, 20),
      'f64': x.double() * 3, 'i64': ints, 'i64big': ints * 5 + 2 ** 40, 'i32': ints.to(torch.int32), 'i16': (ints % 30000).to(torch.int16),
      'i8': (ints % 100).to(torch.int8), 'u8': (ints % 256).abs().to(torch.uint8), 'bool': ints > 0}
names = {torch.float32: 'F32', torch.float16: 'F16', torch.bfloat16: 'BF16', torch.float64: 'F64', torch.int64: 'I64',
         torch.int32: 'I32', torch.int16: 'I16', torch.int8: 'I8', torch.uint8: 'U8', torch.bool: 'BOOL'}
def raw(t):
    t = t.contiguous()
    if t.dtype in (torch.float16, torch.bfloat16): t = t.view(torch.int16)
    if t.dtype == torch.bool: t = t.to(torch.uint8)
    return t.numpy().tobytes()
header = {'__metadata__': {'format': 'pt', 'writer': 'torch ' + torch.__version__}}
blobs = []; off = 0
for k in ['i8', 'f32', 'bool', 'f16', 'i64', 'bf16', 'u8', 'i64big', 'f64', 'i32', 'i16']:  # not sorted: any order is valid
    b = raw(ts[k]); header[k] = {'dtype': names[ts[k].dtype], 'shape': list(ts[k].shape), 'data_offsets': [off, off + len(b)]}
    blobs.append(b); off += len(b)
h = json.dumps(header).encode()
open(d + '/torch.safetensors', 'wb').write(struct.pack('<Q', len(h)) + h + b''.join(blobs))
expected = {k: t.float().reshape(-1).view(torch.int32).tolist() for k, t in ts.items()}
expected['f16_bits'] = ts['f16'].view(torch.int16).tolist()
expected['bf16_bits'] = ts['bf16'].reshape(-1).view(torch.int16).tolist()
# read ours: parse the header by hand, compare with torch's own rounding
buf = open(d + '/ours.safetensors', 'rb').read()
n = struct.unpack('<Q', buf[:8])[0]
hh = json.loads(buf[8:8 + n]); base = 8 + n
def get(k, dt):
    a, b = hh[k]['data_offsets']
    return torch.frombuffer(bytearray(buf[base + a:base + b]), dtype=dt).reshape(hh[k]['shape'])
f16 = get('f16', torch.float16); bf16 = get('bf16', torch.bfloat16).reshape(-1)
def same(a, b):
    return bool(((a == b) | (a.isnan() & b.isnan())).all())
expected['ours_ok'] = [same(f16, x.to(torch.float16)), same(bf16, x.to(torch.bfloat16)),
                       bool((get('i64', torch.int64) == ints).all()), hh['bf16']['shape'] == [20, 30]]
json.dump(expected, open(d + '/expected.json', 'w'))
`;
      fs.writeFileSync(path.join(dir, 'make.py'), script);
      const r = spawnSync(PY, [path.join(dir, 'make.py'), dir], { encoding: 'utf8', timeout: 120000 });
      if (r.status !== 0) throw new Error(`python failed: ${r.stderr}`);
      const want = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8'));
      expect(want.ours_ok).toEqual([true, true, true, true]);

      const st = SafetensorsFile.open(path.join(dir, 'torch.safetensors'));
      expect(st.metadata.format).toBe('pt');
      expect(st.names()).toHaveLength(11);
      expect(st.info('bf16')).toMatchObject({ dtype: 'BF16', shape: [30, 20] });
      const asF32 = (bits: number[]) => new Float32Array(Int32Array.from(bits).buffer);
      for (const k of ['f32', 'f16', 'bf16', 'f64', 'i64', 'i64big', 'i32', 'i16', 'i8', 'u8', 'bool']) {
        expectSameFloats(st.getFloat32(k), asF32(want[k]));
      }
      expect(Array.from(st.getInt32('i64'))).toEqual(Array.from(ints));
      expect(() => st.getInt32('i64big')).toThrow(/I64 element 0 is \d+, which does not fit in int32/);
      expect(Array.from(st.getInt32('bool'))).toEqual(Array.from(ints, (v) => (v > 0 ? 1 : 0)));
      // our F16/BF16 encodings are torch's, bit for bit (NaN excepted: payloads differ)
      const ours = SafetensorsFile.open(path.join(dir, 'ours.safetensors'));
      for (const [k, key] of [['f16', 'f16_bits'], ['bf16', 'bf16_bits']]) {
        const raw = ours.getRaw(k);
        const mine = Array.from({ length: raw.length / 2 }, (_, i) => raw.readInt16LE(2 * i));
        const theirs = want[key] as number[];
        mine.forEach((b, i) => {
          if (!Number.isNaN(x[i]) && b !== theirs[i]) throw new Error(`${k} of ${x[i]}: 0x${(b & 0xffff).toString(16)} vs torch 0x${(theirs[i] & 0xffff).toString(16)}`);
        });
      }
    });
  });

  describe('malformed files are refused with a precise error', () => {
    test('too short, zero, past-the-end and huge header lengths', () => {
      expectBad(Buffer.alloc(0), /file is 0 bytes, shorter than the 8-byte header length prefix/);
      expectBad(Buffer.from([1, 2, 3, 4, 5]), /file is 5 bytes, shorter than the 8-byte/);
      expectBad(rawFile('', Buffer.alloc(16, 1), 0n), /header length is 0/);
      expectBad(rawFile('{}', Buffer.alloc(10), 100n), /header length 100 bytes runs past the end of the file: only 12 bytes follow the 8-byte prefix/);
      expectBad(rawFile('{}', Buffer.alloc(0), 2n ** 40n), new RegExp(`header length 1099511627776 bytes exceeds the ${MAX_HEADER_BYTES}-byte limit`));
      expectBad(rawFile('{}', Buffer.alloc(0), 2n ** 64n - 1n), /header length 18446744073709551615 bytes exceeds the 100000000-byte limit/);
    });

    test('header that is not UTF-8 JSON or not an object', () => {
      expectBad(rawFile('{"a": '), /header is not valid JSON \(/);
      expectBad(rawFile('{"a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}} trailing'), /header is not valid JSON/);
      const bad = Buffer.concat([Buffer.from('{"'), Buffer.from([0xff, 0xfe]), Buffer.from('": 1}')]);
      expectBad(rawFile(bad), /header is not valid UTF-8/);
      expectBad(rawFile('[1, 2]'), /header JSON is an array, expected an object/);
      expectBad(rawFile('null'), /header JSON is null/);
      expectBad(rawFile('"x"'), /header JSON is the string "x"/);
    });

    test('ill-formed entries: each field named', () => {
      const data = Buffer.alloc(64, 7);
      const bad = (o: Record<string, unknown>, re: RegExp) => expectBad(rawFile(hdr(o), data), re);
      bad({ w: 5 }, /tensor "w": entry is number 5, expected an object/);
      bad({ w: [] }, /tensor "w": entry is an array/);
      bad({ w: { shape: [1], data_offsets: [0, 4] } }, /tensor "w": missing "dtype"/);
      bad({ w: entry(4, [1], [0, 4]) }, /tensor "w": "dtype" is number 4, expected a string/);
      bad({ w: entry('Q4_K', [1], [0, 4]) }, /tensor "w": unknown dtype "Q4_K" \(known: F64, F32/);
      bad({ w: entry('f32', [1], [0, 4]) }, /unknown dtype "f32"/);
      bad({ w: { dtype: 'F32', data_offsets: [0, 4] } }, /tensor "w": missing "shape"/);
      bad({ w: entry('F32', '4', [0, 4]) }, /"shape" is the string "4", expected an array/);
      bad({ w: entry('F32', [2, -1], [0, 4]) }, /tensor "w": shape\[1\] is number -1, expected a non-negative safe integer/);
      bad({ w: entry('F32', [1.5], [0, 4]) }, /shape\[0\] is number 1.5/);
      bad({ w: entry('F32', [2 ** 60], [0, 4]) }, /shape\[0\] is number 1152921504606847000, expected a non-negative safe integer/);
      bad({ w: entry('F32', ['1'], [0, 4]) }, /shape\[0\] is the string "1"/);
      bad({ w: { dtype: 'F32', shape: [1] } }, /tensor "w": missing "data_offsets"/);
      bad({ w: entry('F32', [1], [0]) }, /"data_offsets" is an array of length 1, expected \[begin, end\]/);
      bad({ w: entry('F32', [1], { b: 0 }) }, /"data_offsets" is an object, expected \[begin, end\]/);
      bad({ w: entry('F32', [1], [-4, 0]) }, /data_offsets begin is number -4, expected a non-negative safe integer/);
      bad({ w: entry('F32', [1], [0, '4']) }, /data_offsets end is the string "4"/);
      bad({ w: entry('F32', [1], [0, 2 ** 53 + 2]) }, /data_offsets end is number 9007199254740994/);
      bad({ w: entry('F32', [1], [8, 4]) }, /tensor "w": data_offsets \[8, 4\] has begin > end/);
    });

    test('byte span that does not match shape × dtype size names both numbers', () => {
      const data = Buffer.alloc(64, 7);
      expectBad(rawFile(hdr({ w: entry('F32', [2, 3], [0, 20]) }), data),
        /tensor "w": data_offsets \[0, 20\] span 20 bytes, but shape \[2, 3\] × F32 \(4 bytes\) needs 24 bytes/);
      expectBad(rawFile(hdr({ w: entry('BF16', [2 ** 40, 2 ** 40], [0, 8]) }), data), /needs 2417851639229258349412352 bytes/);
    });

    test('spans past the data section, overlaps, and metadata that is not a string map', () => {
      const data = Buffer.alloc(16, 3);
      expectBad(rawFile(hdr({ a: entry('F32', [2], [0, 8]), w: entry('F32', [4], [8, 24]) }), data),
        /tensor "w": data_offsets \[8, 24\] extend past the end of the data section \(16 bytes; truncated file\?\)/);
      expectBad(rawFile(hdr({ a: entry('F32', [4], [0, 16]), b: entry('I32', [2], [8, 16]) }), data),
        /tensors "a" \[0, 16\] and "b" \[8, 16\] overlap/);
      expectBad(rawFile(hdr({ second: entry('U8', [6], [6, 12]), first: entry('U8', [8], [0, 8]) }), data),
        /tensors "first" \[0, 8\] and "second" \[6, 12\] overlap/);
      expectBad(rawFile(hdr({ __metadata__: { k: 1 } }), data), /__metadata__\["k"\] is number 1, expected a string/);
      expectBad(rawFile(hdr({ __metadata__: ['x'] }), data), /__metadata__ is an array, expected an object mapping strings to strings/);
      expectBad(rawFile(hdr({ __metadata__: null }), data), /__metadata__ is null/);
      // empty tensors never overlap; gaps and trailing bytes are tolerated and noted
      const ok = SafetensorsFile.fromBuffer(rawFile(hdr({ a: entry('F32', [0], [4, 4]), b: entry('F32', [2], [0, 8]), c: entry('U8', [2], [10, 12]) }), data));
      expect(ok.names()).toEqual(['a', 'b', 'c']);
      expect(ok.notes).toHaveLength(2);
    });

    test('asking for a tensor that is not there lists names, nearest first', () => {
      const tensors: Record<string, TensorToWrite> = {};
      for (let i = 0; i < 12; i++) {
        tensors[`layer.${i}.weight`] = { dtype: 'F32', shape: [2], data: randomF32(2) };
        tensors[`layer.${i}.bias`] = { dtype: 'F32', shape: [1], data: randomF32(1) };
      }
      const st = SafetensorsFile.fromBuffer(serializeSafetensors(tensors), 'm.safetensors');
      const e = errorOf(() => st.getFloat32('layer.3.wieght'));
      expect(e.message).toMatch(/^m\.safetensors: no tensor named "layer\.3\.wieght"; available: "layer\.3\.weight"/);
      expect(e.message).toMatch(/\(24 tensors in all\)/);
      expect(() => st.info('nope')).toThrow(/no tensor named "nope"; available:/);
      expect(() => st.getRaw('toString')).toThrow(/no tensor named "toString"/);
      expect(() => SafetensorsFile.fromBuffer(rawFile('{}'), 'e').getInt32('x')).toThrow(/e: no tensor named "x" \(the file holds no tensors\)/);
    });

    test('truncated real files, and a file truncated while open in fd mode', () => {
      const dir = freshDir();
      const file = path.join(dir, 't.safetensors');
      writeSafetensors(file, { a: { dtype: 'F32', shape: [8], data: randomF32(8) }, z: { dtype: 'BF16', shape: [4], data: randomF32(4) } });
      const full = fs.readFileSync(file);
      const n = Number(full.readBigUInt64LE(0));
      fs.writeFileSync(file, full.subarray(0, full.length - 3));
      expect(() => SafetensorsFile.open(file)).toThrow(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: tensor "z": data_offsets \\[32, 40\\] extend past the end of the data section \\(37 bytes`));
      fs.writeFileSync(file, full.subarray(0, 8 + n - 1));
      expect(() => SafetensorsFile.open(file)).toThrow(/runs past the end of the file/);
      fs.writeFileSync(file, full.subarray(0, 6));
      expect(() => SafetensorsFile.open(file)).toThrow(/file is 6 bytes, shorter than the 8-byte/);
      expect(() => SafetensorsFile.open(path.join(dir, 'missing.safetensors'))).toThrow(/missing\.safetensors: cannot open: ENOENT/);
      expect(() => SafetensorsFile.open(dir)).toThrow(/not a regular file|EISDIR/);

      fs.writeFileSync(file, full);
      const st = SafetensorsFile.open(file, { mode: 'fd' });
      expect(st.getRaw('z').equals(full.subarray(full.length - 8))).toBe(true);
      fs.truncateSync(file, full.length - 4);
      expect(() => st.getRaw('z')).toThrow(/truncated after it was opened/);
      expect(st.getRaw('a')).toHaveLength(32);
      st.close();
      expect(() => st.getRaw('a')).toThrow(/file is closed/);
    });

    test('random corruption never crashes, hangs or reads out of bounds: it opens or throws SafetensorsError', () => {
      const good = serializeSafetensors({
        a: { dtype: 'F16', shape: [3, 4], data: randomF32(12) },
        b: { dtype: 'I64', shape: [5], data: randomI32(5, -100, 100) },
        c: { dtype: 'F32', shape: [2], data: randomF32(2) },
      }, { m: 'x' });
      const n = Number(good.readBigUInt64LE(0));
      let opened = 0;
      let refused = 0;
      for (let iter = 0; iter < 1500; iter++) {
        let buf = Buffer.from(good);
        const kind = iter % 4;
        if (kind === 0) buf = buf.subarray(0, rand.int(0, buf.length - 1));
        else if (kind === 1) for (let k = rand.int(1, 4); k > 0; k--) buf[rand.int(8, 8 + n - 1)] = rand.int(0, 255);
        else if (kind === 2) {
          const text = buf.subarray(8, 8 + n).toString('latin1');
          const digits = [...text.matchAll(/\d+/g)];
          const d = digits[rand.int(0, digits.length - 1)];
          const repl = String(rand.int(0, 60));
          const t2 = text.slice(0, d.index) + repl + text.slice((d.index as number) + d[0].length);
          buf = rawFile(t2, buf.subarray(8 + n));
        } else buf.writeBigUInt64LE(BigInt(rand.u32()) * BigInt(rand.int(0, 3) === 0 ? rand.u32() : 1), 0);
        let st: SafetensorsFile;
        try {
          st = SafetensorsFile.fromBuffer(buf, 'fuzz');
        } catch (e) {
          if (!(e instanceof SafetensorsError) || !e.message.startsWith('fuzz: ')) throw e;
          refused++;
          continue;
        }
        opened++;
        for (const name of st.names()) {
          const info = st.info(name);
          expect(info.byteOffset + info.byteLength).toBeLessThanOrEqual(buf.length);
          expect(st.getRaw(name)).toHaveLength(info.byteLength);
          for (const get of [() => st.getFloat32(name), () => st.getInt32(name)]) {
            try {
              get();
            } catch (e) {
              if (!(e instanceof SafetensorsError)) throw e;
            }
          }
        }
      }
      expect(refused).toBeGreaterThan(100);
      expect(opened).toBeGreaterThan(0);
    });
  });

  describe('sharded checkpoints and openCheckpoint', () => {
    function writeSharded(dir: string) {
      const a = randomF32(6);
      const b = randomI32(4);
      const c = randomF32(10);
      const d = randomI32(3, -1000, 1000);
      writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), {
        a: { dtype: 'F32', shape: [2, 3], data: a },
        b: { dtype: 'I32', shape: [4], data: b },
        stray: { dtype: 'F32', shape: [1], data: randomF32(1) },
      }, { format: 'pt' });
      writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), {
        c: { dtype: 'BF16', shape: [10], data: c },
        d: { dtype: 'I64', shape: [3], data: d },
      });
      const index = {
        metadata: { total_size: 24 + 16 + 20 + 24 },
        weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00001-of-00002.safetensors', c: 'model-00002-of-00002.safetensors', d: 'model-00002-of-00002.safetensors' },
      };
      fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify(index, null, 2));
      return { a, b, c, d, index };
    }

    test('round trip through the index, and openCheckpoint finds it', () => {
      const dir = freshDir();
      const { a, b, c, d } = writeSharded(dir);
      const sh = ShardedSafetensors.open(path.join(dir, 'model.safetensors.index.json'), { mode: 'fd' });
      try {
        expect(sh.names()).toEqual(['a', 'b', 'c', 'd']);
        expect(sh.shardFiles).toEqual(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
        expect(sh.metadata).toEqual({ total_size: 84 });
        expect(sh.has('c')).toBe(true);
        expect(sh.has('stray')).toBe(false);
        expect(sh.notes.join('\n')).toMatch(/model-00001-of-00002\.safetensors: 1 tensor\(s\) not in the weight map, ignored: "stray"/);
        expect(Array.from(sh.getFloat32('a'))).toEqual(Array.from(a));
        expect(Array.from(sh.getInt32('b'))).toEqual(Array.from(b));
        expectSameFloats(sh.getFloat32('c'), Array.from(c, refRoundBf16));
        expect(Array.from(sh.getInt32('d'))).toEqual(Array.from(d));
        expect(sh.getRaw('d')).toHaveLength(24);
        expect(sh.info('c')).toMatchObject({ dtype: 'BF16', shape: [10], file: path.join(dir, 'model-00002-of-00002.safetensors') });
        expect(() => sh.getFloat32('e')).toThrow(/model\.safetensors\.index\.json: no tensor named "e"; available: "a", "b", "c", "d"/);
      } finally {
        sh.close();
      }
      const ck = openCheckpoint(dir);
      expect(ck).toBeInstanceOf(ShardedSafetensors);
      expect(Array.from(ck.getFloat32('a'))).toEqual(Array.from(a));
      expect(openCheckpoint(path.join(dir, 'model.safetensors.index.json'))).toBeInstanceOf(ShardedSafetensors);
    });

    test('bad indexes: invalid JSON, no weight_map, missing shard, name absent from its shard, paths outside', () => {
      const dir = freshDir();
      const { index } = writeSharded(dir);
      const ip = path.join(dir, 'model.safetensors.index.json');
      const withIndex = (text: string, re: RegExp) => {
        fs.writeFileSync(ip, text);
        const e = errorOf(() => ShardedSafetensors.open(ip));
        expect(e.file).toBe(ip);
        expect(e.message).toMatch(re);
      };
      withIndex('{"weight_map": {', /index is not valid JSON/);
      withIndex('[]', /index JSON is an array, expected an object with "weight_map"/);
      withIndex(JSON.stringify({ metadata: {} }), /index has no "weight_map"/);
      withIndex(JSON.stringify({ weight_map: [] }), /index "weight_map" is an array/);
      withIndex(JSON.stringify({ weight_map: { a: 3 } }), /weight_map\["a"\] is number 3, expected a shard file name/);
      withIndex(JSON.stringify({ metadata: 'x', weight_map: {} }), /index "metadata" is the string "x", expected an object/);
      withIndex(JSON.stringify({ weight_map: { ...index.weight_map, e: 'model-00003-of-00003.safetensors' } }),
        /shard "model-00003-of-00003\.safetensors" named in the weight map does not exist/);
      withIndex(JSON.stringify({ weight_map: { ...index.weight_map, zzz: 'model-00002-of-00002.safetensors' } }),
        /weight map puts 1 tensor\(s\) in shard "model-00002-of-00002\.safetensors" that it does not hold: "zzz"/);
      withIndex(JSON.stringify({ weight_map: { a: '../model-00001-of-00002.safetensors' } }), /expected a plain file name in the index's directory/);
      withIndex(JSON.stringify({ weight_map: { a: '/etc/passwd' } }), /expected a plain file name/);
      // a corrupt shard is reported under the shard's own name
      fs.writeFileSync(ip, JSON.stringify(index));
      fs.writeFileSync(path.join(dir, 'model-00002-of-00002.safetensors'), Buffer.from([1, 0, 0]));
      expect(() => ShardedSafetensors.open(ip)).toThrow(/model-00002-of-00002\.safetensors: file is 3 bytes/);
      expect(() => ShardedSafetensors.open(path.join(dir, 'none.json'))).toThrow(/cannot read index: ENOENT/);
    });

    test('openCheckpoint: model.safetensors first, pickle-only directories refused with a conversion recipe, empty directories explained', () => {
      const single = freshDir();
      const w = randomF32(4);
      writeSafetensors(path.join(single, 'model.safetensors'), { w: { dtype: 'F32', shape: [4], data: w } });
      writeSharded(single); // both present: model.safetensors wins
      const ck = openCheckpoint(single);
      expect(ck).toBeInstanceOf(SafetensorsFile);
      expect(Array.from(ck.getFloat32('w'))).toEqual(Array.from(w));
      expect(openCheckpoint(path.join(single, 'model.safetensors'))).toBeInstanceOf(SafetensorsFile);

      const pickle = freshDir();
      fs.writeFileSync(path.join(pickle, 'pytorch_model.bin'), Buffer.from('PK\x03\x04 not really a zip'));
      fs.writeFileSync(path.join(pickle, 'config.json'), '{}');
      const e = errorOf(() => openCheckpoint(pickle));
      expect(e.message).toMatch(/only PyTorch pickle checkpoint file\(s\) found \(pytorch_model\.bin\)/);
      expect(e.message).toMatch(/refused/);
      expect(e.message).toMatch(/python -c "import torch; from safetensors\.torch import save_file; .*torch\.load\('pytorch_model\.bin'/);
      expect(e.message).toMatch(/save_pretrained\(out_dir, safe_serialization=True\)/);
      expect(() => openCheckpoint(path.join(pickle, 'pytorch_model.bin'))).toThrow(/pickle/);

      const pt = freshDir();
      fs.writeFileSync(path.join(pt, 'weights.pt'), 'x');
      expect(() => openCheckpoint(pt)).toThrow(/pickle checkpoint file\(s\) found \(weights\.pt\)/);

      const empty = freshDir();
      expect(() => openCheckpoint(empty)).toThrow(/no checkpoint found: looked for model\.safetensors and model\.safetensors\.index\.json .*the directory holds nothing/);
      fs.writeFileSync(path.join(empty, 'adapter_model.safetensors'), serializeSafetensors({ x: { dtype: 'F32', shape: [1], data: randomF32(1) } }));
      expect(() => openCheckpoint(empty)).toThrow(/other safetensors files here, open them directly: adapter_model\.safetensors/);
      expect(() => openCheckpoint(path.join(empty, 'nope'))).toThrow(/checkpoint directory does not exist/);
    });
  });
});
