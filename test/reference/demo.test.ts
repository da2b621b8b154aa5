// The demo on the real pre-trained all-MiniLM-L6-v2, found offline in a Hugging Face cache
// (as .ci/run places it), with the random-weight backbone's accuracy beside it (reduced setting).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { DEMO_PRETRAINED, runDemo } from '../../lib/demo/run';
import { runLlmDemo } from '../../lib/demo/llm';
import { placeInHubCache } from '../../lib/io/hub';
import { describeReference } from './env';

describeReference('demo on pre-trained weights', (env) => {
  test('finds MiniLM in the hub cache offline, trains on it and compares with the random backbone', async () => {
    const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-demo-cache-'));
    const saved = { HF_HUB_CACHE: process.env.HF_HUB_CACHE, HF_HUB_OFFLINE: process.env.HF_HUB_OFFLINE };
    try {
      await placeInHubCache(env.minilm, DEMO_PRETRAINED, { cacheDir: cache });
      process.env.HF_HUB_CACHE = cache;
      process.env.HF_HUB_OFFLINE = '1';
      const lines: string[] = [];
      const r = await runDemo({ device: 'cpu', outDir: path.join(cache, 'out'), perIntent: 12, epochs: 2, log: (l) => lines.push(l) });
      const text = lines.join('\n');
      expect(r.backbone).toMatchObject({ kind: 'pretrained', name: DEMO_PRETRAINED });
      expect(r.backbone.source).toMatch(/Hugging Face cache/);
      expect(text).toMatch(/PRE-TRAINED weights/);
      expect(r.backboneParams).toBeGreaterThan(20_000_000);
      expect(r.randomBaseline).toHaveLength(3);
      expect(text).toMatch(/held-out paraphrases/);
      for (const t of r.tasks) expect(t.paraphrases).toBeGreaterThanOrEqual(0);
    } finally {
      for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
      fs.rmSync(cache, { recursive: true, force: true });
    }
  }, 300_000);
});

describeReference('the LLM demo on SmolLM2-135M-Instruct (its GGUF from the reference environment)', () => {
  test('the loss falls, the replies take the trained style, and it reports shares, sizes and speeds', async () => {
    const lines: string[] = [];
    const saved = { HF_HUB_OFFLINE: process.env.HF_HUB_OFFLINE, HF_HUB_CACHE: process.env.HF_HUB_CACHE };
    process.env.HF_HUB_OFFLINE = '1';
    process.env.HF_HUB_CACHE = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-llm-demo-cache-')); // nothing cached: the GGUF is used
    try {
      const r = await runLlmDemo({ device: 'cpu', steps: 24, log: (l) => lines.push(l) });
      expect(r.model).toMatch(/\.gguf$/);
      expect(r.losses).toHaveLength(24);
      const head = r.losses.slice(0, 4).reduce((a, b) => a + b, 0) / 4;
      const tail = r.losses.slice(-4).reduce((a, b) => a + b, 0) / 4;
      expect(tail).toBeLessThan(head * 0.7);
      expect(r.styledAfter).toBeGreaterThan(r.styledBefore);
      expect(r.trainableParams / r.backboneParams).toBeLessThan(0.01);
      expect(r.adapterBytes).toBeGreaterThan(4 * r.trainableParams - 1);
      expect(lines.join('\n')).toMatch(/replies in the trained style: \d\/4 before, \d\/4 after/);
      // eslint-disable-next-line no-console
      console.log(lines.join('\n'));
    } finally {
      for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
    }
  }, 900_000);
});
