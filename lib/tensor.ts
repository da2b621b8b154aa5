// Tensor: a handle on native storage (host or device) with a shape and dtype.
// Freed by dispose(); a FinalizationRegistry frees the ones users forget.
import { deviceIndex, native, Native } from './backend';

export type DType = 'float32' | 'bfloat16' | 'float16' | 'int32';
export type FloatDType = 'float32' | 'bfloat16' | 'float16';

export interface TensorOptions {
  dtype?: DType;
  device?: string;
}

const DTYPES: readonly string[] = ['float32', 'bfloat16', 'float16', 'int32'];

const registry = new FinalizationRegistry<Native>((handle) => handle.dispose());

export class Tensor {
  /** @internal */
  readonly _h: Native;
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly device: string;

  /** @internal Wraps a native handle; use tensor(), zeros(), randn() to create tensors. */
  constructor(handle: Native) {
    this._h = handle;
    this.shape = Object.freeze(handle.shape() as number[]);
    this.dtype = handle.dtype();
    this.device = handle.device();
    registry.register(this, handle, this);
  }

  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  get disposed(): boolean {
    return this._h.isDisposed();
  }

  /** Synchronous read, converted to float32 (waits for queued GPU work). */
  toArray(): Float32Array {
    return this._h.toArray();
  }

  /** Asynchronous read on a worker thread; the event loop keeps running. */
  data(): Promise<Float32Array> {
    try {
      return this._h.data();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** A copy on another device and/or in another dtype. */
  to(target: string | { device?: string; dtype?: DType }): Tensor {
    const opts = typeof target === 'string' ? { device: target } : target ?? {};
    const dtype = opts.dtype ?? this.dtype;
    checkDType(dtype, 'to');
    const dev = deviceIndex(opts.device ?? this.device, 'to');
    return new Tensor(this._h.to(dev, dtype));
  }

  /** Overwrites the contents in place; same element count. */
  copyFrom(src: ArrayLike<number> | Tensor): void {
    if (src instanceof Tensor) {
      this._h.copyFrom(src._h);
      return;
    }
    this._h.copyFrom(toTypedArray(src, this.dtype, 'copyFrom'));
  }

  /** A tensor of another shape sharing this one's storage. */
  reshape(shape: number[]): Tensor {
    return new Tensor(this._h.reshape(checkShape(shape, 'reshape')));
  }

  /** Frees the storage now. Idempotent. */
  dispose(): void {
    registry.unregister(this);
    this._h.dispose();
  }

  toString(): string {
    return `Tensor(${JSON.stringify(this.shape)}, ${this.dtype}, ${this.device})`;
  }
}

export function checkDType(dtype: unknown, op: string): asserts dtype is DType {
  if (typeof dtype !== 'string' || !DTYPES.includes(dtype))
    throw new Error(`${op}: invalid dtype '${String(dtype)}' (expected one of ${DTYPES.join(', ')})`);
}

export function checkShape(shape: unknown, op: string): number[] {
  if (!Array.isArray(shape)) throw new Error(`${op}: argument 'shape' must be an array of dimensions`);
  shape.forEach((d, i) => {
    if (typeof d !== 'number' || !Number.isInteger(d) || d < 0)
      throw new Error(`${op}: argument 'shape' has an invalid dimension ${String(d)} at index ${i}`);
  });
  return shape as number[];
}

function toTypedArray(data: ArrayLike<number>, dtype: DType, op: string): Float32Array | Int32Array {
  if (dtype === 'int32') {
    if (data instanceof Int32Array) return data;
  } else if (data instanceof Float32Array) return data;
  if (data == null || typeof data !== 'object' || typeof (data as ArrayLike<number>).length !== 'number')
    throw new Error(`${op}: argument 'data' must be an array or typed array of numbers`);
  const out = dtype === 'int32' ? new Int32Array(data.length) : new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (typeof v !== 'number' && typeof v !== 'bigint')
      throw new Error(`${op}: argument 'data' has a non-number at index ${i}`);
    if (dtype === 'int32') checkInt32(Number(v), op, `data[${i}]`);
    out[i] = Number(v);
  }
  return out;
}

/** @internal An int32 element must be an integer that int32 holds (no silent wrap or truncation). */
export function checkInt32(v: number, op: string, what: string): void {
  if (!Number.isInteger(v) || v < -2147483648 || v > 2147483647)
    throw new Error(`${op}: ${what} is ${v}, which is not an int32 (an integer in [-2147483648, 2147483647])`);
}

/** @internal The native handle of a tensor argument, or an error naming op and argument. */
export function handle(t: unknown, op: string, name: string): Native {
  if (!(t instanceof Tensor)) throw new Error(`${op}: argument '${name}' must be a Tensor`);
  return t._h;
}

export function tensor(data: ArrayLike<number>, shape: number[], opts: TensorOptions = {}): Tensor {
  const dtype = opts.dtype ?? 'float32';
  checkDType(dtype, 'tensor');
  checkShape(shape, 'tensor');
  const arr = toTypedArray(data, dtype, 'tensor');
  return new Tensor(native().fromArray(arr, shape, dtype, deviceIndex(opts.device ?? 'cpu', 'tensor')));
}

/** Uninitialised storage (internal and for outputs that are overwritten). */
export function empty(shape: number[], opts: TensorOptions = {}): Tensor {
  const dtype = opts.dtype ?? 'float32';
  checkDType(dtype, 'empty');
  checkShape(shape, 'empty');
  return new Tensor(native().empty(shape, dtype, deviceIndex(opts.device ?? 'cpu', 'empty')));
}

export function full(shape: number[], value: number, opts: TensorOptions = {}): Tensor {
  if ((opts.dtype ?? 'float32') === 'int32') checkInt32(value, 'full', 'value');
  const t = empty(shape, opts);
  native().fill(t._h, value);
  return t;
}

export function zeros(shape: number[], opts: TensorOptions = {}): Tensor {
  return full(shape, 0, opts);
}

export function ones(shape: number[], opts: TensorOptions = {}): Tensor {
  return full(shape, 1, opts);
}

let seedCounter = Math.floor(Math.random() * 2 ** 31);
function nextSeed(): number {
  seedCounter = (seedCounter + 0x9e3779b9) % 2 ** 32;
  return seedCounter;
}

export interface RandomOptions {
  seed?: number;
  dtype?: FloatDType;
  device?: string;
}

/** Normal(mean, std), Philox-seeded: the same seed gives the same numbers on CPU and CUDA. */
export function randn(shape: number[], opts: RandomOptions & { std?: number; mean?: number } = {}): Tensor {
  const t = empty(shape, opts);
  native().randomFill(t._h, opts.seed ?? nextSeed(), 'normal', opts.mean ?? 0, opts.std ?? 1);
  return t;
}

/** Uniform in [low, high). */
export function rand(shape: number[], opts: RandomOptions & { low?: number; high?: number } = {}): Tensor {
  const t = empty(shape, opts);
  native().randomFill(t._h, opts.seed ?? nextSeed(), 'uniform', opts.low ?? 0, opts.high ?? 1);
  return t;
}
