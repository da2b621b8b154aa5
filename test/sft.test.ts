// Instruction tuning on a frozen decoder: answer-only labels through a chat template (and without
// one), data formats and their errors, training that lowers the loss, exact resume, and the CLI.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { encodeSft, loadDecoder, NonFiniteError, packSft, padPackedBatch, padSftBatch, readSftExamples, renderChat, sft, Tokenizer } from '../lib';
import { expectClose } from './helpers';
import { byteChars } from './decoderFixture';
import { ggufTokenizerFiles } from '../lib/train/tokenizer';
import { tinyChatTokenizerMetadata, writeTinyChatModel } from './decoderFixture';

const SEED = Math.floor(Math.random() * 2 ** 31);
const CLI = path.join(__dirname, '..', 'dist', 'lib', 'cli.js');
let work: string;
let n = 0;
const dirOf = () => path.join(work, `d${n++}`);
beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-sft-'));
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

const files = () => ggufTokenizerFiles(tinyChatTokenizerMetadata());
const chatTok = () => Tokenizer.fromGgufMetadata(tinyChatTokenizerMetadata());
const EXAMPLES = [
  { prompt: 'say the', response: 'the the' },
  { instruction: 'repeat', input: 'tea', output: 'tea tea' },
  { messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hi' }, { role: 'assistant', content: 'he' }, { role: 'user', content: 'again' }, { role: 'assistant', content: 'the' }] },
];

function writeJsonl(rows: unknown[]): string {
  const f = path.join(work, `data${n++}.jsonl`);
  fs.writeFileSync(f, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return f;
}

describe(`SFT data (seed ${SEED})`, () => {
  test('labels fall on the assistant\'s tokens only, every assistant turn, with the end-of-turn marker', async () => {
    const tok = chatTok();
    const data = await readSftExamples(writeJsonl(EXAMPLES));
    expect(data[1].messages).toEqual([{ role: 'user', content: 'repeat\n\ntea' }, { role: 'assistant', content: 'tea tea' }]);
    const e = encodeSft(tok, data[2]);
    const full = renderChat(tok, data[2].messages);
    expect(tok.decode(e.ids, { skipSpecialTokens: false })).toBe(full);
    const labelled = e.ids.map((id, i) => (e.labels[i] === -100 ? null : id));
    const runs: string[] = [];
    let cur: number[] = [];
    labelled.forEach((id) => {
      if (id === null) {
        if (cur.length) runs.push(tok.decode(cur, { skipSpecialTokens: false }));
        cur = [];
      } else cur.push(id);
    });
    if (cur.length) runs.push(tok.decode(cur, { skipSpecialTokens: false }));
    expect(runs).toEqual(['he<|im_end|>\n', 'the<|im_end|>\n']);
  });

  test('without a chat template: "prompt\\n" then the answer and EOS, labels on the answer and EOS', () => {
    const tok = Tokenizer.fromGgufMetadata(tinyChatTokenizerMetadata(null));
    const e = encodeSft(tok, { messages: [{ role: 'user', content: 'say' }, { role: 'assistant', content: 'the' }] });
    expect(tok.decode(e.ids, { skipSpecialTokens: false })).toBe('say\nthe<|im_end|>');
    expect(tok.decode(e.ids.filter((_, i) => e.labels[i] !== -100), { skipSpecialTokens: false })).toBe('the<|im_end|>');
    expect(() => encodeSft(tok, { messages: [{ role: 'user', content: 'a long prompt here' }, { role: 'assistant', content: 'x' }] }, { maxLength: 5 }))
      .toThrow(/no answer token is left within maxLength 5/);
  });

  test('bad rows name the file, the line and what is wrong', async () => {
    const bad = [
      ['{"prompt": "x"}', /:1: 'response' must be a string, got nothing/],
      ['{"messages": [{"role": "user", "content": "x"}]}', /:1: no assistant message to learn from/],
      ['{"messages": [{"role": "robot", "content": "x"}]}', /:1: messages\[0\]\.role 'robot' is not system, user or assistant/],
      ['{"text": "x"}', /:1: expected \{prompt, response\}, \{instruction, input\?, output\} or \{messages\} \(found keys: text\)/],
      ['{"prompt": "a", "response": "b"}\nnot json', /:2: invalid JSON/],
    ] as const;
    for (const [text, msg] of bad) {
      const f = path.join(work, `bad${n++}.jsonl`);
      fs.writeFileSync(f, text);
      await expect(readSftExamples(f)).rejects.toThrow(msg);
    }
  });
});

describe(`sft (seed ${SEED})`, () => {
  const data = Array.from({ length: 12 }, (_, i) => ({ messages: [{ role: 'user', content: `word ${i % 3}` }, { role: 'assistant', content: ['the', 'he', 'tea'][i % 3] }] }));

  test('training lowers the answer loss; eval reports loss and perplexity; only the adapter changes', async () => {
    const dir = writeTinyChatModel(dirOf(), SEED, files());
    const model = await loadDecoder(dir, { device: 'cpu' });
    model.addAdapter('chat', { config: 'seq_bn', reductionFactor: 4 }, { seed: 1 });
    const before = [...model.weights.all.values()].map((t) => t.toArray());
    const log: Record<string, unknown>[] = [];
    const res = await sft({ model, adapter: 'chat', trainData: data, evalData: data, steps: 24, batchSize: 4, lr: 1e-2, evalEvery: 6, progress: false, onLog: (e) => log.push(e) });
    const evals = log.filter((e) => e.event === 'eval') as unknown as { loss: number; perplexity: number }[];
    expect(evals).toHaveLength(4);
    expect(evals[3].loss).toBeLessThan(evals[0].loss * 0.8);
    expect(evals[3].perplexity).toBeCloseTo(Math.exp(evals[3].loss), 6);
    expect(res.final!.loss).toBe(evals[3].loss);
    expect(res.steps).toBe(24);
    [...model.weights.all.values()].forEach((t, i) => expect(Array.from(t.toArray())).toEqual(Array.from(before[i])));
    model.dispose();
  });

  test('6 steps straight equal 3 steps, a checkpoint, and 3 resumed steps (bitwise)', async () => {
    const dir = writeTinyChatModel(dirOf(), SEED, files());
    const run = async (extra: Record<string, unknown>) => {
      const model = await loadDecoder(dir, { device: 'cpu' });
      model.addAdapter('chat', 'seq_bn', { seed: 3 });
      return { model, res: await sft({ model, adapter: 'chat', trainData: data, steps: 6, batchSize: 3, lr: 5e-3, progress: false, seed: 9, ...extra }) };
    };
    const straight = await run({});
    const ck = dirOf();
    const first = await run({ checkpointDir: ck, checkpointEvery: 3, stopAfter: 3 });
    expect(first.res.steps).toBe(3);
    const second = await run({ checkpointDir: ck, checkpointEvery: 3, resume: true });
    expect(second.res.steps).toBe(6);
    const a = straight.model.adapterParameters('chat');
    for (const [k, t] of second.model.adapterParameters('chat')) expect(Array.from(t.toArray())).toEqual(Array.from(a.get(k)!.toArray()));
    for (const m of [straight.model, first.model, second.model]) m.dispose();
  });

  test('fused-adapters sft trains and saves an adapter that loads; outputs never land on the data', async () => {
    const dir = writeTinyChatModel(dirOf(), SEED, files());
    const train = writeJsonl(data);
    const out = path.join(work, 'chat-adapter');
    const r = spawnSync(process.execPath, [CLI, 'sft', '--model', dir, '--data', train, '--steps', '4', '--batch-size', '4', '--lr', '1e-2', '--out', out, '--log', path.join(work, 'sft-log.jsonl')],
      { encoding: 'utf8', env: { ...process.env, FUSED_ADAPTERS_DEVICE: 'cpu' } });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/saved adapter 'chat-adapter' to /);
    const model = await loadDecoder(dir, { device: 'cpu' });
    expect(model.loadAdapter(out).name).toBe('chat-adapter');
    model.dispose();
    const refused = spawnSync(process.execPath, [CLI, 'sft', '--model', dir, '--data', train, '--out', path.join(work, 'x'), '--log', train], { encoding: 'utf8' });
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/--log .* is the --data input/);
  });

  test('a batch whose loss is not finite stops training, naming where; skipNonFinite skips just those steps', async () => {
    const zId = byteChars().indexOf('z'); // the token of the byte 'z' is poisoned
    const dir = writeTinyChatModel(dirOf(), SEED, files(), {
      edit: (t) => { (t['model.embed_tokens.weight'].data as Float32Array).fill(NaN, zId * 48, (zId + 1) * 48); },
    });
    const rows = data.map((d, i) => (i === 5 ? { messages: [{ role: 'user', content: 'zzz' }, { role: 'assistant', content: 'he' }] } : d));
    const model = await loadDecoder(dir, { device: 'cpu', allowNonFinite: true });
    model.addAdapter('chat', 'seq_bn', { seed: 2 });
    const err = await sft({ model, adapter: 'chat', trainData: rows, steps: 12, batchSize: 1, progress: false }).then(() => null, (e) => e);
    expect(err).toBeInstanceOf(NonFiniteError);
    expect(err.message).toMatch(/^sft: step \d+: forward: non-finite values \(NaN .*\) first appear in embeddings/);
    const res = await sft({ model, adapter: 'chat', trainData: rows, steps: 12, batchSize: 1, progress: false, skipNonFinite: true });
    expect(res.skippedSteps).toBe(1);
    for (const t of model.adapterParameters('chat').values()) expect(t.toArray().every(Number.isFinite)).toBe(true);
    model.dispose();
  });

  test('packing: several examples per row give each token the logits and the loss it has alone; sft trains packed', async () => {
    const dir = writeTinyChatModel(dirOf(), SEED, files());
    const model = await loadDecoder(dir, { device: 'cpu' });
    const tok = chatTok();
    const rows = data.slice(0, 5).map((d) => encodeSft(tok, d));
    const packed = packSft(rows, 64);
    expect(packed.length).toBeLessThan(rows.length);
    expect(packed.flatMap((p) => p.ids)).toEqual(rows.flatMap((r) => r.ids));
    const batch = padPackedBatch(packed, tok.padId);
    const pk = model.forward({ inputIds: batch.inputIds, attentionMask: batch.attentionMask, segmentIds: batch.segmentIds }, { labels: batch.labels });
    const alone = padSftBatch(rows, tok.padId);
    const al = model.forward({ inputIds: alone.inputIds, attentionMask: alone.attentionMask }, { labels: alone.labels });
    expect(pk.lossValue!).toBeCloseTo(al.lossValue!, 5);
    // the logits of example 1's tokens: its own row alone vs its segment in the first packed row
    const V = model.config.vocabSize;
    const Ta = alone.inputIds[0].length;
    const Tp = batch.inputIds[0].length;
    const n1 = rows[1].ids.length;
    const a = al.logits.toArray().slice((1 * Ta + (Ta - n1)) * V, (2 * Ta) * V);
    const offP = (Tp - packed[0].ids.length) + rows[0].ids.length; // example 1 follows example 0 in packed row 0
    const p = pk.logits.toArray().slice(offP * V, (offP + n1) * V);
    expectClose(p, a, 1e-5, 1e-5);
    pk.dispose();
    al.dispose();
    model.attentionPath = 'unfused';
    expect(() => model.forward({ inputIds: batch.inputIds, segmentIds: batch.segmentIds })).toThrow(/segmentIds need the fused attention path/);
    model.attentionPath = 'auto';
    model.addAdapter('chat', 'seq_bn', { seed: 4 });
    const res = await sft({ model, adapter: 'chat', trainData: data, steps: 4, batchSize: 2, packing: true, maxLength: 64, progress: false });
    expect(res.steps).toBe(4);
    model.dispose();
  });
});
