// Training data: reading labelled examples from JSONL/CSV, label ↔ id maps, and a seeded,
// resumable batch loader with dynamic padding.
import { promises as fsp } from 'fs';
import * as path from 'path';
import { parse as parseCsv } from 'csv-parse/sync';
import type { EncodedBatch, Encoding, Tokenizer } from './tokenizer';

export interface Example {
  text: string;
  textPair?: string;
  label: number | string;
}

export interface ReadExamplesOptions {
  /** Column (JSON key) of the text. Default 'text'. */
  textColumn?: string;
  /** Column of the second text of a pair. Default 'text_pair'; used when present. */
  pairColumn?: string;
  /** Column of the label. Default 'label'. */
  labelColumn?: string;
  /**
   * How errors name the options that choose the columns (default: 'the textColumn option', ...);
   * the command line passes its flags ('--text-column', ...).
   */
  optionNames?: { text: string; pair: string; label: string };
}

/** The file each array of examples was read from (readExamples), to keep outputs off the inputs. */
const sources = new WeakMap<Example[], string>();

/** The file `examples` were read from by readExamples, if they were. */
export function sourceOf(examples: Example[] | undefined): string | undefined {
  return examples ? sources.get(examples) : undefined;
}

const JSONL_EXTS = new Set(['.jsonl', '.ndjson']);
const CSV_EXTS = new Map([['.csv', ','], ['.tsv', '\t']]);

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : typeof v;
}

function listNames(names: string[]): string {
  return names.length ? names.map((n) => `'${n}'`).join(', ') : 'none';
}

interface Columns { text: string; pair: string; label: string; pairExplicit: boolean; option: { text: string; pair: string; label: string } }

/** One row → Example; `get` returns undefined for an absent column. */
function toExample(
  where: string, cols: Columns, get: (col: string) => unknown, found: () => string[],
): Example {
  const rawText = get(cols.text);
  if (rawText === undefined) {
    throw new Error(`${where}: missing column '${cols.text}' (found: ${listNames(found())}); choose the text column with ${cols.option.text}`);
  }
  if (rawText !== null && typeof rawText !== 'string' && typeof rawText !== 'number') {
    throw new Error(`${where}: column '${cols.text}' must be a string, got ${describe(rawText)}`);
  }
  const text = rawText === null ? '' : String(rawText);
  if (text.trim() === '') throw new Error(`${where}: empty text in column '${cols.text}'`);

  const ex: Example = { text, label: '' };
  const rawPair = get(cols.pair);
  if (rawPair === undefined && cols.pairExplicit) {
    throw new Error(`${where}: missing column '${cols.pair}' (found: ${listNames(found())}), chosen with ${cols.option.pair}`);
  }
  if (rawPair !== undefined && rawPair !== null) {
    if (typeof rawPair !== 'string' && typeof rawPair !== 'number') {
      throw new Error(`${where}: column '${cols.pair}' must be a string, got ${describe(rawPair)}`);
    }
    ex.textPair = String(rawPair);
  }

  const rawLabel = get(cols.label);
  if (rawLabel === undefined || rawLabel === null || (typeof rawLabel === 'string' && rawLabel.trim() === '')) {
    const hint = rawLabel === undefined ? ` (found columns: ${listNames(found())}; choose it with ${cols.option.label})` : '';
    throw new Error(`${where}: label missing in column '${cols.label}'${hint}`);
  }
  if (typeof rawLabel === 'number') {
    if (!Number.isFinite(rawLabel)) throw new Error(`${where}: label ${rawLabel} is not a finite number`);
    ex.label = rawLabel;
  } else if (typeof rawLabel === 'string') {
    ex.label = rawLabel.trim();
  } else if (typeof rawLabel === 'boolean') {
    ex.label = String(rawLabel);
  } else {
    throw new Error(`${where}: label in column '${cols.label}' must be a string or a number, got ${describe(rawLabel)}`);
  }
  return ex;
}

function readJsonl(file: string, content: string, cols: Columns): Example[] {
  const out: Example[] = [];
  const lines = content.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.trim() === '') continue;
    const where = `${file}:${i + 1}`;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      throw new Error(`${where}: invalid JSON on line ${i + 1} (${(e as Error).message})`);
    }
    if (!obj || typeof obj !== 'object' || Array.isArray(obj)) {
      throw new Error(`${where}: expected a JSON object on line ${i + 1}, got ${describe(obj)}`);
    }
    const rec = obj as Record<string, unknown>;
    out.push(toExample(where, cols, (c) => (Object.prototype.hasOwnProperty.call(rec, c) ? rec[c] : undefined), () => Object.keys(rec)));
  }
  return out;
}

function readCsv(file: string, content: string, delimiter: string, cols: Columns): Example[] {
  let rows: { record: string[]; info: { lines: number } }[];
  try {
    rows = parseCsv(content, { delimiter, info: true, relax_column_count: true, skip_empty_lines: true }) as unknown as typeof rows;
  } catch (e) {
    const err = e as Error & { lines?: number };
    throw new Error(`${file}${err.lines ? `:${err.lines}` : ''}: invalid CSV: ${err.message}`);
  }
  // info.lines is the line a record ends on; quoted fields may span lines.
  const startLine = (r: { record: string[]; info: { lines: number } }): number =>
    r.info.lines - r.record.reduce((n, f) => n + (f.match(/\r\n|\r|\n/g)?.length ?? 0), 0);
  const isBlank = (rec: string[]) => rec.every((f) => f.trim() === '');
  const data = rows.filter((r) => !isBlank(r.record));
  if (data.length === 0) throw new Error(`${file}: the file is empty (expected a header row, then one row per example)`);
  const header = data[0].record.map((h) => h.trim());
  const found = () => header.filter((h) => h !== '');
  if (data.length === 1) throw new Error(`${file}: no examples (only a header row: ${listNames(found())})`);
  const index = new Map<string, number>();
  header.forEach((h, i) => { if (!index.has(h)) index.set(h, i); });
  const headerWhere = `${file}:${startLine(data[0])}`;
  if (!index.has(cols.text)) {
    throw new Error(`${headerWhere}: missing column '${cols.text}' in the header (found: ${listNames(found())}); choose the text column with ${cols.option.text}`);
  }
  if (!index.has(cols.label)) {
    throw new Error(`${headerWhere}: missing column '${cols.label}' in the header (found: ${listNames(found())}); choose the label column with ${cols.option.label}`);
  }
  if (cols.pairExplicit && !index.has(cols.pair)) {
    throw new Error(`${headerWhere}: missing column '${cols.pair}' in the header (found: ${listNames(found())}), chosen with ${cols.option.pair}`);
  }
  const out: Example[] = [];
  for (const r of data.slice(1)) {
    const line = startLine(r);
    const where = `${file}:${line}`;
    if (r.record.length !== header.length) {
      throw new Error(`${where}: expected ${header.length} fields like the header, got ${r.record.length} (quote fields that contain '${delimiter === '\t' ? '\\t' : delimiter}' or line breaks)`);
    }
    out.push(toExample(where, cols, (c) => {
      const i = index.get(c);
      return i === undefined ? undefined : r.record[i];
    }, found));
  }
  // CSV cells are strings: labels that are all integers are read as numbers.
  if (out.every((e) => /^[+-]?\d+$/.test(e.label as string))) for (const e of out) e.label = Number(e.label);
  return out;
}

/**
 * Read labelled examples from a .jsonl/.ndjson file (one JSON object per line, blank lines skipped)
 * or a .csv/.tsv file (header row; quoted fields may hold delimiters, quotes and line breaks).
 * Errors name the file and line.
 */
export async function readExamples(file: string, opts: ReadExamplesOptions = {}): Promise<Example[]> {
  const cols: Columns = {
    text: opts.textColumn ?? 'text',
    pair: opts.pairColumn ?? 'text_pair',
    label: opts.labelColumn ?? 'label',
    pairExplicit: opts.pairColumn !== undefined,
    option: opts.optionNames ?? { text: 'the textColumn option', pair: 'the pairColumn option', label: 'the labelColumn option' },
  };
  const ext = path.extname(file).toLowerCase();
  if (!JSONL_EXTS.has(ext) && !CSV_EXTS.has(ext)) {
    throw new Error(`${file}: unsupported file type '${ext || '(none)'}' (use .jsonl with one JSON object per line, or .csv with a header row)`);
  }
  let content: string;
  try {
    content = await fsp.readFile(file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw new Error(`data file not found: ${file}`);
    if (err.code === 'EISDIR') throw new Error(`${file} is a directory, not a data file`);
    throw new Error(`cannot read data file ${file}: ${err.message}`);
  }
  if (content.charCodeAt(0) === 0xfeff) content = content.slice(1);
  if (content.trim() === '') {
    throw new Error(`${file}: the file is empty (expected ${JSONL_EXTS.has(ext) ? 'one JSON object per line' : 'a header row, then one row per example'})`);
  }
  const examples = JSONL_EXTS.has(ext) ? readJsonl(file, content, cols) : readCsv(file, content, CSV_EXTS.get(ext)!, cols);
  if (examples.length === 0) throw new Error(`${file}: no examples`);
  sources.set(examples, file);
  return examples;
}

// ---------------------------------------------------------------------------------------------

type Label = string | number;

/** Labels ↔ class ids 0..size-1. */
export class LabelMap {
  readonly labels: Label[];
  private readonly index: Map<Label, number>;

  private constructor(labels: Label[]) {
    this.labels = labels;
    this.index = new Map(labels.map((l, i) => [l, i] as const));
  }

  /** The distinct labels of the examples, sorted (strings by code unit, numbers numerically). */
  static fromExamples(examples: Example[]): LabelMap {
    const seen = new Set<Label>();
    for (const e of examples) seen.add(e.label);
    const nums = [...seen].filter((l): l is number => typeof l === 'number');
    const strs = [...seen].filter((l): l is string => typeof l === 'string');
    if (nums.length && strs.length) {
      throw new Error(`labels mix numbers and strings (e.g. ${nums[0]} and '${strs[0]}'); use one kind for every example`);
    }
    if (seen.size === 0) throw new Error('LabelMap.fromExamples: no examples');
    return new LabelMap(nums.length ? nums.sort((a, b) => a - b) : strs.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
  }

  /** Labels in the given order (id = position), e.g. as saved with an adapter. */
  static fromList(labels: Label[]): LabelMap {
    if (!Array.isArray(labels) || labels.length === 0) throw new Error('LabelMap.fromList: expected a non-empty array of labels');
    const seen = new Set<Label>();
    for (const l of labels) {
      if (typeof l !== 'string' && typeof l !== 'number') throw new Error(`LabelMap.fromList: label ${JSON.stringify(l)} is not a string or number`);
      if (seen.has(l)) throw new Error(`LabelMap.fromList: duplicate label '${l}'`);
      seen.add(l);
    }
    return new LabelMap([...labels]);
  }

  /** Inverse of toJSON (also accepts a plain array). */
  static fromJSON(json: { labels: Label[] } | Label[]): LabelMap {
    return LabelMap.fromList(Array.isArray(json) ? json : json?.labels);
  }

  get size(): number {
    return this.labels.length;
  }

  has(label: Label): boolean {
    return this.lookup(label) !== undefined;
  }

  /** Class id of a label; a numeric string matches a numeric label and vice versa. */
  id(label: Label): number {
    const id = this.lookup(label);
    if (id === undefined) {
      const known = this.labels.length > 20
        ? `${this.labels.slice(0, 20).join(', ')}, ... (${this.labels.length} in all)`
        : this.labels.join(', ');
      throw new Error(`unknown label '${label}' (known: ${known})`);
    }
    return id;
  }

  name(id: number): Label {
    if (!Number.isInteger(id) || id < 0 || id >= this.labels.length) {
      throw new Error(`label id ${id} out of range (0..${this.labels.length - 1})`);
    }
    return this.labels[id];
  }

  toJSON(): { labels: Label[] } {
    return { labels: [...this.labels] };
  }

  private lookup(label: Label): number | undefined {
    const direct = this.index.get(label);
    if (direct !== undefined) return direct;
    if (typeof label === 'string' && label.trim() !== '' && Number.isFinite(Number(label))) return this.index.get(Number(label));
    if (typeof label === 'number') return this.index.get(String(label));
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------

export interface Batch extends EncodedBatch {
  /** Class id of each row. */
  labels: number[];
  /** Position of each row's example in the loader's examples array. */
  indices: number[];
}

export interface DataLoaderOptions {
  batchSize: number;
  /** Shuffle each epoch (default false: the examples' order). */
  shuffle?: boolean;
  /** Shuffle seed (default 0): the same seed gives the same order in every run. */
  seed?: number;
  /** Truncation length, special tokens included (default: the tokenizer's, 128 or model_max_length). */
  maxLength?: number;
  /** Leave out the last, smaller batch of each epoch (default false). */
  dropLast?: boolean;
}

/** A position in the data: the next batch to read is batch `index` of epoch `epoch`. */
export interface DataPosition {
  epoch: number;
  index: number;
}

/** A position plus what must not change for it to mean the same batches on resume. */
export interface DataLoaderState extends DataPosition {
  seed: number;
  shuffle: boolean;
  batchSize: number;
  dropLast: boolean;
  maxLength: number;
  numExamples: number;
  /** Hash of the examples' texts and labels. */
  dataHash: string;
}

/** 32-bit integer hash (a murmur3-style finalizer). */
function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** A deterministic PRNG in [0, 1) keyed by (seed, epoch): a counter through mix32. */
export function seededRandom(seed: number, epoch: number): () => number {
  const lo = seed >>> 0;
  const hi = Math.floor(seed / 4294967296) >>> 0;
  let state = mix32(mix32(lo ^ 0x9e3779b9) ^ mix32(hi + 0x632be5ab) ^ mix32(Math.imul(epoch >>> 0, 0x7feb352d) + 0x165667b1));
  return () => {
    state = (state + 0x9e3779b9) >>> 0;
    return mix32(state) / 4294967296;
  };
}

/** The permutation of 0..n-1 for (seed, epoch) (Fisher–Yates). */
export function shuffledIndices(n: number, seed: number, epoch: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  const rand = seededRandom(seed, epoch);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}

function hashExamples(examples: Example[]): string {
  let h1 = 0x811c9dc5;
  let h2 = 0x01000193;
  const feed = (s: string) => {
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      h1 = Math.imul(h1 ^ c, 0x01000193);
      h2 = Math.imul(h2 ^ c, 0x5bd1e995) + 0x3c6ef372;
    }
  };
  for (const e of examples) {
    feed(e.text); feed('\u0000'); feed(e.textPair ?? '\u0001'); feed('\u0000');
    feed(`${typeof e.label}:${e.label}`); feed('\u0002');
  }
  return (mix32(h1) >>> 0).toString(16).padStart(8, '0') + (mix32(h2) >>> 0).toString(16).padStart(8, '0');
}

/**
 * Batches of examples: tokenized (once, lazily), truncated to maxLength, padded to each batch's
 * longest row. With shuffle the order of each epoch is a permutation drawn from (seed, epoch), so
 * batchAt(epoch, index) gives the same batch whenever it is asked for — training can resume at
 * any position.
 */
export class DataLoader {
  readonly examples: Example[];
  readonly tokenizer: Tokenizer;
  readonly labelMap: LabelMap;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly maxLength: number;
  readonly dropLast: boolean;
  private readonly labelIds: number[];
  private readonly encoded: (Encoding | undefined)[];
  private cachedOrder: { epoch: number; order: number[] } | undefined;
  private cachedHash: string | undefined;

  constructor(examples: Example[], tokenizer: Tokenizer, labels: LabelMap, opts: DataLoaderOptions) {
    if (!Array.isArray(examples)) throw new TypeError('DataLoader: examples must be an array');
    if (!opts || !Number.isInteger(opts.batchSize) || opts.batchSize < 1) {
      throw new Error(`DataLoader: batchSize must be a positive integer, got ${opts?.batchSize}`);
    }
    const seed = opts.seed ?? 0;
    if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`DataLoader: seed must be a non-negative integer, got ${seed}`);
    this.examples = examples;
    this.tokenizer = tokenizer;
    this.labelMap = labels;
    this.batchSize = opts.batchSize;
    this.shuffle = opts.shuffle ?? false;
    this.seed = seed;
    this.dropLast = opts.dropLast ?? false;
    this.maxLength = tokenizer.resolveMaxLength(opts.maxLength);
    this.labelIds = examples.map((e, i) => {
      try {
        return labels.id(e.label);
      } catch (err) {
        throw new Error(`example ${i}: ${(err as Error).message}`);
      }
    });
    this.encoded = new Array(examples.length);
  }

  /** Batches per epoch. */
  get length(): number {
    const n = this.examples.length;
    return this.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  /** Example indices in the order of `epoch`. */
  order(epoch: number): number[] {
    if (!Number.isInteger(epoch) || epoch < 0) throw new Error(`DataLoader: epoch must be a non-negative integer, got ${epoch}`);
    if (!this.shuffle) return Array.from({ length: this.examples.length }, (_, i) => i);
    if (this.cachedOrder?.epoch !== epoch) {
      this.cachedOrder = { epoch, order: shuffledIndices(this.examples.length, this.seed, epoch) };
    }
    return this.cachedOrder.order;
  }

  /** Batch `index` of epoch `epoch`. */
  batchAt(epoch: number, index: number): Batch {
    const n = this.length;
    if (!Number.isInteger(index) || index < 0 || index >= n) {
      throw new Error(`DataLoader: batch index ${index} out of range (an epoch has ${n} batches)`);
    }
    const order = this.order(epoch);
    const indices = order.slice(index * this.batchSize, Math.min((index + 1) * this.batchSize, order.length));
    const encs = indices.map((i) => this.encoding(i));
    return { ...this.tokenizer.pad(encs), labels: indices.map((i) => this.labelIds[i]), indices };
  }

  /** The batches of one epoch, from batch `startIndex` on. */
  *epochBatches(epoch: number, startIndex = 0): IterableIterator<Batch> {
    this.order(epoch); // validates epoch now rather than at the first next()
    for (let i = startIndex; i < this.length; i++) yield this.batchAt(epoch, i);
  }

  /** Batches from a position on, across epochs, up to (not including) epoch `endEpoch`. */
  *iterate(from: DataPosition = { epoch: 0, index: 0 }, endEpoch = Infinity): IterableIterator<DataPosition & { batch: Batch }> {
    if (this.length === 0) return;
    let { epoch, index } = this.normalize(from);
    while (epoch < endEpoch) {
      yield { epoch, index, batch: this.batchAt(epoch, index) };
      if (++index >= this.length) {
        epoch++;
        index = 0;
      }
    }
  }

  /** A resumable snapshot: the next batch to read is (epoch, index). */
  state(pos: DataPosition): DataLoaderState {
    const { epoch, index } = this.normalize(pos);
    return {
      epoch, index, seed: this.seed, shuffle: this.shuffle, batchSize: this.batchSize, dropLast: this.dropLast,
      maxLength: this.maxLength, numExamples: this.examples.length, dataHash: this.dataHash(),
    };
  }

  /** The position of a saved state, after checking that it describes the same batches as this loader. */
  restore(state: DataLoaderState): DataPosition {
    const mine = this.state({ epoch: 0, index: 0 });
    const keys = ['numExamples', 'dataHash', 'batchSize', 'shuffle', 'seed', 'dropLast', 'maxLength'] as const;
    const diffs = keys.filter((k) => state[k] !== undefined && state[k] !== mine[k])
      .map((k) => `${k} ${JSON.stringify(state[k])} → ${JSON.stringify(mine[k])}`);
    if (diffs.length) throw new Error(`DataLoader: cannot resume, the data or loader settings changed since the state was saved: ${diffs.join(', ')}`);
    return this.normalize(state);
  }

  private normalize(pos: DataPosition): DataPosition {
    let { epoch, index } = pos;
    if (!Number.isInteger(epoch) || epoch < 0 || !Number.isInteger(index) || index < 0 || index > this.length) {
      throw new Error(`DataLoader: invalid position epoch ${epoch}, index ${index} (an epoch has ${this.length} batches)`);
    }
    if (index === this.length) {
      epoch++;
      index = 0;
    }
    return { epoch, index };
  }

  private dataHash(): string {
    return (this.cachedHash ??= hashExamples(this.examples));
  }

  private encoding(i: number): Encoding {
    let e = this.encoded[i];
    if (!e) {
      const ex = this.examples[i];
      e = this.tokenizer.encode(ex.text, ex.textPair, { maxLength: this.maxLength });
      this.encoded[i] = e;
    }
    return e;
  }
}
