// Generation with a KV cache: the same tokens and logits as recomputing the whole sequence at every
// step, batched prompts of different lengths equal to each alone, seeded sampling, stop strings,
// limits, cancelling a stream, and the adapter a call asks for.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { generate, generateText, loadDecoder, memoryStats, streamText, streamTokens, Tokenizer } from '../lib';
import type { Decoder, GenerateStats } from '../lib';
import { decodeStep, prefill } from '../lib/generation/cached';
import { PagedKVCache } from '../lib/generation/cache';
import { ggufTokenizerFiles } from '../lib/train/tokenizer';
import { tinyChatTokenizerMetadata, writeTinyChatModel, writeTinyGpt2, writeTinyLlama } from './decoderFixture';
import { expectClose } from './helpers';

const SEED = process.env.FA_TEST_SEED ? Number(process.env.FA_TEST_SEED) : Math.floor(Math.random() * 2 ** 31);
let work: string;
let n = 0;
const dirOf = () => path.join(work, `g${n++}`);
beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-generate-'));
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** Greedy generation by recomputing the whole sequence each step (no cache). */
function greedyRecompute(model: Decoder, prompt: number[], steps: number): { tokens: number[]; logits: Float32Array[] } {
  const seq = [...prompt];
  const logits: Float32Array[] = [];
  const V = model.config.vocabSize;
  for (let i = 0; i < steps; i++) {
    const out = model.forward({ inputIds: [seq] });
    const last = out.logits.toArray().slice((seq.length - 1) * V, seq.length * V);
    out.dispose();
    logits.push(last);
    let best = 0;
    for (let v = 1; v < V; v++) if (last[v] > last[best]) best = v;
    seq.push(best);
  }
  return { tokens: seq.slice(prompt.length), logits };
}

describe(`generation (seed ${SEED})`, () => {
  for (const [arch, write] of [['llama', writeTinyLlama], ['gpt2', writeTinyGpt2]] as const)
    test(`${arch}: KV-cache greedy generation equals recomputing the sequence at every step (tokens and logits)`, async () => {
      const model = await loadDecoder(write(dirOf(), SEED), { device: 'cpu' });
      model.addAdapter('a', { config: 'double_seq_bn', reductionFactor: 4 }, { seed: 3 });
      for (const t of model.adapterParameters('a').values()) t.copyFrom(Float32Array.from({ length: t.size }, (_, i) => Math.sin(i * 0.7 + t.size) * 0.2));
      model.setActiveAdapter('a');
      const prompt = [5, 17, 3, 44, 90];
      const want = greedyRecompute(model, prompt, 12);
      // the cached path step by step, to compare logits too
      const cache = new PagedKVCache(model, { pages: 7, pageSize: 3 }); // 17 tokens over pages of 3
      const id = cache.add();
      let logits = prefill(model, cache, [id], [prompt]);
      for (let i = 0; i < 12; i++) {
        expectClose(logits.toArray(), want.logits[i], 1e-4, 1e-5);
        logits.dispose();
        if (i < 11) logits = decodeStep(model, cache, [id], [want.tokens[i]]);
      }
      expect(cache.length(id)).toBe(prompt.length + 11);
      cache.dispose();
      expect(await generate(model, [prompt], { maxNewTokens: 12 })).toEqual([want.tokens]);
      expect(cache.bytesPerToken).toBe(2 * model.config.numLayers * model.config.numKvHeads * model.config.headDim * 4);
      model.dispose();
    });

  test('batched prompts of different lengths (paged, right-padded prefill) give each row what it gives alone; stats are reported', async () => {
    const model = await loadDecoder(writeTinyLlama(dirOf(), SEED), { device: 'cpu' });
    const prompts = [[5, 17, 3], [8, 1, 44, 90, 12, 7], [60]];
    const stats: GenerateStats[] = [];
    const together = await generate(model, prompts, { maxNewTokens: 8, onStats: (st) => stats.push(st) });
    expect(stats).toHaveLength(1);
    const c = model.config;
    expect(stats[0]).toMatchObject({ promptTokens: 10, newTokens: together.flat().length, cacheBytesPerToken: 2 * c.numLayers * c.numKvHeads * c.headDim * 4 });
    // pages of 16 for 3 + 8, 6 + 8 and 1 + 8 tokens: one page each
    expect(stats[0].cacheBytes).toBe(3 * 16 * stats[0].cacheBytesPerToken);
    for (let i = 0; i < prompts.length; i++) expect(together[i]).toEqual((await generate(model, [prompts[i]], { maxNewTokens: 8 }))[0]);
    model.dispose();
  });

  test('seeded sampling: the same seed gives the same tokens, another seed others; options are checked', async () => {
    const model = await loadDecoder(writeTinyLlama(dirOf(), SEED), { device: 'cpu' });
    const o = { maxNewTokens: 16, temperature: 1.5, topK: 40, topP: 0.95, repetitionPenalty: 1.2 };
    const a = await generate(model, [[5, 17, 3]], { ...o, seed: 1 });
    expect(await generate(model, [[5, 17, 3]], { ...o, seed: 1 })).toEqual(a);
    const others = await Promise.all([2, 3, 4].map((seed) => generate(model, [[5, 17, 3]], { ...o, seed })));
    expect(others.some((x) => JSON.stringify(x) !== JSON.stringify(a))).toBe(true);
    await expect(generate(model, [[1]], { temperature: -1 })).rejects.toThrow(/temperature must be >= 0/);
    await expect(generate(model, [[1]], { topP: 0 })).rejects.toThrow(/topP must be in \(0, 1\]/);
    await expect(generate(model, [[]])).rejects.toThrow(/prompt 0 is empty/);
    expect(await generate(model, [[1, 2]], { maxNewTokens: 0 })).toEqual([[]]);
    model.dispose();
  });

  test('a prompt beyond the learned positions is refused; stopping a stream early frees its cache', async () => {
    const gpt2 = await loadDecoder(writeTinyGpt2(dirOf(), SEED), { device: 'cpu' }); // 64 positions
    await expect(generate(gpt2, [new Array(60).fill(3)], { maxNewTokens: 10 })).rejects.toThrow(/60 prompt tokens \+ 10 new ones exceed the model's 64 positions/);
    const llama = await loadDecoder(writeTinyLlama(dirOf(), SEED), { device: 'cpu' }); // max_position_embeddings 128
    await expect(generate(llama, [new Array(120).fill(3)], { maxNewTokens: 9 })).rejects.toThrow(/120 prompt tokens \+ 9 new ones exceed the model's 128 positions/);
    expect((await generate(llama, [new Array(120).fill(3)], { maxNewTokens: 8 }))[0]).toHaveLength(8);
    llama.dispose();
    const live = memoryStats('cpu').liveTensors;
    let count = 0;
    for await (const t of streamTokens(gpt2, [[1, 2, 3]], { maxNewTokens: 50 })) {
      expect(t.row).toBe(0);
      if (++count === 3) break;
    }
    expect(count).toBe(3);
    expect(memoryStats('cpu').liveTensors).toBeLessThanOrEqual(live);
    gpt2.dispose();
  });

  test('text and chat: the tokenizer\'s EOS ends it, stop strings cut it, streamed pieces add up; the adapter of a call', async () => {
    const files = ggufTokenizerFiles(tinyChatTokenizerMetadata());
    const dir = writeTinyChatModel(dirOf(), SEED, files);
    const model = await loadDecoder(dir, { device: 'cpu' });
    const tok = await Tokenizer.fromDir(dir);
    const chat = [{ role: 'user', content: 'the tea' }];
    const full = await generateText(model, tok, chat, { maxNewTokens: 20 });
    let streamed = '';
    for await (const piece of streamText(model, tok, chat, { maxNewTokens: 20 })) streamed += piece;
    expect(streamed).toBe(full);
    expect(await model.generate(chat, { maxNewTokens: 20 })).toBe(full); // the tokenizer from the model's directory
    if (full.length > 2) {
      const stop = full.slice(1, 2);
      const cut = await generateText(model, tok, chat, { maxNewTokens: 20, stop: [stop] });
      expect(cut).toBe(full.slice(0, full.indexOf(stop)));
    }
    // an adapter for one call: active during it, the previous state after
    model.addAdapter('x', { config: 'seq_bn', reductionFactor: 2 }, { seed: 9 });
    for (const t of model.adapterParameters('x').values()) t.copyFrom(Float32Array.from({ length: t.size }, (_, i) => Math.cos(i + t.size)));
    const ids = tok.encode('the').ids;
    const plain = await generate(model, [ids], { maxNewTokens: 10 });
    const adapted = await generate(model, [ids], { maxNewTokens: 10, adapter: 'x' });
    expect(model.active).toBeNull();
    expect(adapted).not.toEqual(plain);
    model.setActiveAdapter('x');
    expect(await generate(model, [ids], { maxNewTokens: 10 })).toEqual(adapted);
    model.dispose();
  });

  test('fused-adapters generate and chat stream the same text as the API', async () => {
    const CLI = path.join(__dirname, '..', 'dist', 'lib', 'cli.js');
    const files = ggufTokenizerFiles(tinyChatTokenizerMetadata());
    const dir = writeTinyChatModel(dirOf(), SEED, files);
    const model = await loadDecoder(dir, { device: 'cpu' });
    const tok = await Tokenizer.fromDir(dir);
    const want = await generateText(model, tok, 'the tea', { maxNewTokens: 8 });
    const wantChat = await generateText(model, tok, [{ role: 'user', content: 'hi' }], { maxNewTokens: 8 });
    model.dispose();
    const env = { ...process.env, FUSED_ADAPTERS_DEVICE: 'cpu' };
    const g = spawnSync(process.execPath, [CLI, 'generate', '--model', dir, '--max-new-tokens', '8', 'the', 'tea'], { encoding: 'utf8', env });
    expect(g.stderr).toBe('');
    expect(g.status).toBe(0);
    expect(g.stdout).toBe(`${want}\n`);
    const c = spawnSync(process.execPath, [CLI, 'chat', '--model', dir, '--max-new-tokens', '8'], { encoding: 'utf8', env, input: 'hi\nthe\n' });
    expect(c.stderr).toBe('');
    expect(c.status).toBe(0);
    // an answer may itself hold newlines: the first answer, its newline, then the second answer's line
    expect(c.stdout.startsWith(`${wantChat}\n`)).toBe(true);
    expect(c.stdout.length).toBeGreaterThan(wantChat.length + 1);
    expect(c.stdout.endsWith('\n')).toBe(true);
    const st = spawnSync(process.execPath, [CLI, 'generate', '--model', dir, '--max-new-tokens', '8', '--stats', '--repetition-penalty', '1.3', 'the', 'tea'], { encoding: 'utf8', env });
    expect(st.status).toBe(0);
    expect(st.stderr).toMatch(/^\[\d+ prompt tokens in [\d.]+ s; \d+ new tokens, [\d.]+ tokens\/s decoding; KV cache [\d.]+ KiB per token, [\d.]+ MiB held\]\n$/);
    const empty = spawnSync(process.execPath, [CLI, 'generate', '--model', dir], { encoding: 'utf8', env, input: '' });
    expect(empty.status).toBe(1);
    expect(empty.stderr).toMatch(/the prompt is empty/);
  });

  for (const cfg of ['seq_bn', 'double_seq_bn', 'par_bn'] as const)
    test(`a different ${cfg} adapter per row in one batch gives each row what it gives alone with its adapter`, async () => {
      const model = await loadDecoder(writeTinyLlama(dirOf(), SEED), { device: 'cpu' });
      for (const [k, name] of ['a', 'b', 'c'].entries()) {
        model.addAdapter(name, { config: cfg, reductionFactor: 4 }, { seed: 10 + k });
        for (const t of model.adapterParameters(name).values()) t.copyFrom(Float32Array.from({ length: t.size }, (_, i) => Math.sin(i * (k + 1) + t.size) * 0.3));
      }
      const prompts = [[5, 17, 3], [8, 1, 44, 90], [60, 2], [9, 9, 9]];
      const adapters = ['a', null, 'c', 'b'];
      const together = await generate(model, prompts, { maxNewTokens: 6, adapters });
      for (let i = 0; i < prompts.length; i++)
        expect({ row: i, ids: together[i] }).toEqual({ row: i, ids: (await generate(model, [prompts[i]], { maxNewTokens: 6, adapter: adapters[i] }))[0] });
      await expect(generate(model, prompts, { adapters: ['a'] })).rejects.toThrow(/one adapter name \(or null\) per prompt \(4\)/);
      model.dispose();
    });
});
