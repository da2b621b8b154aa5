// Safetensors reader and writer, pure TypeScript over Node's fs.
//
// Format: u64 little-endian header length N, N bytes of UTF-8 JSON, then the data section.
// The JSON maps tensor names to { dtype, shape, data_offsets: [begin, end] } (offsets relative
// to the data section), plus an optional "__metadata__" map of string to string.
//
// Nothing in a file is trusted: the header is validated in full before any tensor is read,
// every read is bounded by the data section, and every failure is a SafetensorsError whose
// message starts with the file's label and says what is wrong.
import * as fs from 'fs';
import { writeAtomic } from '../atomicWrite';
import * as os from 'os';
import * as path from 'path';

/** Element types this module can convert (getFloat32 / getInt32). */
export type SafeDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';
/** Element types a file may hold that are accepted by the reader (getRaw works) but not converted. */
export type UnsupportedDType = 'F8_E4M3' | 'F8_E5M2' | 'U16' | 'U32' | 'U64';
export type StoredDType = SafeDType | UnsupportedDType;

export interface SafeTensorInfo {
  name: string;
  dtype: StoredDType;
  shape: number[];
  /** Absolute byte offset of the tensor's data within its file (8 + header length + data_offsets[0]). */
  byteOffset: number;
  byteLength: number;
  /** data_offsets as stored: relative to the start of the data section. */
  dataOffsets: [number, number];
  /** Label (usually the path) of the file holding the tensor. */
  file: string;
}

export interface TensorToWrite {
  dtype: 'F32' | 'F16' | 'BF16' | 'I32' | 'I64';
  shape: number[];
  /**
   * Float32Array for F32/F16/BF16 (F16/BF16 are rounded to nearest even), Int32Array for I32/I64
   * (I64 is sign-extended), or a Buffer holding exactly the little-endian bytes to store.
   */
  data: Float32Array | Int32Array | Buffer;
}

export interface OpenOptions {
  /**
   * 'memory' reads the whole file into a Buffer; 'fd' keeps a file descriptor and reads each tensor
   * on demand (call close() when done); 'auto' (default) uses memory up to 64 MiB, fd above.
   */
  mode?: 'auto' | 'memory' | 'fd';
}

/** Every validation or read failure. `file` is the label of the offending file. */
export class SafetensorsError extends Error {
  readonly file: string;
  constructor(file: string, message: string) {
    super(`${file}: ${message}`);
    this.name = 'SafetensorsError';
    this.file = file;
  }
}

/** Upper bound on the JSON header length; real headers are kilobytes to a few megabytes. */
export const MAX_HEADER_BYTES = 100_000_000;
const AUTO_MEMORY_LIMIT = 64 * 1024 * 1024;

const DTYPE_SIZE: Readonly<Record<StoredDType, number>> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
  F8_E4M3: 1, F8_E5M2: 1, U16: 2, U32: 4, U64: 8,
};
const CONVERTIBLE: ReadonlySet<string> = new Set(['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL']);
const INTEGER_DTYPES: ReadonlySet<string> = new Set(['I64', 'I32', 'I16', 'I8', 'U8', 'BOOL']);
const WRITABLE: ReadonlySet<string> = new Set(['F32', 'F16', 'BF16', 'I32', 'I64']);
const LITTLE_ENDIAN_HOST = os.endianness() === 'LE';

/** Bytes of a safetensors dtype, or undefined when the name is not a known dtype. */
export function dtypeSize(dtype: string): number | undefined {
  return Object.prototype.hasOwnProperty.call(DTYPE_SIZE, dtype) ? DTYPE_SIZE[dtype as StoredDType] : undefined;
}

// ---------------------------------------------------------------------------------------------
// 16-bit float conversions (bit-exact, written from the IEEE 754 definitions)
// ---------------------------------------------------------------------------------------------

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** float32 bit pattern of an IEEE half (binary16) bit pattern. Exact, keeps sign, inf, NaN payload. */
export function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0; // inf / NaN
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0; // normal: exp - 15 + 127
  if (mant === 0) return sign >>> 0; // ±0
  // Subnormal: value = mant · 2^-24. With k the index of mant's top bit, value = 1.f · 2^(k-24).
  const k = 31 - Math.clz32(mant);
  return (sign | ((k + 103) << 23) | ((mant << (23 - k)) & 0x7fffff)) >>> 0;
}

/** Half bit pattern nearest (ties to even) to a float32 bit pattern; overflow gives ±inf, NaN stays NaN. */
export function f32BitsToF16Bits(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;
  if (exp === 0xff) return mant !== 0 ? sign | 0x7e00 | (mant >>> 13) : sign | 0x7c00;
  const e = exp - 127;
  if (e > 15) return sign | 0x7c00;
  if (e >= -14) {
    // Normal half: keep 10 of the 23 mantissa bits. A carry out of the mantissa bumps the
    // exponent, and from the largest exponent gives 0x7c00 (inf), both as they should.
    let r = mant >>> 13;
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && (r & 1) === 1)) r++;
    return sign | (((e + 15) << 10) + r);
  }
  if (e < -25) return sign; // below half of the smallest subnormal (2^-25): ±0
  // Subnormal half: the value in units of 2^-24 is (1.mant) · 2^(e+24) = M >> (-e - 1) with M = 1.mant · 2^23.
  const m = mant | 0x800000;
  const shift = -e - 1; // 14 .. 24
  let r = m >>> shift;
  const rem = m & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (r & 1) === 1)) r++;
  return sign | r; // r may reach 0x400, the smallest normal: still the right encoding
}

/** BF16 bit pattern nearest (ties to even) to a float32 bit pattern; NaN stays NaN (quiet bit set). */
export function f32BitsToBf16Bits(u: number): number {
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x7fffff) !== 0) return ((u >>> 16) | 0x40) & 0xffff;
  const bias = 0x7fff + ((u >>> 16) & 1);
  return ((u + bias) >>> 16) & 0xffff; // u + bias < 2^32 for every non-NaN u
}

/** float32 value of a half bit pattern. */
export function f16ToF32(h: number): number {
  u32Scratch[0] = f16BitsToF32Bits(h & 0xffff);
  return f32Scratch[0];
}

/** float32 value of a bfloat16 bit pattern. */
export function bf16ToF32(h: number): number {
  u32Scratch[0] = (h & 0xffff) << 16;
  return f32Scratch[0];
}

/** Half bit pattern nearest to x (x is first rounded to float32). */
export function f32ToF16(x: number): number {
  f32Scratch[0] = x;
  return f32BitsToF16Bits(u32Scratch[0]);
}

/** BF16 bit pattern nearest to x (x is first rounded to float32). */
export function f32ToBf16(x: number): number {
  f32Scratch[0] = x;
  return f32BitsToBf16Bits(u32Scratch[0]);
}

// ---------------------------------------------------------------------------------------------
// Byte sources: an in-memory Buffer or a file descriptor
// ---------------------------------------------------------------------------------------------

interface ByteSource {
  readonly size: number;
  /** Exactly `length` bytes at `offset` (a view for memory sources, a fresh Buffer for fd sources). */
  read(offset: number, length: number): Buffer;
  close(): void;
}

class MemorySource implements ByteSource {
  private buf: Buffer | null;
  readonly size: number;
  constructor(private readonly label: string, buf: Buffer) {
    this.buf = buf;
    this.size = buf.length;
  }
  read(offset: number, length: number): Buffer {
    if (this.buf === null) throw new SafetensorsError(this.label, 'file is closed');
    if (offset < 0 || length < 0 || offset + length > this.buf.length) {
      throw new SafetensorsError(this.label, `read of ${length} bytes at ${offset} is outside the ${this.buf.length}-byte file`);
    }
    return this.buf.subarray(offset, offset + length);
  }
  close(): void {
    this.buf = null;
  }
}

const fdRegistry = new FinalizationRegistry<number>((fd) => {
  try {
    fs.closeSync(fd);
  } catch {
    // already closed
  }
});

class FdSource implements ByteSource {
  private fd: number | null;
  readonly size: number;
  private readonly token = {};
  constructor(private readonly label: string, fd: number, size: number) {
    this.fd = fd;
    this.size = size;
    fdRegistry.register(this, fd, this.token);
  }
  read(offset: number, length: number): Buffer {
    if (this.fd === null) throw new SafetensorsError(this.label, 'file is closed');
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new SafetensorsError(this.label, `read of ${length} bytes at ${offset} is outside the ${this.size}-byte file`);
    }
    const out = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const chunk = Math.min(length - done, 1 << 30);
      const n = fs.readSync(this.fd, out, done, chunk, offset + done);
      if (n === 0) {
        throw new SafetensorsError(this.label,
          `file ended at byte ${offset + done} while reading ${length} bytes at ${offset}: it was truncated after it was opened (${this.size} bytes then)`);
      }
      done += n;
    }
    return out;
  }
  close(): void {
    if (this.fd === null) return;
    const fd = this.fd;
    this.fd = null;
    fdRegistry.unregister(this.token);
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// Header parsing and validation
// ---------------------------------------------------------------------------------------------

interface Entry {
  name: string;
  dtype: StoredDType;
  shape: number[];
  numel: number;
  begin: number;
  end: number;
}

interface ParsedHeader {
  headerLength: number;
  dataStart: number;
  dataSize: number;
  metadata: Record<string, string>;
  entries: Map<string, Entry>;
  notes: string[];
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${String(v)}`;
}

function quote(name: string): string {
  return JSON.stringify(name.length > 200 ? `${name.slice(0, 200)}…` : name);
}

/**
 * The first key that appears twice in the top-level object of valid JSON `text`, or null.
 * A scan of the text (JSON.parse cannot tell): strings are skipped as units, depth is tracked.
 */
export function firstDuplicateTopLevelKey(text: string): string | null {
  const seen = new Set<string>();
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (seen.has(key)) return key;
        seen.add(key);
        expectKey = false;
      }
      i = j;
    } else if (c === '{' || c === '[') {
      depth++;
      expectKey = depth === 1 && c === '{';
    } else if (c === '}' || c === ']') {
      depth--;
    } else if (c === ',' && depth === 1) {
      expectKey = true;
    }
  }
  return null;
}

function parseHeader(label: string, src: ByteSource): ParsedHeader {
  const fail = (msg: string): never => {
    throw new SafetensorsError(label, msg);
  };
  if (src.size < 8) {
    fail(`file is ${src.size} bytes, shorter than the 8-byte header length prefix (truncated or not a safetensors file)`);
  }
  const n64 = src.read(0, 8).readBigUInt64LE(0);
  if (n64 === 0n) fail('header length is 0 (a safetensors header is a non-empty JSON object)');
  if (n64 > BigInt(MAX_HEADER_BYTES)) {
    fail(`header length ${n64} bytes exceeds the ${MAX_HEADER_BYTES}-byte limit (corrupt or not a safetensors file)`);
  }
  const headerLength = Number(n64);
  if (headerLength > src.size - 8) {
    fail(`header length ${headerLength} bytes runs past the end of the file: only ${src.size - 8} bytes follow the 8-byte prefix (truncated file?)`);
  }
  const dataStart = 8 + headerLength;
  const dataSize = src.size - dataStart;

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(src.read(8, headerLength));
  } catch {
    return fail('header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail(`header is not valid JSON (${(e as Error).message})`);
  }
  // JSON.parse keeps the last of repeated keys; a header naming a tensor twice is ambiguous, so refuse it.
  const dup = firstDuplicateTopLevelKey(text);
  if (dup !== null) fail(`header names ${JSON.stringify(dup)} twice`);
  if (!isPlainObject(json)) fail(`header JSON is ${describeValue(json)}, expected an object mapping tensor names to entries`);
  const root = json as Record<string, unknown>;

  let metadata: Record<string, string> = Object.freeze({});
  const entries = new Map<string, Entry>();
  for (const name of Object.keys(root)) {
    const v = root[name];
    if (name === '__metadata__') {
      if (!isPlainObject(v)) fail(`__metadata__ is ${describeValue(v)}, expected an object mapping strings to strings`);
      const pairs: [string, string][] = [];
      for (const [k, mv] of Object.entries(v as Record<string, unknown>)) {
        if (typeof mv !== 'string') fail(`__metadata__[${quote(k)}] is ${describeValue(mv)}, expected a string`);
        pairs.push([k, mv as string]);
      }
      metadata = Object.freeze(Object.fromEntries(pairs));
      continue;
    }
    const what = `tensor ${quote(name)}`;
    if (!isPlainObject(v)) fail(`${what}: entry is ${describeValue(v)}, expected an object with dtype, shape, data_offsets`);
    const ent = v as Record<string, unknown>;

    const dtype = ent.dtype;
    if (dtype === undefined) fail(`${what}: missing "dtype"`);
    if (typeof dtype !== 'string') fail(`${what}: "dtype" is ${describeValue(dtype)}, expected a string`);
    const size = dtypeSize(dtype as string);
    if (size === undefined) {
      fail(`${what}: unknown dtype ${quote(dtype as string)} (known: ${Object.keys(DTYPE_SIZE).join(', ')})`);
    }

    const shape = ent.shape;
    if (shape === undefined) fail(`${what}: missing "shape"`);
    if (!Array.isArray(shape)) fail(`${what}: "shape" is ${describeValue(shape)}, expected an array of non-negative integers`);
    let numel = 1n;
    (shape as unknown[]).forEach((d, i) => {
      if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
        fail(`${what}: shape[${i}] is ${describeValue(d)}, expected a non-negative safe integer`);
      }
      numel *= BigInt(d as number);
    });

    const offs = ent.data_offsets;
    if (offs === undefined) fail(`${what}: missing "data_offsets"`);
    if (!Array.isArray(offs) || offs.length !== 2) {
      fail(`${what}: "data_offsets" is ${describeValue(offs)}${Array.isArray(offs) ? ` of length ${offs.length}` : ''}, expected [begin, end]`);
    }
    const [begin, end] = offs as unknown[];
    for (const [k, o] of [['begin', begin], ['end', end]] as const) {
      if (typeof o !== 'number' || !Number.isSafeInteger(o) || o < 0) {
        fail(`${what}: data_offsets ${k} is ${describeValue(o)}, expected a non-negative safe integer`);
      }
    }
    const b = begin as number;
    const e = end as number;
    if (b > e) fail(`${what}: data_offsets [${b}, ${e}] has begin > end`);

    const expected = numel * BigInt(size as number);
    if (BigInt(e - b) !== expected) {
      fail(`${what}: data_offsets [${b}, ${e}] span ${e - b} bytes, but shape [${(shape as number[]).join(', ')}] × ${dtype} (${size} bytes) needs ${expected} bytes`);
    }
    if (e > dataSize) {
      fail(`${what}: data_offsets [${b}, ${e}] extend past the end of the data section (${dataSize} bytes; truncated file?)`);
    }
    entries.set(name, { name, dtype: dtype as StoredDType, shape: (shape as number[]).slice(), numel: Number(numel), begin: b, end: e });
  }

  // Overlaps (empty tensors occupy no bytes and cannot overlap), then gaps and trailing bytes.
  const notes: string[] = [];
  const spans = [...entries.values()].filter((t) => t.end > t.begin).sort((x, y) => x.begin - y.begin || x.end - y.end);
  let prev: Entry | undefined;
  let covered = 0;
  for (const t of spans) {
    if (prev !== undefined && t.begin < prev.end) {
      fail(`tensors ${quote(prev.name)} [${prev.begin}, ${prev.end}] and ${quote(t.name)} [${t.begin}, ${t.end}] overlap`);
    }
    if (t.begin > covered) notes.push(`gap of ${t.begin - covered} unused bytes before tensor ${quote(t.name)} at data offset ${covered}`);
    covered = t.end;
    prev = t;
  }
  if (dataSize > covered) notes.push(`${dataSize - covered} trailing bytes after the last tensor (data section is ${dataSize} bytes, tensors end at ${covered})`);
  return { headerLength, dataStart, dataSize, metadata, entries, notes };
}

function missingName(label: string, name: string, available: string[]): SafetensorsError {
  // Rank by shared prefix + suffix so that near-misses ("model." prefix, ".weight" vs ".bias") come first.
  const score = (c: string) => {
    let p = 0;
    while (p < c.length && p < name.length && c[p] === name[p]) p++;
    let s = 0;
    while (s < c.length - p && s < name.length - p && c[c.length - 1 - s] === name[name.length - 1 - s]) s++;
    return p + s;
  };
  const shown = available.length <= 8 ? available : available.map((c) => [score(c), c] as const)
    .sort((x, y) => y[0] - x[0] || (x[1] < y[1] ? -1 : 1)).slice(0, 8).map((x) => x[1]);
  const list = shown.map(quote).join(', ');
  const more = available.length > shown.length ? `, … (${available.length} tensors in all)` : '';
  return new SafetensorsError(label, available.length === 0
    ? `no tensor named ${quote(name)} (the file holds no tensors)`
    : `no tensor named ${quote(name)}; available: ${list}${more}`);
}

// ---------------------------------------------------------------------------------------------
// Conversions from stored bytes
// ---------------------------------------------------------------------------------------------

function view(b: Buffer): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function toFloat32(label: string, t: Entry, raw: Buffer): Float32Array {
  const n = t.numel;
  const out = new Float32Array(n);
  const dv = view(raw);
  switch (t.dtype) {
    case 'F32':
      if (LITTLE_ENDIAN_HOST) new Uint8Array(out.buffer).set(raw);
      else for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
      return out;
    case 'F16': {
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = f16BitsToF32Bits(dv.getUint16(2 * i, true));
      return out;
    }
    case 'BF16': {
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = dv.getUint16(2 * i, true) << 16;
      return out;
    }
    case 'F64':
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(8 * i, true);
      return out;
    case 'I64':
      for (let i = 0; i < n; i++) out[i] = Number(dv.getBigInt64(8 * i, true));
      return out;
    case 'I32':
      for (let i = 0; i < n; i++) out[i] = dv.getInt32(4 * i, true);
      return out;
    case 'I16':
    case 'I8':
    case 'U8':
    case 'BOOL':
      readSmallInts(label, t, raw, out);
      return out;
    default:
      throw new SafetensorsError(label, `tensor ${quote(t.name)}: dtype ${t.dtype} is known but not supported for conversion to float32 (use getRaw)`);
  }
}

/** I16, I8, U8 and BOOL values into out (shared by the float32 and int32 readers). */
function readSmallInts(label: string, t: Entry, raw: Buffer, out: Float32Array | Int32Array): void {
  const dv = view(raw);
  const n = t.numel;
  switch (t.dtype) {
    case 'I16':
      for (let i = 0; i < n; i++) out[i] = dv.getInt16(2 * i, true);
      return;
    case 'I8':
      for (let i = 0; i < n; i++) out[i] = dv.getInt8(i);
      return;
    case 'BOOL':
      checkBool(label, t, raw);
      for (let i = 0; i < n; i++) out[i] = raw[i];
      return;
    default: // U8
      for (let i = 0; i < n; i++) out[i] = raw[i];
  }
}

function checkBool(label: string, t: Entry, raw: Buffer): void {
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] > 1) throw new SafetensorsError(label, `tensor ${quote(t.name)}: BOOL element ${i} holds byte ${raw[i]}, expected 0 or 1`);
  }
}

function toInt32(label: string, t: Entry, raw: Buffer): Int32Array {
  const n = t.numel;
  const out = new Int32Array(n);
  const dv = view(raw);
  switch (t.dtype) {
    case 'I64':
      for (let i = 0; i < n; i++) {
        const lo = dv.getUint32(8 * i, true);
        const hi = dv.getInt32(8 * i + 4, true);
        if ((hi === 0 && lo < 0x80000000) || (hi === -1 && lo >= 0x80000000)) out[i] = lo | 0;
        else {
          throw new SafetensorsError(label,
            `tensor ${quote(t.name)}: I64 element ${i} is ${dv.getBigInt64(8 * i, true)}, which does not fit in int32`);
        }
      }
      return out;
    case 'I32':
      if (LITTLE_ENDIAN_HOST) new Uint8Array(out.buffer).set(raw);
      else for (let i = 0; i < n; i++) out[i] = dv.getInt32(4 * i, true);
      return out;
    case 'I16':
    case 'I8':
    case 'U8':
    case 'BOOL':
      readSmallInts(label, t, raw, out);
      return out;
    default:
      throw new SafetensorsError(label,
        `tensor ${quote(t.name)}: getInt32 needs an integer dtype (${[...INTEGER_DTYPES].join(', ')}), but the tensor is ${t.dtype}`
        + (CONVERTIBLE.has(t.dtype) ? ' (use getFloat32)' : ' (use getRaw)'));
  }
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/** One .safetensors file, its header validated at open. */
export class SafetensorsFile {
  /** Label used in error messages: the path for open(), the given label for fromBuffer(). */
  readonly label: string;
  readonly metadata: Record<string, string>;
  /** Harmless irregularities found while validating (gaps between tensors, trailing bytes). */
  readonly notes: readonly string[];
  readonly headerLength: number;
  private readonly entries: Map<string, Entry>;
  private readonly sortedNames: string[];
  private readonly dataStart: number;
  private readonly src: ByteSource;

  private constructor(label: string, src: ByteSource) {
    this.label = label;
    this.src = src;
    const h = parseHeader(label, src);
    this.metadata = h.metadata;
    this.notes = Object.freeze(h.notes);
    this.headerLength = h.headerLength;
    this.entries = h.entries;
    this.dataStart = h.dataStart;
    this.sortedNames = [...h.entries.keys()].sort();
  }

  /** Opens and validates a file. With mode 'fd' (or 'auto' above 64 MiB) call close() when done. */
  static open(file: string, options: OpenOptions = {}): SafetensorsFile {
    const mode = options.mode ?? 'auto';
    if (mode !== 'auto' && mode !== 'memory' && mode !== 'fd') {
      throw new SafetensorsError(file, `unknown open mode ${quote(String(mode))} (expected 'auto', 'memory' or 'fd')`);
    }
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (e) {
      throw new SafetensorsError(file, `cannot open: ${(e as Error).message}`);
    }
    let src: ByteSource;
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new SafetensorsError(file, 'not a regular file');
      if (mode === 'memory' || (mode === 'auto' && st.size <= AUTO_MEMORY_LIMIT)) {
        const buf = Buffer.allocUnsafe(st.size);
        let done = 0;
        while (done < st.size) {
          const n = fs.readSync(fd, buf, done, Math.min(st.size - done, 1 << 30), done);
          if (n === 0) throw new SafetensorsError(file, `file shrank while being read (${done} of ${st.size} bytes)`);
          done += n;
        }
        fs.closeSync(fd);
        src = new MemorySource(file, buf);
      } else {
        src = new FdSource(file, fd, st.size);
      }
    } catch (e) {
      try {
        fs.closeSync(fd);
      } catch {
        // already closed
      }
      throw e;
    }
    try {
      return new SafetensorsFile(file, src);
    } catch (e) {
      src.close();
      throw e;
    }
  }

  /** Validates an in-memory file. The buffer is not copied: do not modify it while this object is in use. */
  static fromBuffer(buf: Buffer, label = '<buffer>'): SafetensorsFile {
    if (!Buffer.isBuffer(buf)) throw new SafetensorsError(label, 'fromBuffer expects a Buffer');
    return new SafetensorsFile(label, new MemorySource(label, buf));
  }

  /** Tensor names, sorted. */
  names(): string[] {
    return this.sortedNames.slice();
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  info(name: string): SafeTensorInfo {
    const t = this.entry(name);
    return {
      name, dtype: t.dtype, shape: t.shape.slice(), byteOffset: this.dataStart + t.begin,
      byteLength: t.end - t.begin, dataOffsets: [t.begin, t.end], file: this.label,
    };
  }

  /** Values as float32: F32 exact, F16/BF16 exact, F64 rounded to nearest, integers converted. */
  getFloat32(name: string): Float32Array {
    const t = this.entry(name);
    return toFloat32(this.label, t, this.bytes(t));
  }

  /** Values of an integer tensor (I64/I32/I16/I8/U8/BOOL); an I64 value outside int32 is an error. */
  getInt32(name: string): Int32Array {
    const t = this.entry(name);
    return toInt32(this.label, t, this.bytes(t));
  }

  /** A copy of the tensor's exact stored bytes (little-endian). */
  getRaw(name: string): Buffer {
    const t = this.entry(name);
    return Buffer.from(this.bytes(t));
  }

  /** Releases the file descriptor or the buffer; reads afterwards throw. */
  close(): void {
    this.src.close();
  }

  private entry(name: string): Entry {
    const t = this.entries.get(name);
    if (t === undefined) throw missingName(this.label, String(name), this.sortedNames);
    return t;
  }

  private bytes(t: Entry): Buffer {
    return this.src.read(this.dataStart + t.begin, t.end - t.begin);
  }
}

/** A checkpoint split into shards by a model.safetensors.index.json. */
export class ShardedSafetensors {
  readonly indexPath: string;
  /** The index's "metadata" object (e.g. { total_size: … }); values are not necessarily strings. */
  readonly metadata: Record<string, unknown>;
  /** Shard file names as given in the weight map, sorted. */
  readonly shardFiles: readonly string[];
  /** Irregularities that are tolerated: tensors present in a shard but absent from the weight map, and the shards' own notes. */
  readonly notes: readonly string[];
  private readonly shards: Map<string, SafetensorsFile>;
  private readonly map: Map<string, SafetensorsFile>;
  private readonly sortedNames: string[];

  private constructor(indexPath: string, metadata: Record<string, unknown>, shards: Map<string, SafetensorsFile>,
    map: Map<string, SafetensorsFile>, notes: string[]) {
    this.indexPath = indexPath;
    this.metadata = metadata;
    this.shards = shards;
    this.shardFiles = Object.freeze([...shards.keys()].sort());
    this.map = map;
    this.sortedNames = [...map.keys()].sort();
    this.notes = Object.freeze(notes);
  }

  static open(indexPath: string, options: OpenOptions = {}): ShardedSafetensors {
    const label = indexPath;
    const fail = (msg: string): never => {
      throw new SafetensorsError(label, msg);
    };
    let text: string;
    try {
      text = fs.readFileSync(indexPath, 'utf8');
    } catch (e) {
      return fail(`cannot read index: ${(e as Error).message}`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      return fail(`index is not valid JSON (${(e as Error).message})`);
    }
    if (!isPlainObject(json)) fail(`index JSON is ${describeValue(json)}, expected an object with "weight_map"`);
    const root = json as Record<string, unknown>;
    let metadata: Record<string, unknown> = Object.freeze({});
    if (root.metadata !== undefined) {
      if (!isPlainObject(root.metadata)) fail(`index "metadata" is ${describeValue(root.metadata)}, expected an object`);
      metadata = Object.freeze(Object.fromEntries(Object.entries(root.metadata as Record<string, unknown>)));
    }
    if (root.weight_map === undefined) fail('index has no "weight_map"');
    if (!isPlainObject(root.weight_map)) fail(`index "weight_map" is ${describeValue(root.weight_map)}, expected an object mapping tensor names to shard files`);
    const wm = root.weight_map as Record<string, unknown>;

    const dir = path.dirname(indexPath);
    const byShard = new Map<string, string[]>();
    for (const [name, file] of Object.entries(wm)) {
      if (typeof file !== 'string') fail(`weight_map[${quote(name)}] is ${describeValue(file)}, expected a shard file name`);
      const f = file as string;
      // Shards must be plain file names next to the index: never a path elsewhere.
      if (f === '' || f === '.' || f === '..' || f.includes('/') || f.includes('\\') || f.includes('\0') || path.isAbsolute(f)) {
        fail(`weight_map[${quote(name)}] is ${quote(f)}, expected a plain file name in the index's directory`);
      }
      let list = byShard.get(f);
      if (list === undefined) byShard.set(f, (list = []));
      list.push(name);
    }

    const shards = new Map<string, SafetensorsFile>();
    const map = new Map<string, SafetensorsFile>();
    const notes: string[] = [];
    try {
      for (const f of [...byShard.keys()].sort()) {
        const p = path.join(dir, f);
        if (!fs.existsSync(p)) fail(`shard ${quote(f)} named in the weight map does not exist (looked for ${p})`);
        const shard = SafetensorsFile.open(p, options);
        shards.set(f, shard);
        const names = byShard.get(f) as string[];
        const absent = names.filter((n) => !shard.has(n));
        if (absent.length > 0) {
          fail(`weight map puts ${absent.length} tensor(s) in shard ${quote(f)} that it does not hold: ${absent.slice(0, 5).map(quote).join(', ')}${absent.length > 5 ? ', …' : ''}`);
        }
        for (const n of names) map.set(n, shard);
        const mapped = new Set(names);
        const extra = shard.names().filter((n) => !mapped.has(n));
        if (extra.length > 0) notes.push(`${f}: ${extra.length} tensor(s) not in the weight map, ignored: ${extra.slice(0, 5).map(quote).join(', ')}`);
        for (const note of shard.notes) notes.push(`${f}: ${note}`);
      }
    } catch (e) {
      for (const s of shards.values()) s.close();
      throw e;
    }
    return new ShardedSafetensors(indexPath, metadata, shards, map, notes);
  }

  names(): string[] {
    return this.sortedNames.slice();
  }

  has(name: string): boolean {
    return this.map.has(name);
  }

  info(name: string): SafeTensorInfo {
    return this.shard(name).info(name);
  }

  getFloat32(name: string): Float32Array {
    return this.shard(name).getFloat32(name);
  }

  getInt32(name: string): Int32Array {
    return this.shard(name).getInt32(name);
  }

  getRaw(name: string): Buffer {
    return this.shard(name).getRaw(name);
  }

  close(): void {
    for (const s of this.shards.values()) s.close();
  }

  private shard(name: string): SafetensorsFile {
    const s = this.map.get(name);
    if (s === undefined) throw missingName(this.indexPath, String(name), this.sortedNames);
    return s;
  }
}

const PICKLE_EXTENSIONS = ['.bin', '.pt', '.pth', '.ckpt', '.pkl'];

function pickleRefusal(where: string, files: string[]): SafetensorsError {
  const shown = files.slice(0, 5).join(', ') + (files.length > 5 ? `, … (${files.length} files)` : '');
  const src = files.find((f) => f === 'pytorch_model.bin') ?? files[0];
  return new SafetensorsError(where,
    `only PyTorch pickle checkpoint file(s) found (${shown}). Pickle files can run arbitrary code when loaded, `
    + 'so they are refused; convert the checkpoint to safetensors once, in Python, e.g.\n'
    + `  python -c "import torch; from safetensors.torch import save_file; sd = torch.load('${src}', map_location='cpu', weights_only=True); `
    + `save_file({k: v.clone().contiguous() for k, v in sd.items()}, 'model.safetensors', metadata={'format': 'pt'})"\n`
    + 'or, for a transformers model: AutoModel.from_pretrained(src_dir).save_pretrained(out_dir, safe_serialization=True)');
}

/**
 * Opens the checkpoint in a model directory: model.safetensors, else model.safetensors.index.json.
 * A path to a .safetensors or .index.json file is opened directly. Pickle checkpoints are refused.
 */
export function openCheckpoint(dir: string, options: OpenOptions = {}): SafetensorsFile | ShardedSafetensors {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new SafetensorsError(dir, 'checkpoint directory does not exist');
  }
  if (st.isFile()) {
    if (dir.endsWith('.index.json')) return ShardedSafetensors.open(dir, options);
    if (PICKLE_EXTENSIONS.some((x) => dir.endsWith(x))) throw pickleRefusal(dir, [path.basename(dir)]);
    return SafetensorsFile.open(dir, options);
  }
  if (!st.isDirectory()) throw new SafetensorsError(dir, 'not a directory or checkpoint file');
  const single = path.join(dir, 'model.safetensors');
  if (fs.existsSync(single)) return SafetensorsFile.open(single, options);
  const index = path.join(dir, 'model.safetensors.index.json');
  if (fs.existsSync(index)) return ShardedSafetensors.open(index, options);

  const listing = fs.readdirSync(dir).sort();
  const pickles = listing.filter((f) => PICKLE_EXTENSIONS.some((x) => f.endsWith(x)) || f === 'pytorch_model.bin.index.json');
  if (pickles.length > 0) throw pickleRefusal(dir, pickles);
  const others = listing.filter((f) => f.endsWith('.safetensors') || f.endsWith('.safetensors.index.json'));
  throw new SafetensorsError(dir,
    'no checkpoint found: looked for model.safetensors and model.safetensors.index.json '
    + '(and for pickle files pytorch_model.bin, *.bin, *.pt, *.pth, *.ckpt, to refuse them)'
    + (others.length > 0 ? `; other safetensors files here, open them directly: ${others.slice(0, 5).join(', ')}` : '')
    + `; the directory holds ${listing.length === 0 ? 'nothing' : `${listing.length} entries: ${listing.slice(0, 8).join(', ')}${listing.length > 8 ? ', …' : ''}`}`);
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

interface Planned {
  name: string;
  dtype: TensorToWrite['dtype'];
  shape: number[];
  byteLength: number;
  source: TensorToWrite;
}

function planTensors(where: string, tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>): { header: Buffer; plan: Planned[]; dataSize: number } {
  const fail = (msg: string): never => {
    throw new SafetensorsError(where, msg);
  };
  if (!isPlainObject(tensors)) fail('tensors must be an object mapping names to { dtype, shape, data }');
  const names = Object.keys(tensors).sort();
  const plan: Planned[] = [];
  for (const name of names) {
    const what = `tensor ${quote(name)}`;
    if (name === '__metadata__') fail('"__metadata__" is reserved and cannot be a tensor name');
    const t = tensors[name];
    if (!isPlainObject(t)) fail(`${what}: expected { dtype, shape, data }, got ${describeValue(t)}`);
    if (typeof t.dtype !== 'string' || !WRITABLE.has(t.dtype)) {
      fail(`${what}: cannot write dtype ${quote(String(t.dtype))} (writable: ${[...WRITABLE].join(', ')})`);
    }
    if (!Array.isArray(t.shape)) fail(`${what}: shape must be an array of non-negative integers`);
    let numel = 1;
    t.shape.forEach((d, i) => {
      if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) fail(`${what}: shape[${i}] is ${describeValue(d)}, expected a non-negative safe integer`);
      numel *= d;
    });
    if (!Number.isSafeInteger(numel)) fail(`${what}: shape [${t.shape.join(', ')}] has too many elements`);
    const size = DTYPE_SIZE[t.dtype];
    const byteLength = numel * size;
    const d = t.data;
    if (Buffer.isBuffer(d)) {
      if (d.length !== byteLength) fail(`${what}: Buffer data is ${d.length} bytes, but shape [${t.shape.join(', ')}] × ${t.dtype} needs ${byteLength}`);
    } else if (isF32(d)) {
      if (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16') fail(`${what}: Float32Array data cannot be written as ${t.dtype} (give an Int32Array or a Buffer)`);
      if (d.length !== numel) fail(`${what}: data has ${d.length} elements, but shape [${t.shape.join(', ')}] has ${numel}`);
    } else if (isI32(d)) {
      if (t.dtype !== 'I32' && t.dtype !== 'I64') fail(`${what}: Int32Array data cannot be written as ${t.dtype} (give a Float32Array or a Buffer)`);
      if (d.length !== numel) fail(`${what}: data has ${d.length} elements, but shape [${t.shape.join(', ')}] has ${numel}`);
    } else {
      fail(`${what}: data must be a Float32Array, Int32Array or Buffer, got ${describeValue(d)}`);
    }
    plan.push({ name, dtype: t.dtype, shape: t.shape.slice(), byteLength, source: t });
  }

  const parts: string[] = [];
  if (metadata !== undefined) {
    if (!isPlainObject(metadata)) fail('metadata must be an object mapping strings to strings');
    const meta: string[] = [];
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') fail(`metadata[${quote(k)}] is ${describeValue(v)}, expected a string`);
      meta.push(`${JSON.stringify(k)}:${JSON.stringify(v)}`);
    }
    parts.push(`"__metadata__":{${meta.join(',')}}`);
  }
  let offset = 0;
  for (const p of plan) {
    // Built by hand: a JS object would move integer-like keys to the front and treat "__proto__" specially.
    parts.push(`${JSON.stringify(p.name)}:{"dtype":"${p.dtype}","shape":[${p.shape.join(',')}],"data_offsets":[${offset},${offset + p.byteLength}]}`);
    offset += p.byteLength;
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded > MAX_HEADER_BYTES) fail(`header would be ${padded} bytes, above the ${MAX_HEADER_BYTES}-byte limit readers accept`);
  const header = Buffer.alloc(8 + padded, 0x20);
  header.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(header, 8);
  return { header, plan, dataSize: offset };
}

// Typed arrays made by the native addon or another realm (jest's sandbox) fail instanceof.
function isF32(d: unknown): d is Float32Array {
  return Object.prototype.toString.call(d) === '[object Float32Array]';
}
function isI32(d: unknown): d is Int32Array {
  return Object.prototype.toString.call(d) === '[object Int32Array]';
}

function encode(p: Planned): Buffer {
  const d = p.source.data;
  if (Buffer.isBuffer(d)) return d;
  const out = Buffer.allocUnsafe(p.byteLength);
  const dv = view(out);
  const n = d.length;
  if (isF32(d)) {
    if (p.dtype === 'F32') {
      if (LITTLE_ENDIAN_HOST) Buffer.from(d.buffer, d.byteOffset, d.byteLength).copy(out);
      else for (let i = 0; i < n; i++) dv.setFloat32(4 * i, d[i], true);
    } else {
      const bits = new Uint32Array(d.buffer, d.byteOffset, n); // a Float32Array's byteOffset is 4-aligned
      const conv = p.dtype === 'F16' ? f32BitsToF16Bits : f32BitsToBf16Bits;
      for (let i = 0; i < n; i++) dv.setUint16(2 * i, conv(bits[i]), true);
    }
  } else if (p.dtype === 'I32') {
    if (LITTLE_ENDIAN_HOST) Buffer.from(d.buffer, d.byteOffset, d.byteLength).copy(out);
    else for (let i = 0; i < n; i++) dv.setInt32(4 * i, d[i], true);
  } else {
    for (let i = 0; i < n; i++) {
      dv.setInt32(8 * i, d[i], true);
      dv.setInt32(8 * i + 4, d[i] < 0 ? -1 : 0, true);
    }
  }
  return out;
}

/** The bytes of a safetensors file: tensors in sorted-name order, contiguous; header space-padded to 8 bytes. */
export function serializeSafetensors(tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>): Buffer {
  const { header, plan, dataSize } = planTensors('<serialize>', tensors, metadata);
  const out = Buffer.allocUnsafe(header.length + dataSize);
  header.copy(out, 0);
  let at = header.length;
  for (const p of plan) {
    encode(p).copy(out, at);
    at += p.byteLength;
  }
  return out;
}

function writeAll(fd: number, buf: Buffer): void {
  let done = 0;
  while (done < buf.length) done += fs.writeSync(fd, buf, done, Math.min(buf.length - done, 1 << 30));
}

/**
 * Writes a safetensors file atomically: the bytes go to `${file}.tmp-<pid>-<random>`, are fsynced,
 * and the temporary file is renamed over `file`. On failure the temporary file is removed and any
 * existing `file` is left untouched.
 */
export function writeSafetensors(file: string, tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>): void {
  const { header, plan } = planTensors(file, tensors, metadata);
  try {
    writeAtomic(file, (fd) => {
      writeAll(fd, header);
      for (const p of plan) writeAll(fd, encode(p));
    });
  } catch (e) {
    if (e instanceof SafetensorsError) throw e;
    throw new SafetensorsError(file, `write failed: ${(e as Error).message}`);
  }
}
