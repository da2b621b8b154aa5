// Loaded adapters on the served model, least recently used first out: at most `capacity` at once
// and, with a byte budget, at most that many bytes of adapter and head parameters.
// An adapter is loaded from the library on its first request (after its backbone hash is checked)
// and evicted when the cache is full and it is the least recently used one that no running batch
// holds; its next request loads it again. A library entry whose files changed is reloaded.
import type { Backbone } from '../models/bert/model';
import type { Decoder } from '../models/decoder/model';
import type { AdapterLibrary, LibraryEntry } from './library';

/** The adapter was trained on another backbone (its weight hash differs). */
export class RefusedAdapterError extends Error {}
/** The adapter's files could not be loaded (corrupt, or not fitting the model). */
export class AdapterLoadError extends Error {}

export interface CacheEvents {
  hit(ref: string): void;
  miss(ref: string): void;
  evict(ref: string): void;
}

interface Loaded {
  key: string;
  stamp: string;
  labels?: string[];
  uses: number;
  bytes: number;
}

export class AdapterCache {
  private loaded = new Map<string, Loaded>(); // ref → loaded, in use order (oldest first)
  private counter = 0;
  private bytesHeld = 0;

  constructor(
    private readonly model: Backbone | Decoder, private readonly library: AdapterLibrary, readonly capacity: number,
    private readonly events: CacheEvents, readonly budgetBytes: number | null = null,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`cache-adapters must be a positive integer, got ${capacity}`);
    if (budgetBytes !== null && !(budgetBytes > 0)) throw new Error(`the adapter cache's byte budget must be positive, got ${budgetBytes}`);
  }

  /** Bytes of the loaded adapters' (and heads') parameters. */
  get bytes(): number {
    return this.bytesHeld;
  }

  /** Whether the adapter of this ref is loaded now. */
  has(ref: string): boolean {
    return this.loaded.has(ref);
  }

  /**
   * The model's name for the library adapter `entry` (loading it when needed) and its head's labels,
   * held until release(ref). Throws RefusedAdapterError for an adapter trained on other weights.
   */
  acquire(entry: LibraryEntry): { key: string; labels?: string[] } {
    let l = this.loaded.get(entry.ref);
    if (l && l.stamp !== entry.stamp && l.uses === 0) {
      this.unload(entry.ref, l); // replaced on disk
      l = undefined;
    }
    if (l) {
      this.events.hit(entry.ref);
      this.loaded.delete(entry.ref);
      this.loaded.set(entry.ref, l); // most recent last
    } else {
      this.events.miss(entry.ref);
      if (entry.backboneHash && this.model.weightHash && entry.backboneHash !== this.model.weightHash)
        throw new RefusedAdapterError(`adapter ${entry.ref} was trained on a backbone with weight hash ${entry.backboneHash.slice(0, 16)}…; `
          + `this server's backbone (${this.model.modelName}) has ${this.model.weightHash.slice(0, 16)}…`);
      this.makeRoom();
      const key = `lib${++this.counter}_${entry.name.replace(/[^A-Za-z0-9_]/g, '_')}`;
      let r;
      try {
        r = this.model.loadAdapter(entry.dir, { loadAs: key });
      } catch (e) {
        throw new AdapterLoadError(`adapter ${entry.ref} could not be loaded: ${(e as Error).message}`);
      }
      l = { key, stamp: entry.stamp, labels: r.labels, uses: 0, bytes: this.paramBytes(key) };
      this.loaded.set(entry.ref, l);
      this.bytesHeld += l.bytes;
      this.fitBudget(entry.ref);
    }
    l.uses++;
    return { key: l.key, labels: l.labels };
  }

  release(ref: string): void {
    const l = this.loaded.get(ref);
    if (l && l.uses > 0) l.uses--;
  }

  /** Unloads an adapter now (admin DELETE, or removed from the library); false when it is in use or not loaded. */
  drop(ref: string): boolean {
    const l = this.loaded.get(ref);
    if (!l || l.uses > 0) return false;
    this.unload(ref, l);
    return true;
  }

  private paramBytes(key: string): number {
    const elem = this.model.dtype === 'float32' ? 4 : 2;
    let n = 0;
    for (const t of this.model.adapterParameters(key).values()) n += t.size * elem;
    const head = (this.model as Backbone).head?.(key);
    if (head) for (const t of head.parameters().values()) n += t.size * elem;
    return n;
  }

  /** Evicts least recently used, unused adapters (never `keep`) until the bytes fit the budget. */
  private fitBudget(keep: string): void {
    if (this.budgetBytes === null) return;
    for (const [ref, l] of [...this.loaded.entries()]) {
      if (this.bytesHeld <= this.budgetBytes) return;
      if (ref === keep || l.uses > 0) continue;
      this.unload(ref, l);
      this.events.evict(ref);
    }
  }

  private makeRoom(): void {
    while (this.loaded.size >= this.capacity) {
      const victim = [...this.loaded.entries()].find(([, l]) => l.uses === 0);
      if (!victim) break; // every loaded adapter is in a running batch: go over capacity for now
      this.unload(victim[0], victim[1]);
      this.events.evict(victim[0]);
    }
  }

  private unload(ref: string, l: Loaded): void {
    this.loaded.delete(ref);
    this.bytesHeld -= l.bytes;
    this.model.deleteAdapter(l.key);
    const m = this.model as Backbone;
    if (typeof m.head === 'function' && m.head(l.key)) m.deleteHead(l.key);
  }
}
