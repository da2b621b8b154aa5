// The KV cache of generation: per layer, one preallocated pool of keys and one of values,
// [slots, kvHeads, headDim], handed out in pages of pageSize tokens. Each sequence holds a list of
// pages (its page table) and a length, so prompts of different lengths take only what they need and
// sequences join and leave a running batch without moving anyone's keys (contract:
// native/generation.h).
import type { Decoder } from '../models/decoder/model';
import { Tensor, empty, tensor } from '../tensor';

export interface PagedCacheOptions {
  /** Pages in the pool (all sequences together). */
  pages: number;
  /** Tokens per page (default 16). */
  pageSize?: number;
}

interface Sequence {
  pages: number[];
  length: number;
}

export class PagedKVCache {
  readonly pageSize: number;
  readonly pages: number;
  /** Per layer: keys and values, [pages · pageSize, kvHeads, headDim] in the model's dtype, on its device. */
  readonly layers: { k: Tensor; v: Tensor }[];
  /** Bytes of one token's keys and values over all layers. */
  readonly bytesPerToken: number;
  private readonly free: number[];
  private readonly seqs = new Map<number, Sequence>();
  private nextId = 0;
  private readonly device: string;

  constructor(model: Decoder, o: PagedCacheOptions) {
    const c = model.config;
    this.pageSize = o.pageSize ?? 16;
    if (!Number.isInteger(this.pageSize) || this.pageSize < 1) throw new Error(`cache: pageSize must be a positive integer, got ${o.pageSize}`);
    if (!Number.isInteger(o.pages) || o.pages < 1) throw new Error(`cache: pages must be a positive integer, got ${o.pages}`);
    this.pages = o.pages;
    this.device = model.device;
    const shape = [o.pages * this.pageSize, c.numKvHeads, c.headDim];
    this.layers = [];
    try {
      for (let i = 0; i < c.numLayers; i++)
        this.layers.push({ k: empty(shape, { dtype: model.dtype, device: model.device }), v: empty(shape, { dtype: model.dtype, device: model.device }) });
    } catch (e) {
      this.dispose();
      throw e;
    }
    this.bytesPerToken = 2 * c.numLayers * c.numKvHeads * c.headDim * (model.dtype === 'float32' ? 4 : 2);
    this.free = Array.from({ length: o.pages }, (_, i) => o.pages - 1 - i);
  }

  /** A cache with exactly the pages that sequences of these lengths need. */
  static forLengths(model: Decoder, lengths: number[], pageSize = 16): PagedKVCache {
    const pages = lengths.reduce((a, n) => a + Math.ceil(n / pageSize), 0);
    return new PagedKVCache(model, { pages: Math.max(1, pages), pageSize });
  }

  /** Pages not held by any sequence. */
  get freePages(): number {
    return this.free.length;
  }

  /** A new empty sequence; returns its id. */
  add(): number {
    const id = this.nextId++;
    this.seqs.set(id, { pages: [], length: 0 });
    return id;
  }

  /** Frees a sequence's pages. */
  release(id: number): void {
    const s = this.seqs.get(id);
    if (!s) return;
    this.free.push(...s.pages.reverse());
    this.seqs.delete(id);
  }

  length(id: number): number {
    return this.get(id).length;
  }

  /** Makes room for `extra` more tokens of a sequence (taking pages from the pool); throws when it is full. */
  reserve(id: number, extra: number): void {
    const s = this.get(id);
    const need = Math.ceil((s.length + extra) / this.pageSize) - s.pages.length;
    if (need > this.free.length)
      throw new Error(`cache: ${s.length + extra} tokens need ${need} more pages of ${this.pageSize} tokens, and ${this.free.length} of ${this.pages} are free`);
    for (let i = 0; i < need; i++) s.pages.push(this.free.pop()!);
  }

  /** Records that `n` more tokens of the sequence were written (after reserve). */
  advance(id: number, n: number): void {
    const s = this.get(id);
    if (s.length + n > s.pages.length * this.pageSize) throw new Error('cache: advance past the reserved pages');
    s.length += n;
  }

  /**
   * Slots of n tokens per sequence written at each one's current length: int32 [B · n], −1 beyond
   * counts[b] (right padding).
   */
  slots(ids: number[], n: number, counts: number[] = ids.map(() => n)): Tensor {
    const out = new Int32Array(ids.length * n).fill(-1);
    ids.forEach((id, b) => {
      const s = this.get(id);
      for (let t = 0; t < counts[b]; t++) {
        const j = s.length + t;
        out[b * n + t] = s.pages[Math.floor(j / this.pageSize)] * this.pageSize + (j % this.pageSize);
      }
    });
    return tensor(out, [ids.length * n], { dtype: 'int32', device: this.device });
  }

  /** The page table of these sequences, int32 [B, maxPages] (−1 pads), and the longest page list. */
  pageTable(ids: number[]): { table: Tensor; maxPages: number } {
    const maxPages = Math.max(1, ...ids.map((id) => this.get(id).pages.length));
    const out = new Int32Array(ids.length * maxPages).fill(-1);
    ids.forEach((id, b) => out.set(this.get(id).pages, b * maxPages));
    return { table: tensor(out, [ids.length, maxPages], { dtype: 'int32', device: this.device }), maxPages };
  }

  dispose(): void {
    for (const l of this.layers) {
      l.k.dispose();
      l.v.dispose();
    }
  }

  private get(id: number): Sequence {
    const s = this.seqs.get(id);
    if (!s) throw new Error(`cache: no sequence ${id}`);
    return s;
  }
}
