// One adapter site under a composition, step for step as AdapterHub's BottleneckLayer runs it
// (adapters/methods/bottleneck.py and adapter_layer_base.py): a state (hidden states, the sub-layer's
// input, the adapters' residual, the last up-projection, the last adapter) goes through the blocks —
// each block's first adapter runs its pre_forward, Stack chains, Parallel and BatchSplit slice the
// batch, Average takes AdapterHub's weighted mean, Fuse attends over its children's up-projections —
// and the last adapter's post_forward closes the site. Every step records its backward on a Tape.
import { add, cast, colSum, matmul, mul, rowSum, scale, stack } from '../ops';
import { embedding, embeddingBackward, fusionAttention, fusionAttentionBackward, layerNorm, layerNormBackward, transpose12 } from '../nn';
import { adapterBackward, adapterForward, adapterForwardBatched } from '../methods/bottleneck/functional';
import { tensor, Tensor, zeros } from '../tensor';
import type { CompositionBlock } from './composition';
import type { FusionConfig } from './fusion';
import { gateGradient, route } from './mixture';
import type { MixtureConfig } from './mixture';
import type { SiteRun } from './registry';
import type { Scope } from '../core/scope';
import { Tape } from './tape';

/** The sub-layer's own LayerNorm (null: the site has none, as in decoders), and where its gradients go. */
export interface SiteNorm { weight: Tensor; bias: Tensor; eps: number; grad?: (dWeight: Tensor, dBias: Tensor) => void }

/** One fusion layer at one site, ready to run. */
export interface FusionRun {
  config: FusionConfig;
  params: Map<string, Tensor>;
  temperature: number;
  dropout: { p: number; seed: number } | null;
  /** Receives the gradient of one of its tensors (AdapterHub's name below the fusion); absent when it does not train. */
  accumulate?: (param: string, g: Tensor) => void;
}

/** One mixture's gate and pool at one site, ready to run (lib/adapted/mixture.ts). */
export interface MixtureRun {
  config: MixtureConfig;
  gate: Tensor; // [A, H]
  /** The pool's modules here, in the mixture's order. */
  pool: SiteRun[];
  /** Receives the gate's gradient; absent when it does not train. */
  accumulate?: (g: Tensor) => void;
  /** Receives this site's load-balancing loss (times balanceWeight). */
  report(balanceLoss: number): void;
}

export interface ComposeContext {
  /** The adapter's module at this site, or null when it has none here. */
  adapter(name: string): SiteRun | null;
  /** The fusion layer named so at this site (throws when there is none). */
  fusion(name: string): FusionRun;
  /** The mixture named so at this site (throws when there is none). */
  mixture?(name: string): MixtureRun;
  /** Dropout seeds of the site: each adapter use takes the next one. */
  seed: number;
}

interface State {
  hidden: Tensor;
  input: Tensor; // the sub-layer's input (AdapterHub's input_tensor)
  residual: Tensor; // the adapters' residual (adapter_residual)
  up?: Tensor; // the last adapter's scaled up-projection (bottleneck_up), for Fuse
  last?: string;
}

/**
 * The site's output for the composition `setup` over h (the sub-layer's output) and x (its input), and
 * its backward: dOut → the gradients of h and x (the parameters' go where the context sends them).
 */
export function composeSite(
  s: Scope, setup: CompositionBlock, h: Tensor, x: Tensor, ln: SiteNorm | null, ctx: ComposeContext,
): { out: Tensor; back: (dOut: Tensor) => { dh: Tensor; dx: Tensor } } {
  const tape = new Tape(s);
  const out = new SiteComposer(tape, ln, ctx).run(setup, h, x);
  const none = (t: Tensor) => s.t(zeros([...t.shape], { dtype: t.dtype, device: t.device }));
  return {
    out,
    back: (dOut) => {
      const [dh, dx] = tape.backward([[out, dOut]], [h, x]);
      return { dh: dh ?? none(h), dx: dx ?? none(x) };
    },
  };
}

class SiteComposer {
  private uses = 0;

  constructor(private readonly tape: Tape, private readonly ln: SiteNorm | null, private readonly ctx: ComposeContext) {}

  private get s() {
    return this.tape.scope;
  }

  run(setup: CompositionBlock, h: Tensor, x: Tensor): Tensor {
    const end = this.compose(setup, { hidden: h, input: x, residual: x }, 0, false);
    if (!end.last) throw new Error(`${setup}: none of its adapters has a module at this site`);
    const cfg = this.adapterOf(end.last).config;
    let out = end.hidden;
    if (cfg.is_parallel) out = this.add(out, h);
    if (cfg.original_ln_after) out = this.ln ? this.norm(out, end.input) : this.add(out, end.input);
    return out;
  }

  private adapterOf(name: string): SiteRun {
    const a = this.ctx.adapter(name);
    if (!a) throw new Error(`adapter '${name}' has no module at this site, where its block needs it`);
    return a;
  }

  private compose(block: CompositionBlock, st: State, lvl: number, needUp: boolean): State {
    switch (block.kind) {
      case 'Stack': {
        for (const child of block.children) {
          if (typeof child !== 'string') st = this.compose(child, st, lvl + 1, needUp);
          else if (this.ctx.adapter(child)) st = this.single(child, this.preBlock(child, st), needUp);
        }
        return st;
      }
      case 'Parallel':
      case 'BatchSplit': {
        const B = st.hidden.shape[0];
        let sizes: number[];
        if (block.kind === 'Parallel') {
          const n = block.children.length;
          if (B % n) throw new Error(`Parallel: the batch of ${B} rows is not a multiple of its ${n} channels`);
          sizes = block.children.map(() => B / n);
        } else {
          sizes = block.batchSizes!;
          const total = sizes.reduce((a, b) => a + b, 0);
          if (total !== B) throw new Error(`BatchSplit: the batch has ${B} rows, batch_sizes sum to ${total}`);
        }
        st = this.preBlock(block.first(), st);
        let r0 = 0;
        const parts = block.children.map((child, i) => {
          const part = this.sliceState(st, r0, r0 + sizes[i]);
          r0 += sizes[i];
          if (typeof child !== 'string') return this.compose(child, part, lvl + 1, needUp);
          return this.ctx.adapter(child) ? this.single(child, part, needUp) : part;
        });
        return this.concatState(parts, B);
      }
      case 'Average': {
        st = this.preBlock(block.first(), st);
        const parts: State[] = [];
        for (const child of block.children) {
          if (typeof child !== 'string') parts.push(this.compose(child, st, lvl + 1, needUp));
          else if (this.ctx.adapter(child)) parts.push(this.single(child, st, needUp));
        }
        // AdapterHub: torch.mean(stack(hidden) · weights, 0), i.e. Σ w_i·h_i / n
        const n = parts.length;
        const terms = parts.map((p, i) => this.scale(p.hidden, block.weights![i] / n));
        const hidden = terms.slice(1).reduce((a, t) => this.add(a, t), terms[0]);
        return { ...parts[0], hidden, last: parts[n - 1].last };
      }
      case 'Fuse':
        return this.fuse(block, st, lvl);
      case 'Mixture':
        return this.mixture(block, st);
    }
  }

  /** The block's first adapter's pre_forward: its input (LayerNorm'ed or not) and its residual. */
  private preBlock(name: string, st: State): State {
    const p = this.preForward(name, st, null);
    return { ...st, hidden: p.hidden, residual: p.residual };
  }

  private preForward(name: string, st: State, fusion: FusionConfig | null): { hidden: Tensor; query: Tensor | null; residual: Tensor } {
    const cfg = this.adapterOf(name).config;
    if (cfg.is_parallel) return { hidden: st.input, query: fusion ? st.input : null, residual: st.input };
    let hidden = st.hidden;
    let query: Tensor | null = null;
    let residual: Tensor | null = cfg.residual_before_ln ? hidden : null;
    if (fusion?.query_before_ln) query = hidden;
    if (cfg.original_ln_before) hidden = this.ln ? this.norm(hidden, st.input) : this.add(hidden, st.input);
    if (!cfg.residual_before_ln) residual = hidden;
    if (fusion && !fusion.query_before_ln) query = hidden;
    return { hidden, query, residual: residual! };
  }

  /** compose_single: out = dropout(s·f(hidden)) + residual (no residual for a parallel adapter); up = s·f(hidden). */
  private single(name: string, st: State, needUp: boolean): State {
    const a = this.adapterOf(name);
    const res = a.config.is_parallel ? null : st.residual;
    const base = { activation: a.activation, scaling: a.scaling };
    const r = adapterForward(st.hidden, a.weights, {
      ...base, residual: res ?? this.zeros(st.hidden), training: !!a.dropout, dropout: a.dropout?.p ?? 0, seed: (a.dropout?.seed ?? 0) + this.uses++,
    });
    const out = this.s.t(r.out);
    this.s.t(r.saved.hPre);
    this.tape.record(() => {
      const g = this.tape.grad(out);
      if (!g) return;
      this.adapterGrads(a, g, r.saved, st.hidden);
      if (res) this.tape.send(res, g);
    });
    let up: Tensor | undefined;
    if (needUp) {
      const u = adapterForward(st.hidden, a.weights, { ...base, residual: this.zeros(st.hidden) });
      up = this.s.t(u.out);
      this.s.t(u.saved.hPre);
      const upT = up;
      this.tape.record(() => {
        const g = this.tape.grad(upT);
        if (g) this.adapterGrads(a, g, u.saved, st.hidden);
      });
    }
    return { ...st, hidden: out, up, last: name };
  }

  private adapterGrads(a: SiteRun, g: Tensor, saved: Parameters<typeof adapterBackward>[1], input: Tensor): void {
    const ga = adapterBackward(g, saved);
    for (const t of [ga.dx, ga.dDownWeight, ga.dDownBias, ga.dUpWeight, ga.dUpBias, ga.dScaling]) if (t) this.s.t(t);
    a.accumulate?.(ga);
    this.tape.send(input, ga.dx);
  }

  /** compose_fuse: BertFusion over the children's up-projections, queried by the last adapter's pre_forward. */
  private fuse(block: CompositionBlock, st: State, lvl: number): State {
    const fz = this.ctx.fusion(block.name);
    const c = fz.config;
    const last = block.last();
    const pre = this.preForward(last, st, c);
    st = { ...st, hidden: pre.hidden, residual: pre.residual };
    const children: State[] = [];
    for (const child of block.children) {
      if (typeof child !== 'string') children.push(this.compose(child, st, lvl + 1, true));
      else if (this.ctx.adapter(child)) children.push(this.single(child, st, true));
    }
    if (!children.length) return { ...st, last };
    const [B, T, H] = st.hidden.shape;
    const N = B * T;
    const A = children.length;
    let ups = children.map((ch) => ch.up!);
    if (c.residual_before) ups = ups.map((u) => this.add(u, st.residual)); // key and value alike (one tensor in BertFusion)
    const kv = this.toTokens(ups, N, H); // [N·A, H]
    const q0 = this.reshape(pre.query!, [N, H]);
    const q = c.query ? this.linear(q0, fz, 'query', true) : q0;
    const k = this.reshape(c.key ? this.linear(kv, fz, 'key', true) : kv, [N, A, H]);
    const v = this.reshape(c.value && c.value_before_softmax ? this.linear(kv, fz, 'value', false) : kv, [N, A, H]);
    const o = { temperature: fz.temperature, dropout: fz.dropout?.p ?? 0, seed: fz.dropout?.seed ?? 0 };
    const r = fusionAttention(q, k, v, o);
    let ctxOut = this.s.t(r.out);
    this.s.t(r.probs);
    this.tape.record(() => {
      const g = this.tape.grad(r.out);
      if (!g) return;
      const gr = fusionAttentionBackward(g, q, k, v, r.probs, o);
      this.tape.send(q, this.s.t(gr.dq));
      this.tape.send(k, this.s.t(gr.dk));
      this.tape.send(v, this.s.t(gr.dv));
    });
    if (c.value && !c.value_before_softmax) ctxOut = this.linear(ctxOut, fz, 'value', false);
    let hidden = this.reshape(ctxOut, [B, T, H]);
    if (!c.residual_before) hidden = this.add(hidden, st.residual);
    return { ...st, hidden, up: undefined, last };
  }

  /**
   * A routed mixture: the gate picks each token's top-k adapters of the pool (mixture.ts decides on the
   * host); every slot runs all adapters in one batched launch, rows grouped by adapter; out = residual +
   * Σ_k g_k · delta_k. Backward: the adapters per adapter on their rows, the gate through the top-k softmax
   * and the balance loss.
   */
  private mixture(block: CompositionBlock, st: State): State {
    const mx = this.ctx.mixture!(block.name);
    const names = block.children as string[];
    st = this.preBlock(names[0], st);
    const [B, T, H] = st.hidden.shape;
    const N = B * T;
    const A = mx.pool.length;
    const x = this.reshape(st.hidden, [N, H]);
    const z = this.s.t(matmul(x, mx.gate, { transB: true })); // [N, A]
    const rt = route(z.toArray(), N, A, mx.config);
    mx.report(mx.config.balanceWeight * rt.balance);
    const a0 = mx.pool[0];
    const stacked = (k: keyof SiteRun['weights']) => this.s.t(stack(mx.pool.map((p) => p.weights[k] as Tensor)));
    const weights = { downWeight: stacked('downWeight'), downBias: stacked('downBias'), upWeight: stacked('upWeight'), upBias: stacked('upBias') };
    const scales = mx.pool.map((p) => p.scaling);
    const zero = this.zeros(x);
    const expand = (w: Float32Array) => this.s.t(tensor(Float32Array.from({ length: N * H }, (_, i) => w[Math.floor(i / H)]), [N, H], { dtype: x.dtype, device: x.device }));
    const deltas: Tensor[] = [];
    const G: Tensor[] = [];
    let sum: Tensor | null = null;
    for (let k = 0; k < rt.K; k++) {
      const d = this.s.t(adapterForwardBatched(x, weights, rt.slots[k], { activation: a0.activation, scaling: scales, residual: zero }).out);
      const g = expand(Float32Array.from(rt.weights[k], (w, n) => (rt.slots[k][n] >= 0 ? w : 0)));
      deltas.push(d);
      G.push(g);
      const part = this.s.t(mul(d, g));
      sum = sum ? this.s.t(add(sum, part)) : part;
    }
    const mixed = sum!;
    this.tape.record(() => {
      const gOut = this.tape.grad(mixed);
      if (!gOut) return;
      const r: Float32Array[] = [];
      const dDelta: Tensor[] = [];
      for (let k = 0; k < rt.K; k++) {
        r.push(this.s.t(rowSum(this.s.t(mul(gOut, deltas[k])))).toArray());
        dDelta.push(this.s.t(mul(gOut, G[k])));
      }
      // the adapters, each on its own rows (both slots), recomputed for their backward
      const allD = this.s.t(this.s.t(stack(dDelta)).reshape([rt.K * N, H]));
      mx.pool.forEach((a, e) => {
        const rows: number[] = [];
        const from: number[] = [];
        for (let k = 0; k < rt.K; k++) for (let n = 0; n < N; n++) if (rt.slots[k][n] === e) { rows.push(n); from.push(k * N + n); }
        if (!rows.length) return;
        const xe = this.rows(x, rows);
        const fe = adapterForward(xe, a.weights, { activation: a.activation, scaling: a.scaling, residual: this.zeros(xe) });
        this.s.t(fe.out);
        this.s.t(fe.saved.hPre);
        const ga = adapterBackward(this.rows(allD, from), fe.saved);
        for (const t of [ga.dx, ga.dDownWeight, ga.dDownBias, ga.dUpWeight, ga.dUpBias, ga.dScaling]) if (t) this.s.t(t);
        a.accumulate?.(ga);
        const ids = this.s.t(tensor(Int32Array.from(rows), [rows.length], { dtype: 'int32', device: x.device }));
        let back = this.s.t(embeddingBackward(ga.dx, ids, N));
        if (back.dtype !== x.dtype) back = this.s.t(cast(back, x.dtype));
        this.tape.send(x, back);
      });
      // the gate: through the top-k softmax and the balance loss
      const dz = this.s.t(tensor(gateGradient(rt, r, mx.config.balanceWeight), [N, A], { dtype: x.dtype, device: x.device }));
      if (mx.accumulate) mx.accumulate(this.s.t(matmul(dz, x, { transA: true })));
      this.tape.send(x, this.s.t(matmul(dz, mx.gate)));
    });
    // the residual as compose_single adds it (none for parallel adapters: their post_forward adds h)
    const out = this.reshape(mixed, [B, T, H]);
    const hidden = a0.config.is_parallel ? out : this.add(out, st.residual);
    return { ...st, hidden, up: undefined, last: names[names.length - 1] };
  }

  // ---- steps with their backward ----

  private zeros(like: Tensor): Tensor {
    return this.s.t(zeros([...like.shape], { dtype: like.dtype, device: like.device }));
  }

  private add(a: Tensor, b: Tensor): Tensor {
    const out = this.s.t(add(a, b));
    this.tape.record(() => {
      const g = this.tape.grad(out);
      if (!g) return;
      this.tape.send(a, g);
      this.tape.send(b, g);
    });
    return out;
  }

  private scale(a: Tensor, k: number): Tensor {
    const out = this.s.t(scale(a, k));
    this.tape.record(() => {
      const g = this.tape.grad(out);
      if (g) this.tape.send(a, this.s.t(scale(g, k)));
    });
    return out;
  }

  /** The site's LayerNorm of a + res. */
  private norm(a: Tensor, res: Tensor): Tensor {
    const ln = this.ln!;
    const n = layerNorm(a, ln.weight, ln.bias, { eps: ln.eps, residual: res });
    const out = this.s.t(n.out);
    this.s.t(n.mean);
    this.s.t(n.rstd);
    this.tape.record(() => {
      const g = this.tape.grad(out);
      if (!g) return;
      const gr = layerNormBackward(g, a, res, ln.weight, n.mean, n.rstd);
      this.s.t(gr.dWeight);
      this.s.t(gr.dBias);
      ln.grad?.(gr.dWeight, gr.dBias);
      this.tape.send(a, this.s.t(gr.dx));
      this.tape.send(res, gr.dx);
    });
    return out;
  }

  private reshape(t: Tensor, shape: number[]): Tensor {
    const out = this.s.t(t.reshape(shape));
    this.tape.record(() => {
      const g = this.tape.grad(out);
      if (g) this.tape.send(t, this.s.t(g.reshape([...t.shape])));
    });
    return out;
  }

  /** x·Wᵀ (+ b) with the fusion's `name` projection; its gradients go to the fusion. */
  private linear(x: Tensor, fz: FusionRun, name: string, bias: boolean): Tensor {
    const w = fz.params.get(`${name}.weight`)!;
    let y = this.s.t(matmul(x, w, { transB: true }));
    if (bias) y = this.s.t(add(y, fz.params.get(`${name}.bias`)!));
    const out = y;
    this.tape.record(() => {
      const g = this.tape.grad(out);
      if (!g) return;
      if (fz.accumulate) {
        fz.accumulate(`${name}.weight`, this.s.t(matmul(g, x, { transA: true })));
        if (bias) fz.accumulate(`${name}.bias`, this.s.t(colSum(g)));
      }
      this.tape.send(x, this.s.t(matmul(g, w)));
    });
    return out;
  }

  /** [B, T, H] tensors, one per adapter, as the token-major [N·A, H] rows of BertFusion's [B, T, A, H]. */
  private toTokens(ups: Tensor[], N: number, H: number): Tensor {
    const A = ups.length;
    const st = this.s.t(stack(ups)); // [A, B, T, H]
    const out = this.s.t(this.s.t(transpose12(this.s.t(st.reshape([1, A, N, H])))).reshape([N * A, H]));
    this.tape.record(() => {
      const g = this.tape.grad(out);
      if (!g) return;
      const back = this.s.t(this.s.t(transpose12(this.s.t(g.reshape([1, N, A, H])))).reshape([A, N * H])); // [A, N·H]
      ups.forEach((u, i) => this.tape.send(u, this.s.t(this.rows(back, [i]).reshape([...u.shape]))));
    });
    return out;
  }

  /** Rows `idx` of a 2-D tensor (a gather). */
  private rows(t2: Tensor, idx: number[]): Tensor {
    const ids = this.s.t(tensor(Int32Array.from(idx), [idx.length], { dtype: 'int32', device: t2.device }));
    return this.s.t(embedding(t2, ids));
  }

  /** Batch rows r0..r1 of every tensor of the state. */
  private sliceState(st: State, r0: number, r1: number): State {
    const sl = (t: Tensor) => this.slice(t, r0, r1);
    return { hidden: sl(st.hidden), input: sl(st.input), residual: sl(st.residual), up: st.up && sl(st.up), last: st.last };
  }

  private slice(t: Tensor, r0: number, r1: number): Tensor {
    const [B, ...rest] = t.shape;
    const inner = rest.reduce((a, b) => a * b, 1);
    const idx = Array.from({ length: r1 - r0 }, (_, i) => r0 + i);
    const out = this.s.t(this.rows(this.s.t(t.reshape([B, inner])), idx).reshape([r1 - r0, ...rest]));
    this.tape.record(() => {
      const g = this.tape.grad(out);
      if (!g) return;
      const ids = this.s.t(tensor(Int32Array.from(idx), [idx.length], { dtype: 'int32', device: t.device }));
      let full = this.s.t(embeddingBackward(this.s.t(g.reshape([r1 - r0, inner])), ids, B)); // fp32, zero elsewhere
      if (full.dtype !== t.dtype) full = this.s.t(cast(full, t.dtype));
      this.tape.send(t, this.s.t(full.reshape([...t.shape])));
    });
    return out;
  }

  /** The parts' states one after another along the batch (B rows in all). */
  private concatState(parts: State[], B: number): State {
    const cat = (ts: Tensor[]) => this.concat(ts, B);
    const ups = parts.every((p) => p.up) ? cat(parts.map((p) => p.up!)) : undefined;
    return {
      hidden: cat(parts.map((p) => p.hidden)), input: cat(parts.map((p) => p.input)), residual: cat(parts.map((p) => p.residual)),
      up: ups, last: parts[parts.length - 1].last,
    };
  }

  private concat(ts: Tensor[], B: number): Tensor {
    const [, ...rest] = ts[0].shape;
    const inner = rest.reduce((a, b) => a * b, 1);
    let r0 = 0;
    let sum: Tensor | null = null;
    const spans = ts.map((t) => {
      const n = t.shape[0];
      const idx = Array.from({ length: n }, (_, i) => r0 + i);
      r0 += n;
      const ids = this.s.t(tensor(Int32Array.from(idx), [n], { dtype: 'int32', device: t.device }));
      const placed = this.s.t(embeddingBackward(this.s.t(t.reshape([n, inner])), ids, B)); // fp32 rows r0.., zero elsewhere
      sum = sum ? this.s.t(add(sum, placed)) : placed;
      return idx;
    });
    let out: Tensor = sum!;
    if (out.dtype !== ts[0].dtype) out = this.s.t(cast(out, ts[0].dtype));
    out = this.s.t(out.reshape([B, ...rest]));
    const result = out;
    this.tape.record(() => {
      const g = this.tape.grad(result);
      if (!g) return;
      const g2 = this.s.t(g.reshape([B, inner]));
      ts.forEach((t, i) => this.tape.send(t, this.s.t(this.rows(g2, spans[i]).reshape([...t.shape]))));
    });
    return out;
  }
}
