// Tokenization through the pure-JS Hugging Face tokenizer (@huggingface/tokenizers).
//
// The library reads a model's tokenizer.json / tokenizer_config.json and does normalization,
// pre-tokenization, the model (WordPiece/BPE/Unigram) and the post-processor template. It has no
// truncation or padding, so this module runs the library in two steps — tokens of each segment
// without specials, then the model's post-processor — and truncates in between (longest-first for
// pairs, the special tokens kept), then pads a batch to its longest row.
import { promises as fsp } from 'fs';
import * as path from 'path';
import { HubOptions, resolveModelDir } from '../io/hub';

// The parts of @huggingface/tokenizers used here. The package's own .d.ts files use extension-less
// relative imports that TypeScript's node16 ESM resolution does not follow (they come out as `any`),
// so the shapes are spelled out here.
interface HFPostProcessor {
  post_process(tokens: string[], tokensPair?: string[] | null, addSpecialTokens?: boolean): {
    tokens: string[]; tokens_pair?: string[] | null; token_type_ids?: (number | undefined)[];
  };
}
/** The @huggingface/tokenizers Tokenizer (the parts this package uses). */
export interface HFTokenizer {
  post_processor: HFPostProcessor | null;
  tokenize(text: string, options?: { text_pair?: string | null; add_special_tokens?: boolean }): string[];
  encode(text: string, options?: { text_pair?: string | null; add_special_tokens?: boolean; return_token_type_ids?: boolean }): {
    ids: number[]; tokens: string[]; attention_mask: number[]; token_type_ids?: number[];
  };
  decode(ids: number[], options?: { skip_special_tokens?: boolean; clean_up_tokenization_spaces?: boolean }): string;
  token_to_id(token: string): number | undefined;
  id_to_token(id: number): string | undefined;
  get_vocab(withAddedTokens?: boolean): Map<string, number>;
}
interface HFModule {
  Tokenizer: new (tokenizerJson: object, config: object) => HFTokenizer;
  BertNormalizer: new (config: object) => { normalize(text: string): string };
  BertPreTokenizer: new () => { pre_tokenize_text(text: string): string[] };
}

let hfModule: HFModule | undefined;
/**
 * The @huggingface/tokenizers module. The package is an ES module with a CommonJS build behind its
 * "require" export condition; this package compiles to CommonJS, so it is loaded with require().
 * @internal
 */
export function hfTokenizers(): HFModule {
  if (!hfModule) hfModule = require('@huggingface/tokenizers') as HFModule;
  return hfModule;
}

export interface EncodedBatch {
  /** [B*T] row-major token ids, padded with `padId`. */
  inputIds: Int32Array;
  /** [B*T] 1 for real tokens, 0 for padding. */
  attentionMask: Float32Array;
  /** [B*T] segment ids (0 for the first text, 1 for the pair; 0 for padding). */
  tokenTypeIds: Int32Array;
  /** [B, T] */
  shape: [number, number];
  /** Real (unpadded) length of each row. */
  lengths: number[];
}

/** One encoded sequence before padding. */
export interface Encoding {
  ids: number[];
  typeIds: number[];
}

export interface EncodeOptions {
  /** Truncate to this many tokens, special tokens included (longest-first for pairs). Default: no truncation. */
  maxLength?: number;
}

export interface BatchEncodeOptions {
  /** Truncate each row to this many tokens, special tokens included. Default 128 (or the model's model_max_length when smaller). */
  maxLength?: number;
  /** 'longest' (default): pad to the batch's longest row; 'max_length': pad every row to maxLength. */
  padding?: 'longest' | 'max_length';
}

export const DEFAULT_MAX_LENGTH = 128;

type TokenizerConfig = Record<string, unknown>;

/** A token in tokenizer_config.json: either "[PAD]" or an AddedToken object { "content": "[PAD]", ... }. */
function tokenName(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') {
    return (v as { content: string }).content;
  }
  return undefined;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return !!v && typeof v === 'object' && !Array.isArray(v);
}

async function readJsonFile(file: string, what: string, required: boolean): Promise<object | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT' && !required) return undefined;
    if (err.code === 'ENOENT') {
      throw new Error(`${what} not found: ${file} (a Hugging Face tokenizer directory needs tokenizer.json; save one with tokenizer.save_pretrained(dir))`);
    }
    throw new Error(`cannot read ${what} ${file}: ${err.message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
  } catch (e) {
    throw new Error(`${what} ${file} is not valid JSON: ${(e as Error).message}`);
  }
  if (!isPlainObject(parsed)) throw new Error(`${what} ${file} must contain a JSON object`);
  return parsed;
}

export class Tokenizer {
  /** Id used to pad rows (from tokenizer_config.json pad_token, tokenizer.json padding, or a [PAD]/<pad> token). */
  readonly padId: number;
  /** Number of rows an embedding table needs: the largest token id + 1 (added tokens included). */
  readonly vocabSize: number;
  readonly unkId: number | undefined;
  readonly clsId: number | undefined;
  readonly sepId: number | undefined;
  /** model_max_length from tokenizer_config.json when it is a real limit, else undefined. */
  readonly modelMaxLength: number | undefined;
  /** Special tokens the template adds to one text / to a pair. */
  readonly numSpecialSingle: number;
  readonly numSpecialPair: number;
  /** The underlying @huggingface/tokenizers tokenizer. */
  readonly hf: HFTokenizer;
  /** tokenizer_config.json (or its equivalent from a GGUF file): chat_template, bos/eos tokens, ... */
  readonly config: Readonly<Record<string, unknown>>;
  /** The end-of-sequence token's id (tokenizer_config.json eos_token), if any. */
  readonly eosId: number | undefined;
  /** The beginning-of-sequence token's id (bos_token), if any. */
  readonly bosId: number | undefined;
  private readonly bertFallback: boolean;

  private constructor(hf: HFTokenizer, json: Record<string, unknown>, config: TokenizerConfig) {
    this.hf = hf;
    this.config = Object.freeze({ ...config });
    const vocab = hf.get_vocab(true);
    let maxId = -1;
    for (const id of vocab.values()) if (id > maxId) maxId = id;
    if (maxId < 0) throw new Error('invalid tokenizer.json: the vocabulary is empty');
    this.vocabSize = maxId + 1;

    const lookup = (key: string, where: string): number | undefined => {
      const name = tokenName(config[key]);
      if (name === undefined) return undefined;
      const id = hf.token_to_id(name);
      if (id === undefined) throw new Error(`${where} ${key} '${name}' is not in the tokenizer's vocabulary`);
      return id;
    };
    const firstKnown = (...names: string[]): number | undefined => {
      for (const n of names) {
        const id = hf.token_to_id(n);
        if (id !== undefined) return id;
      }
      return undefined;
    };

    const model = isPlainObject(json.model) ? json.model : {};
    const modelUnk = typeof model.unk_token === 'string' ? hf.token_to_id(model.unk_token) : undefined;
    this.unkId = lookup('unk_token', 'tokenizer_config.json') ?? modelUnk ?? firstKnown('[UNK]', '<unk>');
    this.clsId = lookup('cls_token', 'tokenizer_config.json') ?? firstKnown('[CLS]', '<s>');
    this.sepId = lookup('sep_token', 'tokenizer_config.json') ?? firstKnown('[SEP]', '</s>');
    this.eosId = lookup('eos_token', 'tokenizer_config.json');
    this.bosId = lookup('bos_token', 'tokenizer_config.json');

    const padding = isPlainObject(json.padding) ? json.padding : undefined;
    const jsonPadId = padding && typeof padding.pad_id === 'number' ? padding.pad_id : undefined;
    // Without any pad token (e.g. GPT-2) padding positions are masked out, so id 0 is harmless.
    this.padId = lookup('pad_token', 'tokenizer_config.json') ?? jsonPadId ?? firstKnown('[PAD]', '<pad>') ?? 0;

    const mml = config.model_max_length;
    this.modelMaxLength = typeof mml === 'number' && Number.isFinite(mml) && mml > 0 && mml < 1e6 ? mml : undefined;

    // A WordPiece tokenizer.json without a post-processor still gets BERT's [CLS] a [SEP] b [SEP].
    this.bertFallback = hf.post_processor === null && model.type === 'WordPiece'
      && this.clsId !== undefined && this.sepId !== undefined;
    this.numSpecialSingle = this.template([], null).tokens.length;
    this.numSpecialPair = this.template([], []).tokens.length;
  }

  /**
   * Load `dir/tokenizer.json` (required) and `dir/tokenizer_config.json` (optional) from disk.
   */
  static async fromDir(dir: string): Promise<Tokenizer> {
    const json = await readJsonFile(path.join(dir, 'tokenizer.json'), 'tokenizer.json', true);
    const config = await readJsonFile(path.join(dir, 'tokenizer_config.json'), 'tokenizer_config.json', false);
    try {
      return Tokenizer.fromJSON(json!, config ?? {});
    } catch (e) {
      throw new Error(`${(e as Error).message} (in ${dir})`);
    }
  }

  /**
   * From a local directory or a Hugging Face hub repo id ('org/name'), downloaded into (or found in)
   * the hub cache as transformers' AutoTokenizer.from_pretrained does; see HubOptions.
   */
  static async fromPretrained(nameOrDir: string, opts: HubOptions = {}): Promise<Tokenizer> {
    const dir = await resolveModelDir(nameOrDir, { required: ['tokenizer.json'], optional: ['tokenizer_config.json'] }, opts);
    return Tokenizer.fromDir(dir);
  }

  /**
   * From a GGUF file's metadata (tokenizer.ggml.*): a byte-level BPE tokenizer (tokenizer.ggml.model
   * 'gpt2': GPT-2, LLaMA 3, SmolLM2, Qwen2) with its merges, control tokens as special added tokens,
   * BOS prepended when add_bos_token says so, and the chat template. Other tokenizer models (SentencePiece
   * 'llama') are refused by name.
   */
  static fromGgufMetadata(md: Record<string, unknown>, where = 'GGUF'): Tokenizer {
    const { json, config } = ggufTokenizerFiles(md, where);
    return Tokenizer.fromJSON(json, config);
  }

  /** Build from the parsed contents of tokenizer.json and (optionally) tokenizer_config.json. */
  static fromJSON(tokenizerJson: object, config: object = {}): Tokenizer {
    if (!isPlainObject(tokenizerJson)) throw new Error('invalid tokenizer.json: expected a JSON object');
    if (!isPlainObject(tokenizerJson.model) || typeof tokenizerJson.model.type !== 'string') {
      throw new Error('invalid tokenizer.json: no "model" with a "type" (is this a Hugging Face tokenizer.json?)');
    }
    if (!isPlainObject(config)) throw new Error('invalid tokenizer_config.json: expected a JSON object');
    const full: Record<string, unknown> = {
      normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, added_tokens: [],
      ...tokenizerJson,
    };
    let hf: HFTokenizer;
    try {
      hf = new (hfTokenizers().Tokenizer)(full, config);
    } catch (e) {
      throw new Error(`invalid tokenizer.json: ${(e as Error).message}`);
    }
    return new Tokenizer(hf, full, config as TokenizerConfig);
  }

  /** Tokens of a text without special tokens. */
  tokenize(text: string): string[] {
    return this.hf.tokenize(text, { add_special_tokens: false });
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }

  /** Text of ids (special tokens skipped by default). */
  decode(ids: ArrayLike<number>, opts: { skipSpecialTokens?: boolean } = {}): string {
    const list = Array.from(ids);
    if (list.length === 0) return '';
    return this.hf.decode(list, { skip_special_tokens: opts.skipSpecialTokens ?? true });
  }

  /**
   * Ids of one text (or a pair) with the model's special tokens, e.g. BERT: [CLS] a [SEP] b [SEP]
   * with type ids 0 for "[CLS] a [SEP]" and 1 for "b [SEP]".
   */
  encode(text: string, pair?: string, opts: EncodeOptions = {}): Encoding {
    if (typeof text !== 'string') throw new TypeError(`encode: text must be a string, got ${typeof text}`);
    if (pair !== undefined && pair !== null && typeof pair !== 'string') {
      throw new TypeError(`encode: pair must be a string, got ${typeof pair}`);
    }
    const hasPair = typeof pair === 'string';
    let a = this.tokenize(text);
    let b = hasPair ? this.tokenize(pair) : null;
    if (opts.maxLength !== undefined) [a, b] = this.truncate(a, b, opts.maxLength);
    const { tokens, typeIds } = this.template(a, b);
    const ids = tokens.map((t) => {
      const id = this.hf.token_to_id(t) ?? this.unkId;
      if (id === undefined) throw new Error(`token '${t}' has no id and the tokenizer has no unknown token`);
      return id;
    });
    return { ids, typeIds };
  }

  /** Encode, truncate and pad a batch (dynamic padding to the batch's longest row by default). */
  encodeBatch(texts: string[], pairs?: string[], opts: BatchEncodeOptions = {}): EncodedBatch {
    if (!Array.isArray(texts)) throw new TypeError('encodeBatch: texts must be an array of strings');
    if (pairs !== undefined && (!Array.isArray(pairs) || pairs.length !== texts.length)) {
      throw new Error(`encodeBatch: pairs must have one entry per text (${texts.length} texts, ${Array.isArray(pairs) ? pairs.length : typeof pairs} pairs)`);
    }
    const maxLength = this.resolveMaxLength(opts.maxLength);
    const encs = texts.map((t, i) => this.encode(t, pairs?.[i], { maxLength }));
    return this.pad(encs, opts.padding === 'max_length' ? maxLength : undefined);
  }

  /** The effective default truncation length: opts value, else min(128, model_max_length). */
  resolveMaxLength(maxLength?: number): number {
    const m = maxLength ?? Math.min(DEFAULT_MAX_LENGTH, this.modelMaxLength ?? DEFAULT_MAX_LENGTH);
    if (!Number.isInteger(m) || m < 1) throw new Error(`maxLength must be a positive integer, got ${maxLength}`);
    return m;
  }

  /** Pad encodings into one [B, T] batch; T = the longest row, or `padTo` when given (rows longer than it are an error). */
  pad(encodings: Encoding[], padTo?: number): EncodedBatch {
    const B = encodings.length;
    const lengths = encodings.map((e) => e.ids.length);
    const longest = lengths.reduce((m, l) => Math.max(m, l), 0);
    if (padTo !== undefined && longest > padTo) throw new Error(`pad: a row has ${longest} tokens, more than padTo ${padTo}`);
    const T = padTo ?? longest;
    const inputIds = new Int32Array(B * T).fill(this.padId);
    const attentionMask = new Float32Array(B * T);
    const tokenTypeIds = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      const { ids, typeIds } = encodings[b];
      const off = b * T;
      for (let t = 0; t < ids.length; t++) {
        inputIds[off + t] = ids[t];
        attentionMask[off + t] = 1;
        tokenTypeIds[off + t] = typeIds[t] ?? 0;
      }
    }
    return { inputIds, attentionMask, tokenTypeIds, shape: [B, T], lengths };
  }

  /** Cut segment tokens so that, with the special tokens, at most maxLength remain (longest-first; ties cut the pair). */
  private truncate(a: string[], b: string[] | null, maxLength: number): [string[], string[] | null] {
    if (!Number.isInteger(maxLength) || maxLength < 1) throw new Error(`maxLength must be a positive integer, got ${maxLength}`);
    const specials = b === null ? this.numSpecialSingle : this.numSpecialPair;
    const budget = maxLength - specials;
    if (budget < 1) {
      throw new Error(`maxLength ${maxLength} leaves no room for text next to the ${specials} special tokens`);
    }
    if (b === null) return [a.length > budget ? a.slice(0, budget) : a, null];
    if (a.length + b.length <= budget) return [a, b];
    // Same result as removing one token at a time from the longer segment (the pair on ties).
    const lo = Math.min(a.length, b.length);
    let la: number;
    let lb: number;
    if (budget - lo >= lo) {
      la = a.length <= b.length ? a.length : budget - lo;
      lb = a.length <= b.length ? budget - lo : b.length;
    } else {
      la = Math.ceil(budget / 2);
      lb = Math.floor(budget / 2);
    }
    return [a.slice(0, la), b.slice(0, lb)];
  }

  /** The model's post-processor template around already tokenized segments. */
  private template(a: string[], b: string[] | null): { tokens: string[]; typeIds: number[] } {
    const pp = this.hf.post_processor;
    if (pp === null) {
      if (this.bertFallback) {
        const cls = this.hf.id_to_token(this.clsId!)!;
        const sep = this.hf.id_to_token(this.sepId!)!;
        const tokens = [cls, ...a, sep];
        const typeIds = new Array<number>(tokens.length).fill(0);
        if (b !== null) {
          tokens.push(...b, sep);
          typeIds.push(...new Array<number>(b.length + 1).fill(1));
        }
        return { tokens, typeIds };
      }
      return { tokens: [...a, ...(b ?? [])], typeIds: [...a.map(() => 0), ...(b ?? []).map(() => 1)] };
    }
    const out = pp.post_process([...a], b === null ? null : [...b], true) as {
      tokens: string[]; tokens_pair?: string[] | null; token_type_ids?: (number | undefined)[];
    };
    let tokens = out.tokens;
    let typeIds: number[];
    if (out.tokens_pair) {
      // Post-processors such as ByteLevel hand the pair back separately.
      typeIds = [...tokens.map(() => 0), ...out.tokens_pair.map(() => 1)];
      tokens = [...tokens, ...out.tokens_pair];
    } else if (out.token_type_ids && out.token_type_ids.length === tokens.length) {
      typeIds = out.token_type_ids.map((t) => t ?? 0);
    } else {
      typeIds = tokens.map((_, i) => (b !== null && i >= tokens.length - b.length ? 1 : 0));
    }
    return { tokens, typeIds };
  }
}

/**
 * tokenizer.json and tokenizer_config.json (as objects) equivalent to a GGUF file's tokenizer metadata:
 * byte-level BPE (tokenizer.ggml.model 'gpt2') with its merges, control tokens as special added tokens,
 * BOS prepended when add_bos_token says so, the chat template.
 */
export function ggufTokenizerFiles(md: Record<string, unknown>, where = 'GGUF'): { json: Record<string, unknown>; config: Record<string, unknown> } {
  const model = md['tokenizer.ggml.model'];
  if (model !== 'gpt2') throw new Error(`${where}: GGUF tokenizer model '${String(model)}' is not supported (gpt2, byte-level BPE)`);
  const tokens = md['tokenizer.ggml.tokens'];
  const merges = md['tokenizer.ggml.merges'];
  if (!Array.isArray(tokens) || !Array.isArray(merges)) throw new Error(`${where}: GGUF metadata lacks tokenizer.ggml.tokens or merges`);
  const types = (md['tokenizer.ggml.token_type'] as number[] | undefined) ?? [];
  const vocab: Record<string, number> = {};
  tokens.forEach((t: string, i: number) => { vocab[t] = i; });
  const added = tokens.flatMap((t: string, i: number) => (types[i] === 3 || types[i] === 4
    ? [{ id: i, content: t, single_word: false, lstrip: false, rstrip: false, normalized: false, special: types[i] === 3 }] : []));
  const id = (k: string) => (typeof md[k] === 'number' ? (md[k] as number) : undefined);
  const bos = id('tokenizer.ggml.bos_token_id');
  const eos = id('tokenizer.ggml.eos_token_id');
  const pad = id('tokenizer.ggml.padding_token_id');
  const addBos = md['tokenizer.ggml.add_bos_token'] === true && bos !== undefined;
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: true };
  const json = {
    version: '1.0', added_tokens: added, normalizer: null, pre_tokenizer: byteLevel, decoder: byteLevel,
    post_processor: addBos ? {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: tokens[bos!], type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: tokens[bos!], type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { [tokens[bos!]]: { id: tokens[bos!], ids: [bos], tokens: [tokens[bos!]] } },
    } : null,
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges,
    },
  };
  const config: Record<string, unknown> = {};
  if (bos !== undefined) config.bos_token = tokens[bos];
  if (eos !== undefined) config.eos_token = tokens[eos];
  if (pad !== undefined) config.pad_token = tokens[pad];
  if (typeof md['tokenizer.chat_template'] === 'string') config.chat_template = md['tokenizer.chat_template'];
  const ctx = md[`${String(md['general.architecture'])}.context_length`];
  if (typeof ctx === 'number') config.model_max_length = ctx;
  return { json, config };
}

