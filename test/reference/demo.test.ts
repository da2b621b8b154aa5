// The demo on the real pre-trained all-MiniLM-L6-v2, found offline in a Hugging Face cache
// (as .ci/run places it), with the random-weight backbone's accuracy beside it (reduced setting).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { DEMO_PRETRAINED, runDemo } from '../../lib/demo/run';
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
