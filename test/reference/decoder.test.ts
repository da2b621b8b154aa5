// Decoders against transformers itself: tiny random GPT-2, LLaMA (grouped-query attention,
// rope_scaling llama3; and linear scaling with biases and tied embeddings), Mistral (one K/V head)
// and Qwen2 (q/k/v biases, tied embeddings), built and saved by transformers with fresh weights
// each run (FA_REFERENCE_SEED reproduces one). Our logits on a batch with left and right padding,
// and the causal-LM loss on masked labels, equal theirs (fp32, CPU).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadDecoder } from '../../lib';
import { SafetensorsFile } from '../../lib/backbone/safetensors';
import { describeReference, runPython } from './env';

const seed = process.env.FA_REFERENCE_SEED ? Number(process.env.FA_REFERENCE_SEED) : (Date.now() % 1_000_000) + 1;
const SCRIPT = path.resolve(__dirname, '..', '..', 'scripts', 'reference', 'decoder_reference.py');

describeReference('decoders: parity with transformers on tiny random models', (env) => {
  let work: string;
  let manifest: { cases: string[]; versions: Record<string, string> };
  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-decoder-ref-'));
    await runPython(env.python, [SCRIPT, '--out', work, '--seed', String(seed)]);
    manifest = JSON.parse(fs.readFileSync(path.join(work, 'manifest.json'), 'utf8'));
    // eslint-disable-next-line no-console
    console.log(`decoder reference seed ${seed}; peers ${JSON.stringify(manifest.versions)}`);
  }, 300_000);
  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

  for (const name of ['gpt2', 'llama_gqa_llama3', 'llama_linear_tied', 'mistral', 'qwen2'])
    test(`${name}: logits of every real token and the masked-label loss`, async () => {
      expect(manifest.cases).toContain(name);
      const dir = path.join(work, name);
      const inputs = JSON.parse(fs.readFileSync(path.join(dir, 'inputs.json'), 'utf8'));
      const ref = SafetensorsFile.open(path.join(dir, 'reference.safetensors'));
      const want = ref.getFloat32('logits');
      const [B, T, V] = ref.info('logits').shape;
      const model = await loadDecoder(dir, { device: 'cpu' });
      // positions from the mask by default: the same as the reference's explicit position_ids
      const out = model.forward({ inputIds: inputs.input_ids, attentionMask: inputs.attention_mask }, { labels: inputs.labels });
      expect(out.logits.shape).toEqual([B, T, V]);
      const got = out.logits.toArray();
      let scale = 0;
      for (const v of want) scale = Math.max(scale, Math.abs(v));
      expect(scale).toBeGreaterThan(0);
      let worst = 0;
      for (let b = 0; b < B; b++)
        for (let t = 0; t < T; t++) {
          if (!inputs.attention_mask[b][t]) continue; // padding rows are garbage in both
          for (let v = 0; v < V; v++) {
            const i = (b * T + t) * V + v;
            worst = Math.max(worst, Math.abs(got[i] - want[i]) / scale);
          }
        }
      expect(worst).toBeLessThan(1e-4);
      const loss = ref.getFloat32('loss')[0];
      expect(Math.abs(out.lossValue! - loss) / loss).toBeLessThan(1e-4);
      // eslint-disable-next-line no-console
      console.log(`${name}: max logit error ${worst.toExponential(2)} of max |logit| ${scale.toFixed(3)}; loss ${out.lossValue} vs ${loss}`);
      out.dispose();
      model.dispose();
    });
});
