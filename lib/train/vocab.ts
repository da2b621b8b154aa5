// Small WordPiece vocabularies and the Hugging Face tokenizer.json that describes them
// (BERT-style: BertNormalizer lowercase, BertPreTokenizer, WordPiece, [CLS] a [SEP] b [SEP]).
import { promises as fsp } from 'fs';
import * as path from 'path';
import { hfTokenizers } from './tokenizer';

/** BERT's special tokens, in the ids a generated vocabulary gives them (0..4). */
export const SPECIAL_TOKENS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] as const;

export const WORDPIECE_PREFIX = '##';

export interface WordPieceOptions {
  /** Lowercase (and strip accents) in the normalizer, like bert-base-uncased. Default true. */
  lowercase?: boolean;
  /** Words longer than this become [UNK]. Default 100. */
  maxInputCharsPerWord?: number;
}

/**
 * The tokenizer.json object (Hugging Face tokenizers format) of a BERT-style WordPiece tokenizer
 * whose token ids are the positions in `vocab`. Special tokens missing from `vocab` are put in
 * front, in the order of SPECIAL_TOKENS (so a plain word list gets [PAD]=0 ... [MASK]=4).
 */
export function buildWordPieceTokenizerJson(vocab: string[], opts: WordPieceOptions = {}): object {
  if (!Array.isArray(vocab)) throw new TypeError('buildWordPieceTokenizerJson: vocab must be an array of strings');
  const seen = new Set<string>();
  for (const [i, tok] of vocab.entries()) {
    if (typeof tok !== 'string' || tok.length === 0) throw new Error(`vocab entry ${i} is not a non-empty string`);
    if (/\s/u.test(tok)) throw new Error(`vocab entry ${i} ('${tok}') contains whitespace; WordPiece tokens never do`);
    if (seen.has(tok)) throw new Error(`vocab entry ${i} ('${tok}') is a duplicate`);
    seen.add(tok);
  }
  const full = [...SPECIAL_TOKENS.filter((s) => !seen.has(s)), ...vocab];
  const ids = new Map(full.map((t, i) => [t, i] as const));
  const id = (t: string): number => ids.get(t)!;
  const special = (t: string, typeId: number) => ({ SpecialToken: { id: t, type_id: typeId } });
  const seq = (s: 'A' | 'B', typeId: number) => ({ Sequence: { id: s, type_id: typeId } });
  const lowercase = opts.lowercase ?? true;

  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [...SPECIAL_TOKENS].sort((x, y) => id(x) - id(y)).map((t) => ({
      id: id(t), content: t, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
    })),
    normalizer: {
      type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase,
    },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [special('[CLS]', 0), seq('A', 0), special('[SEP]', 0)],
      pair: [special('[CLS]', 0), seq('A', 0), special('[SEP]', 0), seq('B', 1), special('[SEP]', 1)],
      special_tokens: {
        '[CLS]': { id: '[CLS]', ids: [id('[CLS]')], tokens: ['[CLS]'] },
        '[SEP]': { id: '[SEP]', ids: [id('[SEP]')], tokens: ['[SEP]'] },
      },
    },
    decoder: { type: 'WordPiece', prefix: WORDPIECE_PREFIX, cleanup: true },
    model: {
      type: 'WordPiece',
      unk_token: '[UNK]',
      continuing_subword_prefix: WORDPIECE_PREFIX,
      max_input_chars_per_word: opts.maxInputCharsPerWord ?? 100,
      vocab: Object.fromEntries(full.map((t, i) => [t, i])),
    },
  };
}

/** The tokenizer_config.json object that goes with buildWordPieceTokenizerJson. */
export function buildTokenizerConfigJson(opts: { modelMaxLength?: number; lowercase?: boolean } = {}): object {
  return {
    tokenizer_class: 'BertTokenizer',
    do_lower_case: opts.lowercase ?? true,
    tokenize_chinese_chars: true,
    strip_accents: null,
    clean_up_tokenization_spaces: true,
    model_max_length: opts.modelMaxLength ?? 512,
    pad_token: '[PAD]',
    unk_token: '[UNK]',
    cls_token: '[CLS]',
    sep_token: '[SEP]',
    mask_token: '[MASK]',
  };
}

/** Write tokenizer.json and tokenizer_config.json for `vocab` into `dir` (created if needed). */
export async function writeWordPieceTokenizer(
  dir: string, vocab: string[], opts: WordPieceOptions & { modelMaxLength?: number } = {},
): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  const json = buildWordPieceTokenizerJson(vocab, opts);
  const config = buildTokenizerConfigJson(opts);
  await fsp.writeFile(path.join(dir, 'tokenizer.json'), JSON.stringify(json, null, 2) + '\n');
  await fsp.writeFile(path.join(dir, 'tokenizer_config.json'), JSON.stringify(config, null, 2) + '\n');
}

/** A function giving the words of a text as the BERT-style tokenizer sees them (the library's BertNormalizer + BertPreTokenizer). */
export function wordSplitter(opts: { lowercase?: boolean } = {}): (text: string) => string[] {
  const hf = hfTokenizers();
  const normalizer = new hf.BertNormalizer({
    type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, lowercase: opts.lowercase ?? true,
  });
  const pre = new hf.BertPreTokenizer();
  return (text: string) => pre.pre_tokenize_text(normalizer.normalize(text));
}

const byMassThenName = (a: [string, number], b: [string, number]): number =>
  b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);

/**
 * A WordPiece vocabulary of at most `size` tokens for `texts`: the SPECIAL_TOKENS, then the most
 * frequent (lowercased) words; when not every word fits, some slots go to "##" suffix pieces
 * ("refunds" → "refund" "##s") chosen by the frequency they would cover among the words left out,
 * each only where it covers more than the next word would. Ties break alphabetically, so the
 * result depends only on the texts and size.
 */
export function buildVocab(texts: string[], size: number, opts: { lowercase?: boolean; maxInputCharsPerWord?: number } = {}): string[] {
  if (!Array.isArray(texts)) throw new TypeError('buildVocab: texts must be an array of strings');
  if (!Number.isInteger(size) || size <= SPECIAL_TOKENS.length) {
    throw new Error(`buildVocab: size must be an integer larger than the ${SPECIAL_TOKENS.length} special tokens, got ${size}`);
  }
  const maxChars = opts.maxInputCharsPerWord ?? 100;
  const special = new Set<string>(SPECIAL_TOKENS);
  const counts = new Map<string, number>();
  const wordsOf = wordSplitter(opts);
  for (const text of texts) {
    for (const w of wordsOf(String(text))) {
      if ([...w].length > maxChars || special.has(w)) continue;
      counts.set(w, (counts.get(w) ?? 0) + 1);
    }
  }
  const words = [...counts.entries()].sort(byMassThenName);
  const budget = size - SPECIAL_TOKENS.length;
  if (words.length <= budget) return [...SPECIAL_TOKENS, ...words.map(([w]) => w)];

  const suffixSlots = Math.max(1, Math.floor(budget / 5));
  const base = words.slice(0, budget - suffixSlots);
  const baseSet = new Set(base.map(([w]) => w));
  const rest = words.slice(budget - suffixSlots);

  // Mass each "##suffix" would cover: left-out words whose longest in-vocabulary prefix it completes.
  const suffixMass = new Map<string, number>();
  for (const [w, c] of rest) {
    const chars = [...w];
    for (let k = chars.length - 1; k >= 1; k--) {
      if (baseSet.has(chars.slice(0, k).join(''))) {
        const piece = WORDPIECE_PREFIX + chars.slice(k).join('');
        suffixMass.set(piece, (suffixMass.get(piece) ?? 0) + c);
        break;
      }
    }
  }
  const suffixes = [...suffixMass.entries()].sort(byMassThenName);

  // Fill the remaining slots from both lists by covered mass (words first on ties).
  const extra: string[] = [];
  let wi = 0;
  let si = 0;
  while (extra.length < suffixSlots && (wi < rest.length || si < suffixes.length)) {
    const takeWord = si >= suffixes.length || (wi < rest.length && rest[wi][1] >= suffixes[si][1]);
    if (takeWord) extra.push(rest[wi++][0]);
    else extra.push(suffixes[si++][0]);
  }
  return [...SPECIAL_TOKENS, ...base.map(([w]) => w), ...extra];
}
