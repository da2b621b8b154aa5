// Tensors made during a forward or backward pass, freed together when the pass is done.
import { Tensor } from '../tensor';

export class Scope {
  private tensors: Tensor[] = [];

  /** Registers t for disposal with the scope; returns it. */
  t<T extends Tensor>(t: T): T {
    this.tensors.push(t);
    return t;
  }

  /** Frees everything registered except `keep`. */
  dispose(keep: Iterable<Tensor> = []): void {
    const k = new Set(keep);
    for (const t of this.tensors) if (!k.has(t)) t.dispose();
    this.tensors = [];
  }
}
