// Decoders against transformers itself: tiny random GPT-2, LLaMA (grouped-query attention,
// rope_scaling llama3; and linear scaling with biases and tied embeddings), Mistral (one K/V head)
// and Qwen2 (q/k/v biases, tied embeddings), built and saved by transformers with fresh weights
// each run (FA_REFERENCE_SEED reproduces one). Our logits on a batch with left and right padding,
// and the causal-LM loss on masked labels, equal theirs (fp32, CPU).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadDecoder } from '../../lib';
import type { AdapterConfigInput } from '../../lib';
import { SafetensorsFile } from '../../lib/io/safetensors';
import { describeReference, runPython } from './env';

const seed = process.env.FA_REFERENCE_SEED ? Number(process.env.FA_REFERENCE_SEED) : (Date.now() % 1_000_000) + 1;
const SCRIPT = path.resolve(__dirname, '..', '..', 'scripts', 'reference', 'decoder_reference.py');

describeReference('decoders: parity with transformers on tiny random models', (env) => {
  let work: string;
  let manifest: { cases: string[]; adapters: string[]; versions: Record<string, string> };
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

  // the same configs as ADAPTER_CASES in scripts/reference/decoder_reference.py
  const CONFIGS: Record<string, AdapterConfigInput> = {
    seq_bn: { config: 'seq_bn', reductionFactor: 8 },
    double_seq_bn: { config: 'double_seq_bn', reductionFactor: 4, leaveOut: [0] },
    par_bn: { config: 'par_bn', reductionFactor: 4, nonLinearity: 'gelu_new' },
    seq_bn_learned_swish: { config: 'seq_bn', reductionFactor: 16, scaling: 'learned', nonLinearity: 'swish' },
  };
  for (const arch of ['gpt2', 'llama_gqa_llama3', 'llama_linear_tied', 'mistral'])
    for (const cfg of Object.keys(CONFIGS))
      test(`${arch} + ${cfg}: logits, loss and every adapter gradient equal AdapterHub's`, async () => {
        expect(manifest.adapters).toContain(`${arch}/${cfg}`);
        const dir = path.join(work, arch);
        const inputs = JSON.parse(fs.readFileSync(path.join(dir, 'inputs.json'), 'utf8'));
        const ref = SafetensorsFile.open(path.join(dir, `adapter-${cfg}.safetensors`));
        const model = await loadDecoder(dir, { device: 'cpu' });
        model.addAdapter('a', CONFIGS[cfg]);
        const params = model.adapterParameters('a');
        const refParams = ref.names().filter((n) => n.startsWith('param.')).map((n) => n.slice(6));
        expect([...params.keys()].sort()).toEqual(refParams.sort()); // the same sites, AdapterHub's names
        for (const [name, t] of params) t.copyFrom(ref.getFloat32(`param.${name}`));
        model.trainAdapter('a');
        const out = model.forward({ inputIds: inputs.input_ids, attentionMask: inputs.attention_mask }, { labels: inputs.labels });
        const near = (what: string, got: ArrayLike<number>, want: Float32Array, tol: number, mask?: (i: number) => boolean) => {
          let scale = 0;
          for (const v of want) scale = Math.max(scale, Math.abs(v));
          expect(scale).toBeGreaterThan(0);
          let worst = 0;
          for (let i = 0; i < want.length; i++) if (!mask || mask(i)) worst = Math.max(worst, Math.abs(got[i] - want[i]) / scale);
          if (worst > tol) throw new Error(`${what}: error ${worst.toExponential(2)} of max |ref| ${scale.toExponential(2)} (allowed ${tol})`);
          return worst;
        };
        const [, T, V] = ref.info('logits').shape;
        near('logits', out.logits.toArray(), ref.getFloat32('logits'), 1e-4, (i) => inputs.attention_mask[Math.floor(i / (T * V))][Math.floor(i / V) % T] === 1);
        expect(Math.abs(out.lossValue! - ref.getFloat32('loss')[0])).toBeLessThan(1e-4 * ref.getFloat32('loss')[0]);
        model.backward(out);
        const grads = model.grads();
        expect([...grads.keys()].sort()).toEqual(refParams.sort());
        let worst = 0;
        // a learned scaling's gradient is a cancelling sum: 1e-2 of itself (see gradTolerance in adapterhub.test.ts)
        for (const [name, g] of grads) worst = Math.max(worst, near(`grad ${name}`, g.toArray(), ref.getFloat32(`grad.${name}`), name.endsWith('.scaling') ? 1e-2 : 1e-4));
        // eslint-disable-next-line no-console
        console.log(`${arch} + ${cfg}: ${grads.size} adapter gradients, worst error ${worst.toExponential(2)}`);
        out.dispose();
        model.dispose();
      });

  test('adapter files both ways: AdapterHub\'s save_adapter loads here and ours loads in AdapterHub, with the same outputs', async () => {
    const jobs: { adapter: string; model: string; inputs: string; result: string; ours: Float32Array; loss: number; mask: number[][] }[] = [];
    const maxDiff = (a: Float32Array, b: Float32Array, mask: number[][]) => {
      const [B, T] = [mask.length, mask[0].length];
      const V = a.length / B / T;
      let worst = 0;
      for (let i = 0; i < a.length; i++) if (mask[Math.floor(i / (T * V))][Math.floor(i / V) % T]) worst = Math.max(worst, Math.abs(a[i] - b[i]));
      return worst;
    };
    for (const arch of ['gpt2', 'llama_gqa_llama3', 'mistral'])
      for (const cfg of ['double_seq_bn', 'seq_bn_learned_swish']) {
        const dir = path.join(work, arch);
        const inputs = JSON.parse(fs.readFileSync(path.join(dir, 'inputs.json'), 'utf8'));
        const model = await loadDecoder(dir, { device: 'cpu' });
        const loaded = model.loadAdapter(path.join(dir, `hub-${cfg}`));
        expect(loaded).toEqual({ name: 'a', warnings: [] });
        model.setActiveAdapter('a');
        const ours = model.forward({ inputIds: inputs.input_ids, attentionMask: inputs.attention_mask }, { labels: inputs.labels });
        const ref = SafetensorsFile.open(path.join(dir, `adapter-${cfg}.safetensors`));
        expect({ arch, cfg, diff: maxDiff(ours.logits.toArray(), ref.getFloat32('logits'), inputs.attention_mask) < 1e-4 }).toEqual({ arch, cfg, diff: true });
        const saved = path.join(work, `${arch}-ours-${cfg}`);
        model.saveAdapter(saved, 'a');
        jobs.push({ adapter: saved, model: dir, inputs: path.join(dir, 'inputs.json'), result: `${saved}.safetensors`, ours: ours.logits.toArray(), loss: ours.lossValue!, mask: inputs.attention_mask });
        ours.dispose();
        model.dispose();
      }
    const jobFile = path.join(work, 'check-jobs.json');
    fs.writeFileSync(jobFile, JSON.stringify(jobs.map(({ adapter, model, inputs, result }) => ({ adapter, model, inputs, result }))));
    await runPython(env.python, [SCRIPT, '--check', jobFile]);
    for (const j of jobs) {
      const theirs = SafetensorsFile.open(j.result);
      expect({ job: j.adapter, diff: maxDiff(j.ours, theirs.getFloat32('logits'), j.mask) < 1e-4 }).toEqual({ job: j.adapter, diff: true });
      expect(Math.abs(theirs.getFloat32('loss')[0] - j.loss)).toBeLessThan(1e-4);
    }
  }, 120_000);
});
