// GGUF files (llama.cpp's format): the header, metadata and tensor table parsed by
// @huggingface/gguf; tensor data read here and dequantized to float32 at load. Supported storage
// types: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K (block layouts as ggml defines them); any
// other type is refused by name. Shapes are reported row-major ([ne1, ne0] for a matrix: ggml lists
// the innermost dimension first).
import * as fs from 'fs';

/** ggml's type ids (GGMLQuantizationType) of the types read here, and the names of all. */
const TYPE_NAMES: Record<number, string> = {
  0: 'F32', 1: 'F16', 2: 'Q4_0', 3: 'Q4_1', 6: 'Q5_0', 7: 'Q5_1', 8: 'Q8_0', 9: 'Q8_1', 10: 'Q2_K', 11: 'Q3_K', 12: 'Q4_K',
  13: 'Q5_K', 14: 'Q6_K', 15: 'Q8_K', 16: 'IQ2_XXS', 17: 'IQ2_XS', 18: 'IQ3_XXS', 19: 'IQ1_S', 20: 'IQ4_NL', 21: 'IQ3_S',
  22: 'IQ2_S', 23: 'IQ4_XS', 24: 'I8', 25: 'I16', 26: 'I32', 27: 'I64', 28: 'F64', 29: 'IQ1_M', 30: 'BF16', 34: 'TQ1_0', 35: 'TQ2_0',
  39: 'MXFP4',
};

/** Elements per block and bytes per block of each supported type. */
const BLOCKS: Record<number, { elems: number; bytes: number }> = {
  0: { elems: 1, bytes: 4 }, 1: { elems: 1, bytes: 2 }, 30: { elems: 1, bytes: 2 },
  8: { elems: 32, bytes: 34 }, 2: { elems: 32, bytes: 18 }, 3: { elems: 32, bytes: 20 },
  12: { elems: 256, bytes: 144 }, 14: { elems: 256, bytes: 210 },
};

export function ggmlTypeName(t: number): string {
  return TYPE_NAMES[t] ?? `type ${t}`;
}

export interface GgufTensor {
  name: string;
  /** Row-major shape (ggml's dimensions reversed). */
  shape: number[];
  type: number;
  typeName: string;
  /** Absolute byte offset of the data in the file. */
  offset: number;
  bytes: number;
}

export type GgufMetadata = Record<string, unknown>;

export interface GgufFile {
  file: string;
  metadata: GgufMetadata;
  tensors: Map<string, GgufTensor>;
  /** The tensor as float32 (dequantized). */
  read(name: string): Float32Array;
  /** The tensor's bytes as stored. */
  readRaw(name: string): Buffer;
}

/** IEEE half → float. */
function half(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Dequantizes `n` elements of type `type` from `b` (little endian). */
export function dequantize(type: number, b: Buffer, n: number): Float32Array {
  const out = new Float32Array(n);
  switch (type) {
    case 0:
      for (let i = 0; i < n; i++) out[i] = b.readFloatLE(4 * i);
      return out;
    case 1:
      for (let i = 0; i < n; i++) out[i] = half(b.readUInt16LE(2 * i));
      return out;
    case 30: {
      const u = new Uint32Array(1);
      const f = new Float32Array(u.buffer);
      for (let i = 0; i < n; i++) {
        u[0] = b.readUInt16LE(2 * i) << 16;
        out[i] = f[0];
      }
      return out;
    }
    case 8: // Q8_0: f16 d, 32 × int8
      for (let blk = 0, o = 0; o < n; blk++) {
        const p = blk * 34;
        const d = half(b.readUInt16LE(p));
        for (let j = 0; j < 32; j++) out[o++] = d * b.readInt8(p + 2 + j);
      }
      return out;
    case 2: // Q4_0: f16 d, 16 bytes; low nibbles are elements 0..15, high nibbles 16..31, offset 8
      for (let blk = 0, o = 0; o < n; blk++, o += 32) {
        const p = blk * 18;
        const d = half(b.readUInt16LE(p));
        for (let j = 0; j < 16; j++) {
          const q = b[p + 2 + j];
          out[o + j] = d * ((q & 0xf) - 8);
          out[o + j + 16] = d * ((q >> 4) - 8);
        }
      }
      return out;
    case 3: // Q4_1: f16 d, f16 m, 16 bytes: x = d·q + m
      for (let blk = 0, o = 0; o < n; blk++, o += 32) {
        const p = blk * 20;
        const d = half(b.readUInt16LE(p));
        const m = half(b.readUInt16LE(p + 2));
        for (let j = 0; j < 16; j++) {
          const q = b[p + 4 + j];
          out[o + j] = d * (q & 0xf) + m;
          out[o + j + 16] = d * (q >> 4) + m;
        }
      }
      return out;
    case 12: // Q4_K: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles
      for (let blk = 0, o = 0; o < n; blk++) {
        const p = blk * 144;
        const d = half(b.readUInt16LE(p));
        const dmin = half(b.readUInt16LE(p + 2));
        const sc = p + 4;
        const scaleMin = (j: number): [number, number] => (j < 4
          ? [b[sc + j] & 63, b[sc + j + 4] & 63]
          : [(b[sc + j + 4] & 0xf) | ((b[sc + j - 4] >> 6) << 4), (b[sc + j + 4] >> 4) | ((b[sc + j] >> 6) << 4)]);
        let q = p + 16;
        for (let j = 0, is = 0; j < 256; j += 64, is += 2, q += 32) {
          const [s1, m1] = scaleMin(is);
          const [s2, m2] = scaleMin(is + 1);
          for (let l = 0; l < 32; l++) out[o + l] = d * s1 * (b[q + l] & 0xf) - dmin * m1;
          for (let l = 0; l < 32; l++) out[o + 32 + l] = d * s2 * (b[q + l] >> 4) - dmin * m2;
          o += 64;
        }
      }
      return out;
    case 14: // Q6_K: 128 bytes low 4 bits, 64 bytes high 2 bits, 16 int8 scales, f16 d
      for (let blk = 0, o = 0; o < n; blk++) {
        const p = blk * 210;
        const d = half(b.readUInt16LE(p + 208));
        let ql = p;
        let qh = p + 128;
        let sc = p + 192;
        for (let h = 0; h < 256; h += 128, ql += 64, qh += 32, sc += 8, o += 128)
          for (let l = 0; l < 32; l++) {
            const is = l >> 4;
            const q1 = ((b[ql + l] & 0xf) | (((b[qh + l] >> 0) & 3) << 4)) - 32;
            const q2 = ((b[ql + l + 32] & 0xf) | (((b[qh + l] >> 2) & 3) << 4)) - 32;
            const q3 = ((b[ql + l] >> 4) | (((b[qh + l] >> 4) & 3) << 4)) - 32;
            const q4 = ((b[ql + l + 32] >> 4) | (((b[qh + l] >> 6) & 3) << 4)) - 32;
            out[o + l] = d * b.readInt8(sc + is) * q1;
            out[o + l + 32] = d * b.readInt8(sc + is + 2) * q2;
            out[o + l + 64] = d * b.readInt8(sc + is + 4) * q3;
            out[o + l + 96] = d * b.readInt8(sc + is + 6) * q4;
          }
      }
      return out;
    default:
      throw new Error(`GGUF tensor type ${ggmlTypeName(type)} is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K)`);
  }
}

/** Opens a local GGUF file: metadata and tensor table; tensors are read on demand. */
export async function openGguf(file: string): Promise<GgufFile> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { gguf } = require('@huggingface/gguf') as typeof import('@huggingface/gguf');
  let parsed: Awaited<ReturnType<typeof gguf>>;
  try {
    parsed = await gguf(file, { allowLocalFile: true });
  } catch (e) {
    throw new Error(`${file}: not a readable GGUF file (${(e as Error).message})`);
  }
  const size = fs.statSync(file).size;
  const base = Number(parsed.tensorDataOffset);
  const tensors = new Map<string, GgufTensor>();
  for (const t of parsed.tensorInfos) {
    const shape = t.shape.map(Number).reverse();
    const n = shape.reduce((a, c) => a * c, 1);
    const blk = BLOCKS[t.dtype];
    const bytes = blk ? Math.ceil(n / blk.elems) * blk.bytes : 0;
    const offset = base + Number(t.offset);
    if (blk && (n % blk.elems !== 0 || offset + bytes > size))
      throw new Error(`${file}: tensor '${t.name}' (${ggmlTypeName(t.dtype)}, [${shape.join(', ')}]) does not fit the file (truncated or corrupt)`);
    tensors.set(t.name, { name: t.name, shape, type: t.dtype, typeName: ggmlTypeName(t.dtype), offset, bytes });
  }
  const metadata: GgufMetadata = {};
  for (const [k, v] of Object.entries(parsed.metadata)) metadata[k] = typeof v === 'bigint' ? Number(v) : v;
  const readRaw = (name: string): Buffer => {
    const t = tensors.get(name);
    if (!t) throw new Error(`${file}: no tensor '${name}'`);
    if (!BLOCKS[t.type]) dequantize(t.type, Buffer.alloc(0), 0); // throws naming the type
    const fd = fs.openSync(file, 'r');
    try {
      const buf = Buffer.alloc(t.bytes);
      fs.readSync(fd, buf, 0, t.bytes, t.offset);
      return buf;
    } finally {
      fs.closeSync(fd);
    }
  };
  const read = (name: string): Float32Array => {
    const buf = readRaw(name);
    const t = tensors.get(name)!;
    return dequantize(t.type, buf, t.shape.reduce((a, c) => a * c, 1));
  };
  return { file, metadata, tensors, readRaw, read };
}
