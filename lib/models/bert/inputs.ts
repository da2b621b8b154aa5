// Model inputs as users give them (number[][], flat arrays with a shape, or int32 tensors)
// → flat host arrays, with position ids as each architecture numbers them.
import { Tensor } from '../../tensor';
import type { EncoderConfig } from './config';

export type Rows = number[][] | ArrayLike<number>;
export interface ModelInputs {
  inputIds: Rows | Tensor;
  attentionMask?: Rows | Tensor;
  tokenTypeIds?: Rows | Tensor;
  /** [B, T] when the inputs are flat arrays. */
  shape?: [number, number];
}

function flatten(rows: Rows | Tensor, what: string, shape?: [number, number]): { data: number[] | ArrayLike<number>; B: number; T: number } {
  if (rows instanceof Tensor) {
    if (rows.shape.length !== 2) throw new Error(`forward: ${what} must be [B, T], got [${rows.shape}]`);
    return { data: rows.toArray(), B: rows.shape[0], T: rows.shape[1] };
  }
  if (Array.isArray(rows) && rows.length > 0 && Array.isArray(rows[0])) {
    const r = rows as number[][];
    const T = r[0].length;
    if (r.some((row) => !Array.isArray(row) || row.length !== T))
      throw new Error(`forward: ${what} rows must all have the same length (pad them)`);
    return { data: r.flat(), B: r.length, T };
  }
  if (!shape) throw new Error(`forward: ${what} is flat; pass shape: [B, T]`);
  const a = rows as ArrayLike<number>;
  if (a.length !== shape[0] * shape[1]) throw new Error(`forward: ${what} has ${a.length} values for shape [${shape}]`);
  return { data: a, B: shape[0], T: shape[1] };
}

/** Token ids, mask, token types and position ids (RoBERTa's offset past padding) as flat arrays. */
export function prepareInputs(config: EncoderConfig, inputs: ModelInputs) {
  if (!inputs || inputs.inputIds === undefined) throw new Error('forward: inputs.inputIds is required');
  const ids = flatten(inputs.inputIds, 'inputIds', inputs.shape);
  const { B, T } = ids;
  if (B < 1 || T < 1) throw new Error('forward: inputIds must have at least one row and one token');
  const shape: [number, number] = [B, T];
  const mask = inputs.attentionMask !== undefined ? flatten(inputs.attentionMask, 'attentionMask', shape) : null;
  const types = inputs.tokenTypeIds !== undefined ? flatten(inputs.tokenTypeIds, 'tokenTypeIds', shape) : null;
  for (const [n, x] of [['attentionMask', mask], ['tokenTypeIds', types]] as const)
    if (x && (x.B !== B || x.T !== T)) throw new Error(`forward: ${n} has shape [${x.B}, ${x.T}], inputIds [${B}, ${T}]`);
  const idArr = Int32Array.from(ids.data as ArrayLike<number>);
  const maskArr = mask ? Float32Array.from(mask.data as ArrayLike<number>) : new Float32Array(B * T).fill(1);
  const pos = new Int32Array(B * T);
  const pad = config.padTokenId;
  for (let b = 0; b < B; b++) {
    let c = 0;
    for (let t = 0; t < T; t++) {
      const i = b * T + t;
      if (config.modelType === 'roberta') {
        // RoBERTa counts real tokens from padding_idx + 1; padding keeps padding_idx
        const real = idArr[i] !== pad ? 1 : 0;
        c += real;
        pos[i] = real ? c + pad : pad;
      } else pos[i] = t;
    }
  }
  const maxPos = Math.max(...pos);
  if (maxPos >= config.maxPositions)
    throw new Error(`forward: sequence length ${T} needs position ${maxPos}, but the model has ${config.maxPositions} positions`);
  return { B, T, idArr, maskArr, pos, typeArr: types ? Int32Array.from(types.data as ArrayLike<number>) : new Int32Array(B * T) };
}

/** The prepared inputs with every row repeated n times, copy after copy (a Parallel composition's channels). */
export function replicateRows(p: ReturnType<typeof prepareInputs>, n: number): ReturnType<typeof prepareInputs> {
  const rep = <A extends Int32Array | Float32Array>(a: A): A => {
    const out = new (a.constructor as { new (n: number): A })(a.length * n);
    for (let i = 0; i < n; i++) out.set(a, i * a.length);
    return out;
  };
  return { B: p.B * n, T: p.T, idArr: rep(p.idArr), maskArr: rep(p.maskArr), pos: rep(p.pos), typeArr: rep(p.typeArr) };
}
