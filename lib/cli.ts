#!/usr/bin/env node
// `fused-adapters train | eval | predict | summary | demo | bench`: the main job from a shell.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { Command, InvalidArgumentError } from 'commander';
import { buildInfo, defaultDevice } from './backend';
import { loadBackbone } from './models/bert/load';
import type { Backbone } from './models/bert/model';
import { configName } from './methods/bottleneck/config';
import { ownsAdapterEntry, warningPrinted } from './adapterhub/files';
import { ownsFusionEntry } from './adapterhub/fusionFiles';
import { Fuse, parseComposition } from './adapted/composition';
import type { CompositionBlock } from './adapted/composition';
import { fusesOf } from './adapted/registry';
import { checkOutputPaths, NamedPath } from './outputPaths';
import { ownsCheckpointEntry } from './train/checkpoint';
import { runDemo } from './demo/run';
import { runLlmDemo } from './demo/llm';
import { LabelMap, readExamples } from './train/data';
import { softmaxRows } from './train/metrics';
import { Tokenizer } from './train/tokenizer';
import { evaluate, train } from './train/trainer';
import { loadDecoder } from './models/decoder/load';
import { sft } from './train/sft';
import { streamText, GenerateOptions } from './generation/generate';
import type { ChatMessage } from './train/chat';
import type { Decoder } from './models/decoder/model';
import { createInterface } from 'readline';
import { createServer } from './serve/server';
import { decoderTokenizer } from './serve/open';

function int(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}
function float(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number');
  return n;
}
function device(v: string): string {
  if (v === 'cuda') return 'cuda:0';
  if (v === 'cpu' || /^cuda:\d+$/.test(v)) return v;
  throw new InvalidArgumentError("expected 'cpu', 'cuda' or 'cuda:N'");
}
function collect(v: string, prev: string[]): string[] {
  return [...prev, v];
}
function mustExist(p: string, what: string): string {
  if (!fs.existsSync(p)) throw new Error(`${what} '${p}' does not exist`);
  return p;
}

/** A model directory, or a hub repo id ('org/name'; fetched into or found in the Hugging Face cache). */
function modelSource(p: string): string {
  if (fs.existsSync(p) || /^[A-Za-z0-9][\w.-]*(\/[A-Za-z0-9][\w.-]*)?$/.test(p)) return p;
  throw new Error(`model directory '${p}' does not exist (and it is not a hub repo id like org/name)`);
}

async function openModel(source: string, dev?: string): Promise<{ model: Backbone; tokenizer: Tokenizer }> {
  const model = await loadBackbone(modelSource(source), { device: dev ?? defaultDevice() });
  const tokenizer = await Tokenizer.fromDir(model.dir!);
  return { model, tokenizer };
}

/** An --adapter value: 'dir', or 'name=dir' to load it under another name. */
export function adapterArg(v: string): { name?: string; dir: string } {
  const m = /^([A-Za-z0-9_-]+)=(.+)$/.exec(v);
  return m && !fs.existsSync(v) ? { name: m[1], dir: m[2] } : { dir: v };
}

/** The adapter name a directory suggests: its last component, as letters, digits, '_' and '-'. */
export function nameFromDir(dir: string): string {
  const base = path.basename(path.resolve(dir)).replace(/[^A-Za-z0-9_-]+/g, '_').replace(/^_+|_+$/g, '');
  return base && !['__proto__', 'constructor', 'prototype'].includes(base) ? base : 'task';
}

/** Loads saved adapters (with heads); returns name → labels. Two adapters saved under one name must be named apart. */
function loadAdapters(model: Backbone, specs: string[]): Map<string, (string | number)[]> {
  const out = new Map<string, (string | number)[]>();
  const from = new Map<string, string>();
  for (const spec of specs) {
    const { name, dir } = adapterArg(spec);
    mustExist(dir, 'adapter directory');
    const saved = savedName(dir);
    const as = name ?? saved;
    if (as !== undefined && from.has(as))
      throw new Error(`two adapters are named '${as}' (${from.get(as)} and ${dir}); load them under names of your own: `
        + `--adapter ${nameFromDir(from.get(as)!)}=${from.get(as)} --adapter ${nameFromDir(dir)}=${dir}`);
    const r = model.loadAdapter(dir, name ? { loadAs: name } : {});
    for (const w of r.warnings) if (!warningPrinted(w)) console.error(`warning: ${w}`);
    if (!r.labels) throw new Error(`adapter '${r.name}' in ${dir} has no head with labels; train it with this tool or save it with a head`);
    out.set(r.name, r.labels);
    from.set(r.name, dir);
  }
  return out;
}

/** train's --train / --eval files (with its column options) and the labels they hold; unknown eval labels fail now. */
async function readTrainingData(o: Record<string, any>) { // eslint-disable-line @typescript-eslint/no-explicit-any
  const cols = { textColumn: o.textColumn, pairColumn: o.pairColumn, labelColumn: o.labelColumn, optionNames: CLI_COLUMNS };
  const trainData = await readExamples(mustExist(o.train, 'training file'), cols);
  const evalData = o.eval ? await readExamples(mustExist(o.eval, 'evaluation file'), cols) : undefined;
  const labels = LabelMap.fromExamples(trainData);
  if (evalData) for (const e of evalData) labels.id(e.label);
  return { trainData, evalData, labels };
}

/** Loads saved adapters given as 'dir' or 'name=dir' (heads come along when saved with them). */
function loadAdapterSpecs(model: Backbone, specs: string[]): void {
  for (const spec of specs) {
    const { name: as, dir } = adapterArg(spec);
    const r = model.loadAdapter(mustExist(dir, 'adapter directory'), as ? { loadAs: as } : {});
    for (const w of r.warnings) if (!warningPrinted(w)) console.error(`warning: ${w}`);
  }
}

/**
 * `train --fuse 'Fuse(a, b)' --load-adapter a=dir ...`: AdapterHub's train_adapter_fusion on the CLI. The
 * adapters are loaded (frozen), the fusion added with --fusion-config, then it and a new head train;
 * --out gets the fusion and the head, as save_adapter_fusion(with_head=True) writes them.
 */
async function trainFusionCommand(o: Record<string, any>): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const setup = parseComposition(o.fuse);
  const fuses = typeof setup === 'string' ? [] : fusesOf(setup);
  if (fuses.length !== 1) throw new Error(`--fuse ${o.fuse}: the setup must hold exactly one Fuse(...) block`);
  if (!o.loadAdapter.length) throw new Error('--fuse needs the adapters it fuses: --load-adapter <dir> (repeat it, or name=dir)');
  const name = o.name ?? nameFromDir(o.out);
  checkOutputPaths('train', [
    { path: o.train, name: '--train' }, { path: o.eval ?? '', name: '--eval' }, ...modelInput(o.model),
    ...o.loadAdapter.map((a: string) => ({ path: adapterArg(a).dir, name: '--load-adapter' })),
  ], [
    { path: o.out, name: '--out', kind: 'dir', owns: ownsFusionEntry },
    { path: o.log ?? '', name: '--log', kind: 'file' },
    { path: o.checkpointDir ?? '', name: '--checkpoint-dir', kind: 'dir', owns: ownsCheckpointEntry },
  ]);
  const { trainData, evalData, labels } = await readTrainingData(o);
  const { model, tokenizer } = await openModel(o.model, o.device);
  loadAdapterSpecs(model, o.loadAdapter);
  const fusion = model.addFusion(fuses[0], o.fusionConfig);
  if (model.head(name)) model.deleteHead(name); // a loaded adapter's head of the same name: the fusion gets a new one
  console.log(`training fusion '${fusion}' (${o.fusionConfig}) with head '${name}' on ${model.device}: ${plural(trainData.length, 'example')}, ${plural(labels.size, 'label')}`);
  const res = await train({
    model, fusion: setup, head: name, tokenizer, trainData, evalData, labels, epochs: o.epochs, lr: o.lr, batchSize: o.batchSize,
    maxLength: o.maxLength, seed: o.seed, logFile: o.log, checkpointDir: o.checkpointDir, resume: !!o.resume,
    checkpointEvery: o.checkpointDir ? 50 : undefined, skipNonFinite: !!o.skipNonFinite,
  });
  model.saveFusion(o.out, fusion, { head: name, labels: labels.labels });
  if (res.final) console.log(`eval: accuracy ${(100 * res.final.accuracy).toFixed(2)}%, macro-F1 ${res.final.macroF1.toFixed(4)}, loss ${res.final.loss.toFixed(4)}`);
  console.log(`${plural(res.steps, 'step')}, ${(res.secondsPerStep * 1000).toFixed(1)} ms/step; saved fusion '${fusion}' and head '${name}' to ${o.out}`);
}

/** `predict --fusion dir`: every text through the fusion's composition and the head saved with it. */
async function predictFused(model: Backbone, tokenizer: Tokenizer, o: Record<string, any>, texts: string[]): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any
  loadAdapterSpecs(model, o.adapter);
  const dir = mustExist(o.fusion, 'fusion directory');
  const fusion = model.loadFusion(dir);
  if (!fs.existsSync(path.join(dir, 'head_config.json'))) throw new Error(`${dir} has no head (train it with 'train --fuse', which saves one beside the fusion)`);
  const head = model.loadHead(dir, { loadAs: `${nameFromDir(dir)}_head` });
  if (!head.labels) throw new Error(`the head in ${dir} has no labels`);
  const setup: CompositionBlock | string = o.setup !== undefined ? parseComposition(o.setup) : Fuse(...model.fusionAdapters(fusion));
  model.setActiveAdapters(setup);
  model.setActiveHead(head.name);
  for (const text of texts.length ? texts : await readLines()) {
    const enc = tokenizer.encodeBatch([text]);
    const r = await model.forwardAsync({ inputIds: enc.inputIds, attentionMask: enc.attentionMask, tokenTypeIds: enc.tokenTypeIds, shape: enc.shape });
    const probs = softmaxRows(r.logits!.toArray(), r.logits!.shape[1])[0];
    r.dispose();
    const best = probs.indexOf(Math.max(...probs));
    const probabilities = Object.fromEntries(head.labels.map((l, i) => [String(l), Number(probs[i].toFixed(6))]));
    console.log(JSON.stringify({ setup: String(setup), text, label: head.labels[best], probabilities }));
  }
}

/** The name an adapter directory was saved under (adapter_config.json's name), if readable. */
function savedName(dir: string): string | undefined {
  try {
    const n = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8')).name;
    return typeof n === 'string' ? n : undefined;
  } catch {
    return undefined; // loadAdapter gives the real error
  }
}

/** The local model directory among the inputs (a hub id is not a path). */
function modelInput(model: string): NamedPath[] {
  return fs.existsSync(model) ? [{ path: model, name: '--model' }] : [];
}

const CLI_COLUMNS = { text: '--text-column', pair: '--pair-column', label: '--label-column' };

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

async function readLines(): Promise<string[]> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8').split('\n').map((l) => l.trim()).filter(Boolean);
}

export function makeProgram(): Command {
  const program = new Command('fused-adapters')
    .description('Adapter fine-tuning of frozen transformers, fused on NVIDIA GPUs and correct on the CPU')
    .version(buildInfo().version);

  program.command('train')
    .description('train one adapter (and a classification head) on a frozen model')
    .requiredOption('--model <dir|id>', 'Hugging Face model directory (config.json, model.safetensors, tokenizer.json) or hub repo id')
    .requiredOption('--train <file>', 'training data (.jsonl or .csv with text[, text_pair] and label)')
    .option('--eval <file>', 'evaluation data')
    .option('--adapter <config>', 'seq_bn | double_seq_bn | par_bn (or pfeiffer, houlsby, parallel)', 'seq_bn')
    .option('--name <name>', "adapter and head name (default: the --out folder's name)")
    .option('--reduction-factor <n>', 'hidden size / bottleneck size', float)
    .option('--epochs <n>', 'epochs', int, 3)
    .option('--lr <x>', 'learning rate', float, 1e-4)
    .option('--batch-size <n>', 'batch size', int, 16)
    .option('--max-length <n>', 'truncate sequences to this many tokens', int, 128)
    .option('--seed <n>', 'seed', int, 42)
    .option('--device <device>', 'cpu | cuda | cuda:N', device)
    .option('--text-column <name>', 'text column', 'text')
    .option('--pair-column <name>', "second text column (default: 'text_pair' when present)")
    .option('--label-column <name>', 'label column', 'label')
    .option('--log <file>', 'JSONL training log')
    .option('--checkpoint-dir <dir>', 'save checkpoints here (and resume from them with --resume)')
    .option('--resume', 'resume from --checkpoint-dir')
    .option('--skip-non-finite', 'skip steps whose loss or gradients are NaN/Infinity (default: stop with an error naming where they appeared)')
    .option('--fuse <setup>', "train an AdapterFusion over saved adapters instead, e.g. 'Fuse(a, b, c)' (with --load-adapter)")
    .option('--load-adapter <dir>', 'a saved adapter the fusion attends over (or name=dir; repeat)', collect, [])
    .option('--fusion-config <name>', 'dynamic | static (AdapterHub\'s fusion configs)', 'dynamic')
    .requiredOption('--out <dir>', 'where to save the adapter, or the fusion and its head (AdapterHub format)')
    .action(async (o) => {
      if (o.fuse !== undefined) return trainFusionCommand(o);
      if (o.loadAdapter.length) throw new Error('--load-adapter is for --fuse (the adapters a fusion attends over)');
      const config = configName(o.adapter);
      if (o.resume && !o.checkpointDir) throw new Error('--resume needs --checkpoint-dir (the directory to resume from)');
      const name = o.name ?? nameFromDir(o.out);
      // every output checked before anything runs: not an input, creatable, not holding other files
      checkOutputPaths('train', [
        { path: o.train, name: '--train' }, { path: o.eval ?? '', name: '--eval' }, ...modelInput(o.model),
      ], [
        { path: o.out, name: '--out', kind: 'dir', owns: ownsAdapterEntry },
        { path: o.log ?? '', name: '--log', kind: 'file' },
        { path: o.checkpointDir ?? '', name: '--checkpoint-dir', kind: 'dir', owns: ownsCheckpointEntry },
      ]);
      const { trainData, evalData, labels } = await readTrainingData(o);
      const { model, tokenizer } = await openModel(o.model, o.device);
      model.addAdapter(name, o.reductionFactor ? { config, reductionFactor: o.reductionFactor } : config);
      console.log(`training adapter '${name}' (${config}) on ${model.device}: ${plural(trainData.length, 'example')}, ${plural(labels.size, 'label')}`);
      const res = await train({
        model, adapter: name, tokenizer, trainData, evalData, labels, epochs: o.epochs, lr: o.lr, batchSize: o.batchSize,
        maxLength: o.maxLength, seed: o.seed, logFile: o.log, checkpointDir: o.checkpointDir, resume: !!o.resume,
        checkpointEvery: o.checkpointDir ? 50 : undefined, skipNonFinite: !!o.skipNonFinite,
      });
      model.saveAdapter(o.out, name, { labels: labels.labels });
      console.log(model.summary());
      if (res.final) console.log(`eval: accuracy ${(100 * res.final.accuracy).toFixed(2)}%, macro-F1 ${res.final.macroF1.toFixed(4)}, loss ${res.final.loss.toFixed(4)}`);
      const skipped = res.skippedSteps ? ` (${plural(res.skippedSteps, 'step')} skipped: not finite)` : '';
      console.log(`${plural(res.steps, 'step')}${skipped}, ${(res.secondsPerStep * 1000).toFixed(1)} ms/step, ${Math.round(res.tokensPerSecond)} tokens/s; `
        + `saved adapter '${name}' to ${o.out}`);
    });

  program.command('sft')
    .description('instruction-tune an adapter on a frozen decoder (GPT-2, LLaMA family; a directory, hub id or .gguf file)')
    .requiredOption('--model <dir|id|file.gguf>', 'decoder: model directory, Hugging Face hub repo id, or a GGUF file')
    .requiredOption('--data <file>', 'JSONL of {prompt, response}, {instruction, input, output} or {messages: [...]}')
    .option('--eval <file>', 'evaluation data (same formats): answer-token loss and perplexity')
    .option('--adapter <config>', 'seq_bn | double_seq_bn | par_bn', 'seq_bn')
    .option('--name <name>', "adapter name (default: the --out folder's name)")
    .option('--reduction-factor <n>', 'hidden size / bottleneck size', float)
    .option('--epochs <n>', 'epochs', int, 1)
    .option('--steps <n>', 'optimizer steps (instead of epochs)', int)
    .option('--lr <x>', 'learning rate', float, 1e-4)
    .option('--batch-size <n>', 'batch size', int, 4)
    .option('--max-length <n>', 'truncate each example to this many tokens', int, 512)
    .option('--seed <n>', 'seed', int, 42)
    .option('--device <device>', 'cpu | cuda | cuda:N', device)
    .option('--log <file>', 'JSONL training log')
    .option('--checkpoint-dir <dir>', 'save checkpoints here (and resume from them with --resume)')
    .option('--resume', 'resume from --checkpoint-dir')
    .option('--skip-non-finite', 'skip steps whose loss or gradients are NaN/Infinity')
    .option('--gradient-checkpointing', 'recompute each layer in the backward pass (less memory)')
    .option('--packing', 'pack several examples into each row of up to --max-length tokens')
    .option('--fuse <setup>', "train an AdapterFusion over saved adapters instead, e.g. 'Fuse(a, b, c)' (with --load-adapter)")
    .option('--load-adapter <dir>', 'a saved adapter the fusion attends over (or name=dir; repeat)', collect, [])
    .option('--fusion-config <name>', 'dynamic | static (AdapterHub\'s fusion configs)', 'dynamic')
    .requiredOption('--out <dir>', 'where to save the adapter, or the fusion and its head (AdapterHub format)')
    .action(async (o) => {
      if (o.fuse !== undefined) return trainFusionCommand(o);
      if (o.loadAdapter.length) throw new Error('--load-adapter is for --fuse (the adapters a fusion attends over)');
      const config = configName(o.adapter);
      if (o.resume && !o.checkpointDir) throw new Error('--resume needs --checkpoint-dir (the directory to resume from)');
      const name = o.name ?? nameFromDir(o.out);
      checkOutputPaths('sft', [{ path: o.data, name: '--data' }, { path: o.eval ?? '', name: '--eval' }, ...modelInput(o.model)], [
        { path: o.out, name: '--out', kind: 'dir', owns: ownsAdapterEntry },
        { path: o.log ?? '', name: '--log', kind: 'file' },
        { path: o.checkpointDir ?? '', name: '--checkpoint-dir', kind: 'dir', owns: ownsCheckpointEntry },
      ]);
      mustExist(o.data, 'data file');
      const model = await loadDecoder(fs.existsSync(o.model) ? o.model : modelSource(o.model), { device: o.device ?? defaultDevice() });
      model.addAdapter(name, o.reductionFactor ? { config, reductionFactor: o.reductionFactor } : config);
      console.log(`instruction-tuning adapter '${name}' (${config}) on ${model.modelName}, ${model.device}`);
      const res = await sft({
        model, adapter: name, trainData: o.data, evalData: o.eval, epochs: o.epochs, steps: o.steps, lr: o.lr, batchSize: o.batchSize,
        maxLength: o.maxLength, seed: o.seed, logFile: o.log, checkpointDir: o.checkpointDir, resume: !!o.resume,
        checkpointEvery: o.checkpointDir ? 50 : undefined, skipNonFinite: !!o.skipNonFinite, checkpointing: !!o.gradientCheckpointing, packing: !!o.packing,
      });
      model.saveAdapter(o.out, name);
      if (res.final) console.log(`eval: answer loss ${res.final.loss.toFixed(4)}, perplexity ${res.final.perplexity.toFixed(3)} over ${res.final.tokens} tokens`);
      const skipped = res.skippedSteps ? ` (${plural(res.skippedSteps, 'step')} skipped: not finite)` : '';
      console.log(`${plural(res.steps, 'step')}${skipped}, ${(res.secondsPerStep * 1000).toFixed(1)} ms/step, ${Math.round(res.tokensPerSecond)} tokens/s; `
        + `saved adapter '${name}' to ${o.out}`);
    });

  const generationOptions = (c: Command) => c
    .requiredOption('--model <dir|id|file.gguf>', 'decoder: model directory, Hugging Face hub repo id, or a GGUF file')
    .option('--adapter <dir>', 'a saved adapter to run (or name=dir)')
    .option('--max-new-tokens <n>', 'tokens to generate at most', int, 256)
    .option('--temperature <x>', 'sampling temperature (0: greedy)', (v: string) => {
      const n = Number(v);
      if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError('expected a number >= 0');
      return n;
    }, 0)
    .option('--top-k <n>', 'sample from the k most likely tokens', int)
    .option('--top-p <x>', 'sample from the smallest set of tokens with this probability', float)
    .option('--repetition-penalty <x>', 'make tokens already in the text less likely (> 1)', float)
    .option('--seed <n>', 'sampling seed', int, 0)
    .option('--stop <text>', 'stop at this text (repeatable)', collect, [])
    .option('--stats', 'print tokens/s and KV-cache memory to stderr at the end')
    .option('--device <device>', 'cpu | cuda | cuda:N', device);

  async function openDecoder(o: { model: string; device?: string; adapter?: string }): Promise<{ model: Decoder; tokenizer: Tokenizer }> {
    const model = await loadDecoder(fs.existsSync(o.model) ? o.model : modelSource(o.model), { device: o.device ?? defaultDevice() });
    const tokenizer = await decoderTokenizer(model, o.model);
    if (o.adapter) {
      const { name, dir } = adapterArg(o.adapter);
      const r = model.loadAdapter(mustExist(dir, 'adapter directory'), name ? { loadAs: name } : {});
      for (const w of r.warnings) if (!warningPrinted(w)) console.error(`warning: ${w}`);
      model.setActiveAdapter(r.name);
    }
    return { model, tokenizer };
  }
  const genOpts = (o: Record<string, unknown>): GenerateOptions => ({
    maxNewTokens: o.maxNewTokens as number, temperature: o.temperature as number, topK: o.topK as number | undefined,
    topP: o.topP as number | undefined, repetitionPenalty: o.repetitionPenalty as number | undefined, seed: o.seed as number,
    stop: o.stop as string[],
    onStats: o.stats ? (st) => console.error(`[${st.promptTokens} prompt tokens in ${st.prefillSeconds.toFixed(2)} s; `
      + `${st.newTokens} new tokens, ${(Math.max(st.newTokens - 1, 0) / Math.max(st.decodeSeconds, 1e-9)).toFixed(1)} tokens/s decoding; `
      + `KV cache ${(st.cacheBytesPerToken / 1024).toFixed(1)} KiB per token, ${(st.cacheBytes / 2 ** 20).toFixed(1)} MiB held]`) : undefined,
  });

  generationOptions(program.command('generate')
    .description('generate text from a prompt with a frozen decoder (and an adapter)')
    .option('--chat', 'treat the prompt as a user message in the model\'s chat template')
    .argument('[prompt...]', 'the prompt (default: stdin)'))
    .action(async (words: string[], o) => {
      const text = words.length ? words.join(' ') : (await readLines()).join('\n');
      if (!text) throw new Error('generate: the prompt is empty (pass it as arguments or on stdin)');
      const { model, tokenizer } = await openDecoder(o);
      const prompt: string | ChatMessage[] = o.chat ? [{ role: 'user', content: text }] : text;
      for await (const piece of streamText(model, tokenizer, prompt, genOpts(o))) process.stdout.write(piece);
      process.stdout.write('\n');
    });

  generationOptions(program.command('chat')
    .description('talk to a frozen decoder (and an adapter) through its chat template; an empty line or Ctrl-D ends'))
    .option('--system <text>', 'a system message first')
    .action(async (o) => {
      const { model, tokenizer } = await openDecoder(o);
      const messages: ChatMessage[] = o.system ? [{ role: 'system', content: o.system }] : [];
      const rl = createInterface({ input: process.stdin, terminal: !!process.stdin.isTTY });
      if (process.stdin.isTTY) process.stdout.write('> ');
      for await (const line of rl) {
        if (!line.trim()) break;
        messages.push({ role: 'user', content: line });
        let answer = '';
        for await (const piece of streamText(model, tokenizer, messages, genOpts(o))) {
          answer += piece;
          process.stdout.write(piece);
        }
        process.stdout.write('\n');
        messages.push({ role: 'assistant', content: answer });
        if (process.stdin.isTTY) process.stdout.write('> ');
      }
      rl.close();
    });

  program.command('eval')
    .description('evaluate a saved adapter on labelled data')
    .requiredOption('--model <dir|id>', 'model directory or Hugging Face hub repo id')
    .requiredOption('--adapter <dir>', "saved adapter directory (or name=dir)")
    .requiredOption('--data <file>', '.jsonl or .csv with text and label')
    .option('--device <device>', 'cpu | cuda | cuda:N', device)
    .option('--batch-size <n>', 'batch size', int, 32)
    .option('--max-length <n>', 'truncate sequences to this many tokens', int, 128)
    .option('--text-column <name>', 'text column', 'text')
    .option('--pair-column <name>', "second text column (default: 'text_pair' when present)")
    .option('--label-column <name>', 'label column', 'label')
    .action(async (o) => {
      const cols = { textColumn: o.textColumn, pairColumn: o.pairColumn, labelColumn: o.labelColumn, optionNames: CLI_COLUMNS };
      const data = await readExamples(mustExist(o.data, 'data file'), cols); // a bad file fails before the model loads
      const { model, tokenizer } = await openModel(o.model, o.device);
      const [[name, labels]] = [...loadAdapters(model, [o.adapter])];
      model.setActiveAdapter(name);
      model.setActiveHead(name);
      const m = await evaluate(model, tokenizer, data, LabelMap.fromList(labels), { batchSize: o.batchSize, maxLength: o.maxLength });
      console.log(JSON.stringify({ adapter: name, ...m }));
    });

  program.command('predict')
    .description('label texts (arguments, or lines on stdin); several adapters are routed by name ("name: text" or --task)')
    .requiredOption('--model <dir|id>', 'model directory or Hugging Face hub repo id')
    .option('--adapter <dir>', 'saved adapter directory, or name=dir to route by another name (repeat for several)', collect, [])
    .option('--task <name>', 'the adapter to use for every text')
    .option('--fusion <dir>', 'a saved AdapterFusion with its head (train --fuse): every text runs through it', )
    .option('--setup <composition>', "with --fusion: the composition to run (default 'Fuse(<its adapters>)'), e.g. 'Stack(lang, Fuse(a, b))'")
    .option('--device <device>', 'cpu | cuda | cuda:N', device)
    .argument('[texts...]')
    .action(async (texts: string[], o) => {
      if (!o.adapter.length) throw new Error('predict needs an adapter: --adapter <dir> (repeat it, or use name=dir, for several)');
      if (o.setup !== undefined && o.fusion === undefined) throw new Error('--setup runs with --fusion (the fusion and head it uses)');
      const { model, tokenizer } = await openModel(o.model, o.device);
      if (o.fusion !== undefined) return predictFused(model, tokenizer, o, texts);
      const adapters = loadAdapters(model, o.adapter);
      const names = [...adapters.keys()].join(', ');
      if (o.task !== undefined && !adapters.has(o.task)) throw new Error(`--task ${o.task}: no adapter of that name (loaded: ${names})`);
      const inputs = texts.length ? texts : await readLines();
      for (const line of inputs) {
        let task = o.task as string | undefined;
        let text = line;
        const m = /^([A-Za-z0-9_-]+):\s*(.*)$/.exec(line);
        if (!task && m && adapters.has(m[1])) [task, text] = [m[1], m[2]];
        if (!task) {
          if (adapters.size !== 1) throw new Error(`which adapter for "${line}"? prefix it with one of ${names} ("name: text") or pass --task`);
          task = [...adapters.keys()][0];
        }
        const labels = adapters.get(task);
        if (!labels) throw new Error(`no adapter named '${task}' (loaded: ${names})`);
        model.setActiveAdapter(task);
        model.setActiveHead(task);
        const enc = tokenizer.encodeBatch([text]);
        const r = model.forward({ inputIds: enc.inputIds, attentionMask: enc.attentionMask, tokenTypeIds: enc.tokenTypeIds, shape: enc.shape });
        const probs = softmaxRows(r.logits!.toArray(), r.logits!.shape[1])[0];
        r.dispose();
        const best = probs.indexOf(Math.max(...probs));
        const probabilities = Object.fromEntries(labels.map((l, i) => [String(l), Number(probs[i].toFixed(6))]));
        console.log(JSON.stringify({ task, text, label: labels[best], probabilities }));
      }
    });

  program.command('summary')
    .description("the backbone's size and each adapter's share of it")
    .requiredOption('--model <dir|id>', 'model directory or Hugging Face hub repo id')
    .option('--adapter <dir>', 'saved adapter directory, or name=dir (repeatable)', collect, [])
    .option('--device <device>', 'cpu | cuda | cuda:N', device)
    .action(async (o) => {
      const model = await loadBackbone(modelSource(o.model), { device: o.device ?? 'cpu' });
      for (const spec of o.adapter) {
        const { name, dir } = adapterArg(spec);
        const r = model.loadAdapter(mustExist(dir, 'adapter directory'), name ? { loadAs: name } : {});
        for (const w of r.warnings) if (!warningPrinted(w)) console.error(`warning: ${w}`);
      }
      console.log(model.summary());
    });

  program.command('serve')
    .description('serve a frozen model with a library of adapters over HTTP (batched across adapters; /metrics, /openapi.json)')
    .requiredOption('--model <dir|id|file.gguf>', 'encoder or decoder: model directory, Hugging Face hub repo id, or a GGUF file')
    .requiredOption('--adapters <dir>', 'the adapter library: one folder per adapter (name or name@version)')
    .option('--port <n>', 'port (0: any free one)', (v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('expected a port number in [0, 65535]');
      return n;
    }, 8080)
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--device <device>', 'cpu | cuda | cuda:N', device)
    .option('--max-batch <n>', 'rows per batch at most', int, 64)
    .option('--max-wait-ms <n>', 'how long a request waits for others to batch with', int, 5)
    .option('--cache-adapters <n>', 'adapters loaded at once at most (least recently used ones are unloaded)', int, 32)
    .option('--cache-adapter-mib <n>', 'adapter parameters held at once at most, in MiB (least recently used ones are unloaded)', float)
    .option('--cache-tokens <n>', 'decoders: KV-cache tokens over all running requests', int, 16384)
    .option('--admin-token <token>', 'enables POST/DELETE /v1/adapters for requests with this bearer token (or FUSED_ADAPTERS_ADMIN_TOKEN)')
    .option('--quiet', 'no request logs')
    .option('--pid-file <file>', 'write the process id here once listening (stop the server with kill $(cat FILE); npx does not pass signals on)')
    .action(async (o) => {
      // the model runs in a worker thread; this thread answers HTTP
      const app = await createServer({
        source: modelSource(o.model), device: o.device ?? defaultDevice(), library: mustExist(o.adapters, 'adapter library'),
        maxBatch: o.maxBatch, maxWaitMs: o.maxWaitMs, cacheAdapters: o.cacheAdapters, cacheTokens: o.cacheTokens,
        cacheAdapterBytes: o.cacheAdapterMib === undefined ? null : o.cacheAdapterMib * 2 ** 20,
        adminToken: o.adminToken ?? process.env.FUSED_ADAPTERS_ADMIN_TOKEN, logger: o.quiet ? false : { level: 'info' },
      });
      const address = await app.listen({ port: o.port, host: o.host });
      if (o.pidFile) fs.writeFileSync(o.pidFile, `${process.pid}\n`);
      console.error(`fused-adapters serve: listening on ${address}`);
      const stop = async (sig: string) => {
        console.error(`fused-adapters serve: ${sig}: finishing in-flight requests`);
        await app.close();
        if (o.pidFile) fs.rmSync(o.pidFile, { force: true });
        process.exit(0);
      };
      process.once('SIGINT', () => void stop('SIGINT'));
      process.once('SIGTERM', () => void stop('SIGTERM'));
    });

  program.command('demo')
    .description('train one adapter per task on all-MiniLM-L6-v2 (from the Hugging Face cache, else downloaded; else a built-in random-weight model) and route queries; '
      + '`demo llm`: instruction-tune SmolLM2-135M-Instruct and generate before and after')
    .argument('[kind]', "'llm' for the decoder demo")
    .option('--steps <n>', 'llm: training steps', int)
    .option('--device <device>', 'cpu | cuda | cuda:N', device)
    .option('--model <dir|id>', 'the backbone: a model directory or a hub id (default sentence-transformers/all-MiniLM-L6-v2)')
    .option('--random', 'use the built-in random-weight backbone only')
    .option('--no-compare', 'with a pre-trained backbone, skip the comparison run on the random one')
    .option('--out <dir>', 'where to write the demo backbone and adapters')
    .action(async (kind: string | undefined, o) => {
      if (kind === 'llm') {
        await runLlmDemo({ device: o.device, model: o.model, steps: o.steps, out: o.out });
        return;
      }
      if (kind !== undefined) throw new Error(`demo: unknown kind '${kind}' (omit it for the encoder demo, or 'llm')`);
      await runDemo({ device: o.device, outDir: o.out, model: o.random ? false : o.model, compareRandom: o.compare });
    });

  program.command('bench')
    .description('microbenchmarks (see npm run bench)')
    .allowUnknownOption(true)
    .argument('[args...]')
    .action((args: string[]) => {
      const script = path.join(__dirname, '..', 'scripts', 'bench.js');
      const r = spawnSync(process.execPath, [script, ...args], { stdio: 'inherit' });
      process.exitCode = r.status ?? 1;
    });
  return program;
}

if (require.main === module) {
  makeProgram().parseAsync(process.argv).catch((e: Error) => {
    console.error(`fused-adapters: ${e.message}`);
    process.exitCode = 1;
  });
}
