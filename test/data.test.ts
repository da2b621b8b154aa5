// Tokenizer (through @huggingface/tokenizers), vocabulary building, data files, labels, batches.
// The fixture tokenizer files are generated from FIXTURE_VOCAB; after changing it (or the
// generator) run `UPDATE_FIXTURES=1 npx jest test/data.test.ts` to rewrite them.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Tokenizer } from '../lib/train/tokenizer';
import {
  SPECIAL_TOKENS, buildTokenizerConfigJson, buildVocab, buildWordPieceTokenizerJson, writeWordPieceTokenizer,
} from '../lib/train/vocab';
import { DataLoader, Example, LabelMap, readExamples, shuffledIndices } from '../lib/train/data';

const FIXTURES = path.join(__dirname, 'fixtures');
const TINY_BERT = path.join(FIXTURES, 'tiny-bert');
const DATA = path.join(FIXTURES, 'data');

/** The tiny-bert fixture's vocabulary after the 5 special tokens: 95 entries, 100 in all. */
const FIXTURE_VOCAB = [
  '.', ',', '!', '?', "'",
  'the', 'a', 'an', 'and', 'or', 'but', 'to', 'of', 'in', 'on', 'for', 'is', 'was', 'are', 'it',
  'i', 'my', 'me', 'you', 'your', 'we', 'this', 'that', 'not', 'no', 'with', 'be', 'have', 'has',
  'do', 'can', 'please', 'thanks', 'thank', 'order', 'refund', 'return', 'item', 'product', 'price',
  'money', 'card', 'account', 'help', 'need', 'want', 'get', 'still', 'never', 'late', 'arrive',
  'delivery', 'ship', 'package', 'box', 'broken', 'damage', 'great', 'good', 'bad', 'love', 'hate',
  'fast', 'slow', 'service', 'support', 'customer', 'quality', 'time', 'day', 'week', 'when',
  'where', 'how', 'what', 'why', 'very', 'so', 'just', 'work', 'up', 'wrong',
  '##s', '##ed', '##ing', '##er', '##ly', '##es', '##d', '##y',
];
const FIXTURE_MODEL_MAX_LENGTH = 64; // tiny-bert's max_position_embeddings

let tmpRoot: string;
beforeAll(() => {
  tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'fused-adapters-data-'));
});
afterAll(() => {
  fs.rmSync(tmpRoot, { recursive: true, force: true });
});
let tmpCount = 0;
function tmpFile(name: string, content: string): string {
  const dir = path.join(tmpRoot, String(tmpCount++));
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  fs.writeFileSync(file, content);
  return file;
}

describe('fixture tokenizer files', () => {
  test('test/fixtures/tiny-bert/tokenizer*.json are buildWordPieceTokenizerJson(FIXTURE_VOCAB)', async () => {
    const json = buildWordPieceTokenizerJson(FIXTURE_VOCAB);
    const config = buildTokenizerConfigJson({ modelMaxLength: FIXTURE_MODEL_MAX_LENGTH });
    if (process.env.UPDATE_FIXTURES) {
      await writeWordPieceTokenizer(TINY_BERT, FIXTURE_VOCAB, { modelMaxLength: FIXTURE_MODEL_MAX_LENGTH });
    }
    expect(JSON.parse(fs.readFileSync(path.join(TINY_BERT, 'tokenizer.json'), 'utf8'))).toEqual(json);
    expect(JSON.parse(fs.readFileSync(path.join(TINY_BERT, 'tokenizer_config.json'), 'utf8'))).toEqual(config);
    const modelConfig = JSON.parse(fs.readFileSync(path.join(TINY_BERT, 'config.json'), 'utf8'));
    expect(SPECIAL_TOKENS.length + FIXTURE_VOCAB.length).toBe(modelConfig.vocab_size);
  });
});

describe('Tokenizer (tiny-bert fixture, @huggingface/tokenizers)', () => {
  let tok: Tokenizer;
  const id = (t: string) => {
    const i = tok.tokenToId(t);
    if (i === undefined) throw new Error(`no id for ${t}`);
    return i;
  };
  beforeAll(async () => {
    tok = await Tokenizer.fromDir(TINY_BERT);
  });

  test('loads with the library and reads the special ids from the files', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const hf = require('@huggingface/tokenizers');
    expect(tok.hf).toBeInstanceOf(hf.Tokenizer);
    expect(tok.padId).toBe(0);
    expect(tok.unkId).toBe(1);
    expect(tok.clsId).toBe(2);
    expect(tok.sepId).toBe(3);
    expect(tok.vocabSize).toBe(100);
    expect(tok.modelMaxLength).toBe(64);
    expect(tok.numSpecialSingle).toBe(2);
    expect(tok.numSpecialPair).toBe(3);
  });

  test('encode: [CLS] … [SEP], lowercasing, WordPiece sub-words, type ids 0', () => {
    const e = tok.encode('The ORDER arrived late.');
    expect(tok.hf.tokenize('The ORDER arrived late.')).toEqual(['the', 'order', 'arrive', '##d', 'late', '.']);
    expect(e.ids).toEqual([2, id('the'), id('order'), id('arrive'), id('##d'), id('late'), id('.'), 3]);
    expect(e.typeIds).toEqual(new Array(8).fill(0));
    // the same as the library's own encode
    expect(e.ids).toEqual(tok.hf.encode('The ORDER arrived late.').ids);
    expect(tok.decode(e.ids)).toBe('the order arrived late.');
  });

  test('encode a pair: [CLS] a [SEP] b [SEP] with type ids 0 then 1', () => {
    const e = tok.encode('Where is my order?', 'It was late');
    expect(e.ids).toEqual([
      2, id('where'), id('is'), id('my'), id('order'), id('?'), 3, id('it'), id('was'), id('late'), 3,
    ]);
    expect(e.typeIds).toEqual([0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1]);
    const lib = tok.hf.encode('Where is my order?', { text_pair: 'It was late', return_token_type_ids: true });
    expect(e.ids).toEqual(lib.ids);
    expect(e.typeIds).toEqual(lib.token_type_ids);
  });

  test('unknown words become [UNK]', () => {
    expect(tok.encode('xylophone zebra').ids).toEqual([2, 1, 1, 3]);
    expect(tok.encode('refunds quickly').ids).toEqual([2, id('refund'), id('##s'), 1, 3]);
  });

  test('truncation of one text keeps [CLS] and [SEP]', () => {
    const e = tok.encode('the order was late and the item was broken', undefined, { maxLength: 6 });
    expect(e.ids).toEqual([2, id('the'), id('order'), id('was'), id('late'), 3]);
    expect(tok.encode('the order', undefined, { maxLength: 6 }).ids).toHaveLength(4);
  });

  test('pair truncation is longest-first and keeps the special tokens', () => {
    const long = 'the order was late and the item was broken again'; // 10 tokens
    const e = tok.encode(long, 'very bad', { maxLength: 9 }); // room for 6: 4 + 2
    expect(e.ids).toEqual([2, id('the'), id('order'), id('was'), id('late'), 3, id('very'), id('bad'), 3]);
    expect(e.typeIds).toEqual([0, 0, 0, 0, 0, 0, 1, 1, 1]);
    // the pair is the longer one
    const f = tok.encode('very bad', long, { maxLength: 9 });
    expect(f.ids).toEqual([2, id('very'), id('bad'), 3, id('the'), id('order'), id('was'), id('late'), 3]);
    // both long: split evenly, the first text keeps the odd token
    const g = tok.encode('a b c d e', 'f g h i j', { maxLength: 8 }); // unknown letters: [UNK]s, 5 + 5 → 3 + 2
    expect(g.typeIds).toEqual([0, 0, 0, 0, 0, 1, 1, 1]);
    expect(g.ids[0]).toBe(2);
    expect(g.ids[4]).toBe(3);
    expect(g.ids[7]).toBe(3);
    expect(() => tok.encode('the order', 'late', { maxLength: 3 })).toThrow(/leaves no room/);
  });

  test('encodeBatch pads to the longest row of the batch', () => {
    const b = tok.encodeBatch(['the order', 'where is my refund ?', 'late'], undefined);
    expect(b.shape).toEqual([3, 7]);
    expect(b.lengths).toEqual([4, 7, 3]);
    expect(b.inputIds).toBeInstanceOf(Int32Array);
    expect(b.attentionMask).toBeInstanceOf(Float32Array);
    expect(b.tokenTypeIds).toBeInstanceOf(Int32Array);
    expect(Array.from(b.inputIds.slice(0, 7))).toEqual([2, id('the'), id('order'), 3, 0, 0, 0]);
    expect(Array.from(b.attentionMask.slice(0, 7))).toEqual([1, 1, 1, 1, 0, 0, 0]);
    expect(Array.from(b.inputIds.slice(14, 21))).toEqual([2, id('late'), 3, 0, 0, 0, 0]);
    expect(Array.from(b.tokenTypeIds)).toEqual(new Array(21).fill(0));
  });

  test('encodeBatch with pairs, truncation and max_length padding', () => {
    const b = tok.encodeBatch(['where is my order', 'late'], ['it was late', 'bad'], { maxLength: 8 });
    expect(b.shape).toEqual([2, 8]);
    expect(b.lengths).toEqual([8, 5]);
    expect(Array.from(b.tokenTypeIds.slice(0, 8))).toEqual([0, 0, 0, 0, 0, 1, 1, 1]);
    expect(Array.from(b.tokenTypeIds.slice(8, 16))).toEqual([0, 0, 0, 1, 1, 0, 0, 0]);
    const p = tok.encodeBatch(['late'], undefined, { maxLength: 10, padding: 'max_length' });
    expect(p.shape).toEqual([1, 10]);
    expect(() => tok.encodeBatch(['a', 'b'], ['c'])).toThrow(/one entry per text/);
  });

  test('default truncation: min(128, model_max_length)', () => {
    const text = new Array(200).fill('order').join(' ');
    expect(tok.encodeBatch([text]).shape).toEqual([1, 64]);
    expect(tok.encodeBatch([text], undefined, { maxLength: 100 }).shape).toEqual([1, 100]);
  });

  test('clear errors for a missing or invalid tokenizer.json', async () => {
    const empty = path.join(tmpRoot, 'empty-model');
    fs.mkdirSync(empty, { recursive: true });
    await expect(Tokenizer.fromDir(empty)).rejects.toThrow(/tokenizer\.json not found: .*empty-model/);
    const bad = path.dirname(tmpFile('tokenizer.json', '{"model": '));
    await expect(Tokenizer.fromDir(bad)).rejects.toThrow(/tokenizer\.json .* is not valid JSON/);
    const noModel = path.dirname(tmpFile('tokenizer.json', '{"version": "1.0"}'));
    await expect(Tokenizer.fromDir(noModel)).rejects.toThrow(/invalid tokenizer\.json: no "model"/);
    const badType = path.dirname(tmpFile('tokenizer.json', '{"model": {"type": "Nope", "vocab": {}}}'));
    await expect(Tokenizer.fromDir(badType)).rejects.toThrow(/invalid tokenizer\.json/);
    const badConfigDir = path.dirname(tmpFile('tokenizer.json', JSON.stringify(buildWordPieceTokenizerJson(['late']))));
    fs.writeFileSync(path.join(badConfigDir, 'tokenizer_config.json'), '{"pad_token": "<nope>"}');
    await expect(Tokenizer.fromDir(badConfigDir)).rejects.toThrow(/pad_token '<nope>' is not in the tokenizer's vocabulary/);
  });

  test('a WordPiece tokenizer.json without a post-processor still gets [CLS]/[SEP]', () => {
    const json = { ...buildWordPieceTokenizerJson(['late', 'order']), post_processor: null };
    const t = Tokenizer.fromJSON(json);
    expect(t.encode('late', 'order')).toEqual({ ids: [2, 5, 3, 6, 3], typeIds: [0, 0, 0, 1, 1] });
  });
});

describe('buildVocab / buildWordPieceTokenizerJson', () => {
  const texts = [
    ...new Array(10).fill('order'), ...new Array(9).fill('item'), ...new Array(8).fill('Refund'),
    ...new Array(7).fill('late'), 'box box', 'orders orders items, items! items refunds',
  ];

  test('most frequent words first, then "##" pieces for the words left out; deterministic', () => {
    // order 10, item 9, refund 8, late 7 | items 3, orders 2, box 2, refunds 1, ',' 1, '!' 1
    const vocab = buildVocab(texts, 10);
    expect(vocab).toEqual([...SPECIAL_TOKENS, 'order', 'item', 'refund', 'late', '##s']);
    expect(buildVocab([...texts].reverse(), 10)).toEqual(vocab);
    const t = Tokenizer.fromJSON(buildWordPieceTokenizerJson(vocab));
    expect(t.tokenize('Orders, items and refunds')).toEqual(['order', '##s', '[UNK]', 'item', '##s', '[UNK]', 'refund', '##s']);
  });

  test('all words when they fit; never more than size', () => {
    const vocab = buildVocab(texts, 100);
    expect(vocab.slice(0, 5)).toEqual([...SPECIAL_TOKENS]);
    expect(new Set(vocab).size).toBe(vocab.length);
    expect(vocab).toEqual(expect.arrayContaining(['order', 'items', 'refunds', '!', ',']));
    expect(vocab.length).toBeLessThanOrEqual(100);
    for (const size of [6, 8, 12]) expect(buildVocab(texts, size).length).toBeLessThanOrEqual(size);
    expect(() => buildVocab(texts, 5)).toThrow(/larger than the 5 special tokens/);
  });

  test('the generated tokenizer loads in the library and round-trips its words', async () => {
    const corpus = [
      'The customer wanted a refund for the damaged package.',
      'Support answered quickly and the customer was happy!',
      'Where is my package? It never arrived.',
      'Great product, great price, fast shipping.',
    ];
    const vocab = buildVocab(corpus, 60);
    const dir = path.join(tmpRoot, 'generated-tokenizer');
    await writeWordPieceTokenizer(dir, vocab, { modelMaxLength: 32 });
    const t = await Tokenizer.fromDir(dir);
    expect(t.vocabSize).toBe(vocab.length);
    expect(t.padId).toBe(0);
    expect(t.modelMaxLength).toBe(32);
    for (const [i, w] of vocab.entries()) {
      expect(t.tokenToId(w)).toBe(i);
      if (!w.startsWith('##') && !SPECIAL_TOKENS.includes(w as (typeof SPECIAL_TOKENS)[number])) {
        expect(t.tokenize(w)).toEqual([w]);
      }
    }
    const sentence = 'where is my package? it never arrived.';
    const enc = t.encode(sentence);
    expect(enc.ids).not.toContain(t.unkId);
    expect(t.decode(enc.ids)).toBe(sentence);
  });

  test('plain word lists get the special tokens in front; bad lists are refused', () => {
    const json = buildWordPieceTokenizerJson(['hello', 'world', '##s']) as { model: { vocab: Record<string, number> } };
    expect(json.model.vocab).toEqual({ '[PAD]': 0, '[UNK]': 1, '[CLS]': 2, '[SEP]': 3, '[MASK]': 4, hello: 5, world: 6, '##s': 7 });
    expect(Tokenizer.fromJSON(json).encode('Hello worlds').ids).toEqual([2, 5, 6, 7, 3]);
    expect(() => buildWordPieceTokenizerJson(['a', 'b', 'a'])).toThrow(/entry 2 \('a'\) is a duplicate/);
    expect(() => buildWordPieceTokenizerJson(['a b'])).toThrow(/whitespace/);
  });
});

describe('readExamples', () => {
  test('JSONL: string labels, blank lines skipped, extra keys ignored', async () => {
    const ex = await readExamples(path.join(DATA, 'reviews.jsonl'));
    expect(ex).toHaveLength(5);
    expect(ex[0]).toEqual({ text: 'The order arrived late.', label: 'negative' });
    expect(ex[3]).toEqual({ text: 'Thanks for the help with my account.', label: 'positive' });
  });

  test('JSONL pairs with numeric labels', async () => {
    const ex = await readExamples(path.join(DATA, 'pairs.jsonl'));
    expect(ex[0]).toEqual({ text: 'Where is my order?', textPair: 'It was late.', label: 1 });
    expect(ex.map((e) => e.label)).toEqual([1, 0, 2]);
  });

  test('CSV: quoted commas, quotes and newlines; integer labels become numbers', async () => {
    const ex = await readExamples(path.join(DATA, 'reviews.csv'));
    expect(ex).toEqual([
      { text: 'The box was broken, and the item too.', label: 0 },
      { text: 'Support said "please wait" twice', label: 0 },
      { text: 'Great service.\nWould order again!', label: 1 },
      { text: 'fast delivery', label: 1 },
      { text: 'Where is my order?', label: 2 },
    ]);
  });

  test('CSV: string labels, pairs, custom columns, CRLF', async () => {
    const file = tmpFile('nli.csv', 'premise,hypothesis,gold\r\n"A man, smiling",A person,entailment\r\nIt rains,"It is\r\ndry",contradiction\r\n');
    const ex = await readExamples(file, { textColumn: 'premise', pairColumn: 'hypothesis', labelColumn: 'gold' });
    expect(ex).toEqual([
      { text: 'A man, smiling', textPair: 'A person', label: 'entailment' },
      { text: 'It rains', textPair: 'It is\r\ndry', label: 'contradiction' },
    ]);
    const jsonl = tmpFile('c.jsonl', '{"q": "hi", "y": 3}\n');
    expect(await readExamples(jsonl, { textColumn: 'q', labelColumn: 'y' })).toEqual([{ text: 'hi', label: 3 }]);
  });

  test('errors name the file and line', async () => {
    const missing = path.join(tmpRoot, 'nope.jsonl');
    await expect(readExamples(missing)).rejects.toThrow(`data file not found: ${missing}`);

    const badJson = tmpFile('bad.jsonl', '{"text": "a", "label": 1}\n\n{"text": "b", label: 2}\n');
    await expect(readExamples(badJson)).rejects.toThrow(new RegExp(`bad\\.jsonl:3: invalid JSON on line 3`));

    const noText = tmpFile('cols.jsonl', '{"text": "a", "label": 1}\n{"sentence": "b", "label": 2}\n');
    await expect(readExamples(noText)).rejects.toThrow(/cols\.jsonl:2: missing column 'text' \(found: 'sentence', 'label'\)/);

    const csvNoText = tmpFile('cols.csv', 'sentence,label\nhello,1\n');
    await expect(readExamples(csvNoText)).rejects.toThrow(/cols\.csv:1: missing column 'text' in the header \(found: 'sentence', 'label'\)/);

    const emptyText = tmpFile('empty-text.jsonl', '{"text": "a", "label": 1}\n{"text": "  ", "label": 2}\n');
    await expect(readExamples(emptyText)).rejects.toThrow(/empty-text\.jsonl:2: empty text in column 'text'/);

    const noLabel = tmpFile('no-label.jsonl', '{"text": "a"}\n');
    await expect(readExamples(noLabel)).rejects.toThrow(/no-label\.jsonl:1: label missing in column 'label' \(found columns: 'text'/);

    const blankLabel = tmpFile('blank-label.csv', 'text,label\n"multi\nline",1\nb,\n');
    await expect(readExamples(blankLabel)).rejects.toThrow(/blank-label\.csv:4: label missing in column 'label'/);

    const fields = tmpFile('fields.csv', 'text,label\n"a\nb",1\nc,d,e\n');
    await expect(readExamples(fields)).rejects.toThrow(/fields\.csv:4: expected 2 fields like the header, got 3/);

    const unclosed = tmpFile('unclosed.csv', 'text,label\n"abc,1\n');
    await expect(readExamples(unclosed)).rejects.toThrow(/unclosed\.csv.*invalid CSV/);

    await expect(readExamples(tmpFile('empty.jsonl', '\n  \n'))).rejects.toThrow(/empty\.jsonl: the file is empty/);
    await expect(readExamples(tmpFile('empty.csv', ''))).rejects.toThrow(/empty\.csv: the file is empty/);
    await expect(readExamples(tmpFile('header.csv', 'text,label\n'))).rejects.toThrow(/header\.csv: no examples \(only a header row/);
    await expect(readExamples(tmpFile('data.txt', 'x'))).rejects.toThrow(/unsupported file type '\.txt'/);
    await expect(readExamples(tmpFile('arr.jsonl', '[1, 2]\n'))).rejects.toThrow(/arr\.jsonl:1: expected a JSON object on line 1, got an array/);
    await expect(readExamples(tmpFile('obj.jsonl', '{"text": "a", "label": {"x": 1}}\n'))).rejects.toThrow(/must be a string or a number, got an object/);
    await expect(readExamples(noText, { pairColumn: 'premise' })).rejects.toThrow(/missing column 'premise'/);
  });
});

describe('LabelMap', () => {
  const ex = (labels: (string | number)[]): Example[] => labels.map((label, i) => ({ text: `t${i}`, label }));

  test('string labels sorted; numbers kept as numbers and sorted numerically', () => {
    const s = LabelMap.fromExamples(ex(['pos', 'neg', 'neutral', 'neg']));
    expect(s.labels).toEqual(['neg', 'neutral', 'pos']);
    expect(s.size).toBe(3);
    expect(s.id('pos')).toBe(2);
    expect(s.name(0)).toBe('neg');
    const n = LabelMap.fromExamples(ex([10, 2, 1, 2]));
    expect(n.labels).toEqual([1, 2, 10]);
    expect(n.id(10)).toBe(2);
    expect(n.id('10')).toBe(2);
    expect(n.name(2)).toBe(10);
  });

  test('unknown labels, bad ids, mixed kinds', () => {
    const s = LabelMap.fromList(['b', 'a']);
    expect(s.id('a')).toBe(1);
    expect(() => s.id('x')).toThrow("unknown label 'x' (known: b, a)");
    expect(() => s.name(2)).toThrow(/label id 2 out of range \(0\.\.1\)/);
    expect(() => LabelMap.fromExamples(ex([1, 'a']))).toThrow(/mix numbers and strings/);
    expect(() => LabelMap.fromList(['a', 'a'])).toThrow(/duplicate label 'a'/);
  });

  test('toJSON / fromJSON round trip', () => {
    const m = LabelMap.fromList([3, 1, 2]);
    const back = LabelMap.fromJSON(JSON.parse(JSON.stringify(m)));
    expect(back.labels).toEqual([3, 1, 2]);
    expect(back.id(1)).toBe(1);
  });
});

describe('DataLoader', () => {
  let tok: Tokenizer;
  const words = ['order', 'refund', 'item', 'late', 'box', 'great', 'bad', 'price', 'card', 'help'];
  // 23 examples of different lengths: i words each (1..10 cycling)
  const examples: Example[] = Array.from({ length: 23 }, (_, i) => ({
    text: words.slice(0, (i % 10) + 1).join(' '),
    label: ['neg', 'pos', 'neutral'][i % 3],
  }));
  const labels = LabelMap.fromExamples(examples);
  beforeAll(async () => {
    tok = await Tokenizer.fromDir(TINY_BERT);
  });
  const all = (loader: DataLoader, epoch: number) => [...loader.epochBatches(epoch)];

  test('length with and without dropLast', () => {
    expect(new DataLoader(examples, tok, labels, { batchSize: 5 }).length).toBe(5);
    expect(new DataLoader(examples, tok, labels, { batchSize: 5, dropLast: true }).length).toBe(4);
    expect(new DataLoader(examples, tok, labels, { batchSize: 23 }).length).toBe(1);
    expect(() => new DataLoader(examples, tok, labels, { batchSize: 0 })).toThrow(/batchSize must be a positive integer/);
  });

  test('without shuffle: file order; rows, labels and padding per batch', () => {
    const loader = new DataLoader(examples, tok, labels, { batchSize: 4 });
    const b = loader.batchAt(0, 1);
    expect(b.indices).toEqual([4, 5, 6, 7]);
    expect(b.labels).toEqual([4, 5, 6, 7].map((i) => labels.id(examples[i].label)));
    expect(b.lengths).toEqual([7, 8, 9, 10]); // i+1 words + [CLS] + [SEP]
    expect(b.shape).toEqual([4, 10]); // padded to this batch's longest
    const enc = tok.encode(examples[4].text);
    expect(Array.from(b.inputIds.slice(0, 10))).toEqual([...enc.ids, 0, 0, 0]);
    expect(loader.batchAt(0, 0).shape).toEqual([4, 6]);
    const last = loader.batchAt(0, 5);
    expect(last.indices).toEqual([20, 21, 22]);
    expect(last.shape[0]).toBe(3);
  });

  test('maxLength truncates rows', () => {
    const loader = new DataLoader(examples, tok, labels, { batchSize: 23, maxLength: 5 });
    const b = loader.batchAt(0, 0);
    expect(b.shape).toEqual([23, 5]);
    expect(Math.max(...b.lengths)).toBe(5);
  });

  test('every example once per epoch, shuffled', () => {
    const loader = new DataLoader(examples, tok, labels, { batchSize: 5, shuffle: true, seed: 7 });
    for (const epoch of [0, 1, 2]) {
      const seen = all(loader, epoch).flatMap((b) => b.indices);
      expect([...seen].sort((a, b) => a - b)).toEqual(examples.map((_, i) => i));
    }
    const dropped = new DataLoader(examples, tok, labels, { batchSize: 5, shuffle: true, seed: 7, dropLast: true });
    const seen = all(dropped, 0).flatMap((b) => b.indices);
    expect(seen).toHaveLength(20);
    expect(new Set(seen).size).toBe(20);
    expect(all(dropped, 0).every((b) => b.shape[0] === 5)).toBe(true);
  });

  test('seeded shuffling: same seed → same order; other seeds and epochs → other orders', () => {
    const order = (seed: number, epoch: number) =>
      all(new DataLoader(examples, tok, labels, { batchSize: 4, shuffle: true, seed }), epoch).flatMap((b) => b.indices);
    expect(order(1, 0)).toEqual(order(1, 0));
    expect(order(1, 3)).toEqual(order(1, 3));
    expect(order(1, 0)).not.toEqual(order(2, 0));
    expect(order(1, 0)).not.toEqual(order(1, 1));
    expect(order(1, 0)).not.toEqual(examples.map((_, i) => i));
    expect(shuffledIndices(1000, 42, 5)).toEqual(shuffledIndices(1000, 42, 5));
    expect(shuffledIndices(1000, 42, 5)).not.toEqual(shuffledIndices(1000, 43, 5));
  });

  test('batchAt(e, i) equals the i-th batch of epoch e (random access for resume)', () => {
    const a = new DataLoader(examples, tok, labels, { batchSize: 4, shuffle: true, seed: 3 });
    const b = new DataLoader(examples, tok, labels, { batchSize: 4, shuffle: true, seed: 3 });
    for (const epoch of [0, 4]) {
      const batches = all(a, epoch);
      expect(batches).toHaveLength(a.length);
      // b reads out of order, jumping between epochs
      for (let i = batches.length - 1; i >= 0; i--) {
        b.batchAt(epoch + 1, 0);
        expect(b.batchAt(epoch, i)).toEqual(batches[i]);
      }
    }
    expect([...a.epochBatches(2, 3)]).toEqual(all(a, 2).slice(3));
    expect(() => a.batchAt(0, a.length)).toThrow(/batch index 6 out of range \(an epoch has 6 batches\)/);
  });

  test('state / restore / iterate resume at the same batch', () => {
    const a = new DataLoader(examples, tok, labels, { batchSize: 4, shuffle: true, seed: 11 });
    const full = [...a.iterate({ epoch: 0, index: 0 }, 3)];
    expect(full).toHaveLength(18);
    const saved = JSON.parse(JSON.stringify(a.state({ epoch: 1, index: 2 })));
    const b = new DataLoader(examples, tok, labels, { batchSize: 4, shuffle: true, seed: 11 });
    const pos = b.restore(saved);
    expect(pos).toEqual({ epoch: 1, index: 2 });
    expect([...b.iterate(pos, 3)]).toEqual(full.slice(8));
    // the end of an epoch is the start of the next
    expect(a.state({ epoch: 0, index: 6 })).toMatchObject({ epoch: 1, index: 0 });
    const other = new DataLoader(examples, tok, labels, { batchSize: 8, shuffle: true, seed: 11 });
    expect(() => other.restore(saved)).toThrow(/settings changed.*batchSize 4 → 8/);
    const changed = new DataLoader(examples.slice().reverse(), tok, labels, { batchSize: 4, shuffle: true, seed: 11 });
    expect(() => changed.restore(saved)).toThrow(/dataHash/);
  });

  test('pairs and unknown labels', async () => {
    const pairs = await readExamples(path.join(DATA, 'pairs.jsonl'));
    const lm = LabelMap.fromExamples(pairs);
    const loader = new DataLoader(pairs, tok, lm, { batchSize: 3 });
    const b = loader.batchAt(0, 0);
    expect(b.labels).toEqual([1, 0, 2]);
    expect(Array.from(b.tokenTypeIds.slice(0, b.lengths[0]))).toEqual(tok.encode(pairs[0].text, pairs[0].textPair).typeIds);
    expect(b.tokenTypeIds.slice(0, b.lengths[0])).toContain(1);
    expect(() => new DataLoader([...pairs, { text: 'x', label: 7 }], tok, lm, { batchSize: 2 }))
      .toThrow("example 3: unknown label '7' (known: 0, 1, 2)");
  });
});
