// Adapter composition blocks with AdapterHub's semantics (adapters/composition.py): Stack, Parallel,
// BatchSplit, Average and Fuse, their allowed nestings and depth, and the string form that
// `setActiveAdapters('Stack(lang, Fuse(a, b))')` and the CLI's --adapter take.

export type CompositionKind = 'Stack' | 'Parallel' | 'BatchSplit' | 'Average' | 'Fuse' | 'Mixture';
export type Composition = string | CompositionBlock;

export class CompositionBlock {
  constructor(
    readonly kind: CompositionKind,
    readonly children: Composition[],
    /** BatchSplit: rows per child. */
    readonly batchSizes?: number[],
    /** Average: one weight per child (normalised to sum 1 unless asked not to, as AdapterHub does). */
    readonly weights?: number[],
    /** Fuse: the fusion's name (default: the children's last adapters joined by ','); Mixture: the mixture's. */
    readonly fusionName?: string,
  ) {}

  /** The first adapter name (AdapterHub's first(): what runs the block's pre_forward). */
  first(): string {
    const c = this.children[0];
    return typeof c === 'string' ? c : c.first();
  }

  /** The last adapter name (its post_forward closes the site). */
  last(): string {
    const c = this.children[this.children.length - 1];
    return typeof c === 'string' ? c : c.last();
  }

  /** Every adapter name in it. */
  flatten(): Set<string> {
    const out = new Set<string>();
    for (const c of this.children) for (const n of typeof c === 'string' ? [c] : c.flatten()) out.add(n);
    return out;
  }

  /** Fuse: the name its fusion layers are stored under; Mixture: the mixture's name. */
  get name(): string {
    if (this.kind === 'Mixture') return this.fusionName!;
    if (this.kind !== 'Fuse') return this.toString();
    return this.fusionName ?? this.children.map((c) => (typeof c === 'string' ? c : c.last())).join(',');
  }

  toString(): string {
    const inner = this.children.map(String);
    if (this.batchSizes) inner.push(`batch_sizes=[${this.batchSizes.join(', ')}]`);
    if (this.weights) inner.push(`weights=[${this.weights.join(', ')}]`);
    if (this.kind === 'Mixture') return `Mixture(${this.fusionName})`;
    if (this.fusionName) inner.push(`name=${this.fusionName}`);
    return `${this.kind}(${inner.join(', ')})`;
  }
}

const needChildren = (kind: string, children: Composition[]) => {
  if (!children.length) throw new Error(`${kind}: needs at least one adapter`);
  for (const c of children)
    if (typeof c !== 'string' && !(c instanceof CompositionBlock)) throw new Error(`${kind}: children must be adapter names or blocks, got ${String(c)}`);
};

export function Stack(...children: Composition[]): CompositionBlock {
  needChildren('Stack', children);
  return new CompositionBlock('Stack', children);
}

export function Parallel(...children: Composition[]): CompositionBlock {
  needChildren('Parallel', children);
  return new CompositionBlock('Parallel', children);
}

export function Fuse(...args: (Composition | { name: string })[]): CompositionBlock {
  const opts = args.length && typeof args[args.length - 1] === 'object' && !(args[args.length - 1] instanceof CompositionBlock)
    ? (args.pop() as { name: string }) : undefined;
  const children = args as Composition[];
  needChildren('Fuse', children);
  return new CompositionBlock('Fuse', children, undefined, undefined, opts?.name);
}

export function BatchSplit(...args: (Composition | { batchSizes: number[] | number })[]): CompositionBlock {
  const last = args.pop();
  if (!last || typeof last !== 'object' || last instanceof CompositionBlock || !('batchSizes' in last))
    throw new Error('BatchSplit: the last argument must be { batchSizes: [...] }');
  const children = args as Composition[];
  needChildren('BatchSplit', children);
  const sizes = Array.isArray(last.batchSizes) ? last.batchSizes : children.map(() => last.batchSizes as number);
  if (sizes.length !== children.length || sizes.some((n) => !Number.isInteger(n) || n < 0))
    throw new Error(`BatchSplit: batchSizes must hold one non-negative integer per child (${children.length}), got ${JSON.stringify(last.batchSizes)}`);
  return new CompositionBlock('BatchSplit', children, sizes);
}

export function Average(...args: (Composition | { weights?: number[]; normalizeWeights?: boolean })[]): CompositionBlock {
  const opts = args.length && typeof args[args.length - 1] === 'object' && !(args[args.length - 1] instanceof CompositionBlock)
    ? (args.pop() as { weights?: number[]; normalizeWeights?: boolean }) : {};
  const children = args as Composition[];
  needChildren('Average', children);
  let weights = opts.weights ?? children.map(() => 1 / children.length);
  if (weights.length !== children.length || weights.some((w) => !Number.isFinite(w)))
    throw new Error(`Average: weights must hold one finite number per child (${children.length}), got ${JSON.stringify(opts.weights)}`);
  if (opts.weights && opts.normalizeWeights !== false) {
    const sum = weights.reduce((a, b) => a + b, 0) || 1;
    weights = weights.map((w) => w / sum);
  }
  return new CompositionBlock('Average', children, undefined, weights);
}

/**
 * A routed mixture of adapters (this package's, not AdapterHub's): the pool and gates that addMixture
 * made under `name`; each token goes to its top-k adapters (lib/adapted/mixture.ts). Used alone, not nested.
 */
export function Mixture(name: string, adapters: string[]): CompositionBlock {
  needChildren('Mixture', adapters);
  return new CompositionBlock('Mixture', adapters, undefined, undefined, name);
}

/** Which blocks may sit inside which (AdapterHub's ALLOWED_NESTINGS; strings everywhere). */
const ALLOWED: Record<CompositionKind, CompositionKind[]> = {
  Mixture: [],
  Stack: ['Fuse', 'Parallel', 'BatchSplit', 'Average'],
  Fuse: ['Stack'],
  Parallel: ['Stack', 'BatchSplit', 'Average'],
  BatchSplit: ['Stack', 'BatchSplit', 'Average'],
  Average: ['Stack', 'BatchSplit'],
};

/** Throws on a nesting AdapterHub refuses: a block not allowed in its parent, or one below level 1 that is not a Stack. */
export function validateComposition(c: Composition, level = 0): void {
  if (typeof c === 'string') return;
  if (level > 1 && c.kind !== 'Stack') throw new Error(`adapter setup is too deep: cannot have ${c} at level ${level}`);
  for (const child of c.children) {
    if (typeof child !== 'string' && !ALLOWED[c.kind].includes(child.kind))
      throw new Error(`adapter setup is invalid: cannot nest ${child} in ${c.kind}(...)`);
    validateComposition(child, level + 1);
  }
}

/**
 * The string form: `a`, `Stack(a, b)`, `Fuse(a, b)`, `Parallel(a, b)`, `BatchSplit(a, b, batch_sizes=[2, 3])`,
 * `Average(a, b, weights=[0.3, 0.7])`, nested (`Stack(lang, Fuse(a, b))`). A bare comma list `a,b` is a
 * Stack, as AdapterHub reads a list at level 0.
 */
export function parseComposition(text: string): Composition {
  const src = text.trim();
  let i = 0;
  const fail = (msg: string): never => {
    throw new Error(`cannot read the adapter setup '${text}': ${msg} at character ${i + 1}`);
  };
  const ws = () => {
    while (i < src.length && /\s/.test(src[i])) i++;
  };
  const ident = (): string => {
    ws();
    const m = /^[A-Za-z0-9_-]+/.exec(src.slice(i));
    if (!m) fail('expected an adapter name or a block');
    i += m![0].length;
    return m![0];
  };
  const numbers = (): number[] => {
    ws();
    if (src[i] !== '[') fail("expected '['");
    const end = src.indexOf(']', i);
    if (end < 0) fail("no closing ']'");
    const body = src.slice(i + 1, end).trim();
    const out = body ? body.split(',').map((t) => Number(t.trim())) : [];
    if (out.some((n) => !Number.isFinite(n))) fail(`'${body}' is not a list of numbers`);
    i = end + 1;
    return out;
  };
  const item = (): Composition => {
    const name = ident();
    ws();
    if (src[i] !== '(') return name;
    const kind = name as CompositionKind;
    if (!(kind in ALLOWED) || kind === 'Mixture') fail(`unknown block '${name}' (Stack, Parallel, BatchSplit, Average, Fuse)`);
    i++;
    const children: Composition[] = [];
    const kw: Record<string, number[] | string> = {};
    for (;;) {
      ws();
      if (src[i] === ')') break;
      const save = i;
      const key = /^([a-z_]+)\s*=/.exec(src.slice(i));
      if (key) {
        i += key[0].length;
        kw[key[1]] = key[1] === 'name' ? ident() : numbers();
      } else {
        i = save;
        children.push(item());
      }
      ws();
      if (src[i] === ',') i++;
      else if (src[i] !== ')') fail("expected ',' or ')'");
    }
    i++;
    const known: Record<CompositionKind, string[]> = { Stack: [], Parallel: [], Fuse: ['name'], BatchSplit: ['batch_sizes'], Average: ['weights'], Mixture: [] };
    for (const k of Object.keys(kw)) if (!known[kind].includes(k)) fail(`${kind} takes no '${k}'`);
    switch (kind) {
      case 'Stack': return Stack(...children);
      case 'Parallel': return Parallel(...children);
      case 'Fuse': return kw.name ? Fuse(...children, { name: kw.name as string }) : Fuse(...children);
      case 'BatchSplit':
        if (!kw.batch_sizes) fail('BatchSplit needs batch_sizes=[...]');
        return BatchSplit(...children, { batchSizes: kw.batch_sizes as number[] });
      case 'Average': return kw.weights ? Average(...children, { weights: kw.weights as number[] }) : Average(...children);
      case 'Mixture': return fail('a mixture is activated by its name (setActiveAdapters(model.mixture(name)))');
    }
  };
  const first = item();
  ws();
  if (i < src.length && src[i] === ',' && typeof first === 'string') {
    const names = [first];
    while (i < src.length && src[i] === ',') {
      i++;
      names.push(ident());
      ws();
    }
    if (i < src.length) fail('unexpected text');
    return Stack(...names);
  }
  if (i < src.length) fail('unexpected text');
  validateComposition(first);
  return first;
}

/** Every Parallel block's channel count along the path the model replicates its batch for (1: none). */
export function parallelChannels(c: Composition): number {
  if (typeof c === 'string') return 1;
  if (c.kind === 'Parallel') return c.children.length;
  let n = 1;
  for (const child of c.children) n = Math.max(n, parallelChannels(child));
  return n;
}
