// A small reverse-mode tape for the composed adapter sites (compose.ts): each step records how to
// send its output's gradient to its inputs; backward() seeds the outputs and runs the steps in
// reverse, summing the gradients a tensor receives from several uses. Every tensor it makes is
// registered with the pass's scope.
import type { Scope } from '../core/scope';
import { add } from '../ops';
import type { Tensor } from '../tensor';

export class Tape {
  private readonly steps: (() => void)[] = [];
  private readonly grads = new Map<Tensor, Tensor>();

  constructor(readonly scope: Scope) {}

  /** Registers the backward of a step: it reads grad() of its outputs and calls send() for its inputs. */
  record(back: () => void): void {
    this.steps.push(back);
  }

  /** The gradient reaching t so far (undefined: none). */
  grad(t: Tensor): Tensor | undefined {
    return this.grads.get(t);
  }

  /** Adds g to t's gradient. */
  send(t: Tensor, g: Tensor): void {
    const prev = this.grads.get(t);
    this.grads.set(t, prev ? this.scope.t(add(prev, g)) : g);
  }

  /** Runs the steps backwards from the given output gradients; returns the gradients of `inputs`. */
  backward(seeds: [Tensor, Tensor][], inputs: Tensor[]): (Tensor | undefined)[] {
    for (const [t, g] of seeds) this.send(t, g);
    for (let i = this.steps.length - 1; i >= 0; i--) this.steps[i]();
    const out = inputs.map((t) => this.grads.get(t));
    this.grads.clear();
    return out;
  }
}
