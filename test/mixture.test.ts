// Routed mixtures of adapters. At one site (lib/adapted/compose.ts, no layer norm, as in decoders): the
// batched dispatch equals a per-token loop over each token's chosen adapters (each run alone on that
// token), with top-1 and top-2 and capacity drops; the load-balancing loss is Switch Transformer's,
// computed here independently; the gradients of the gate, the adapters and the input equal central
// differences. Through a model: training the gates moves only them; files round-trip.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { AdamW, adapterForward, loadBackbone, randn, resolveConfig, tensor, Tensor } from '../lib';
import type { AdapterWeights } from '../lib';
import { composeSite } from '../lib/adapted/compose';
import type { ComposeContext, MixtureRun } from '../lib/adapted/compose';
import { Mixture } from '../lib/adapted/composition';
import type { SiteRun } from '../lib/adapted/registry';
import { Scope } from '../lib/core/scope';

const SEED = process.env.FA_TEST_SEED ? Number(process.env.FA_TEST_SEED) : Math.floor(Math.random() * 2 ** 31);
const MODEL = path.join(__dirname, 'fixtures', 'tiny-bert');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-mixture-'));
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

const H = 16;
const r = 4;
const cfg = resolveConfig('double_seq_bn'); // residual = h, input = h: the simplest placement at a site

function pool(A: number, seed: number): SiteRun[] {
  return Array.from({ length: A }, (_, e) => {
    const w: AdapterWeights = {
      downWeight: randn([r, H], { seed: seed + 4 * e, std: 0.4 }), downBias: randn([r], { seed: seed + 4 * e + 1, std: 0.2 }),
      upWeight: randn([H, r], { seed: seed + 4 * e + 2, std: 0.4 }), upBias: randn([H], { seed: seed + 4 * e + 3, std: 0.2 }),
    };
    return { config: cfg, weights: w, activation: 'gelu', scaling: 0.5 + 0.25 * e, dropout: null };
  });
}

/** The site with a mixture over `adapters`; returns its output, the balance loss reported and a backward. */
function site(s: Scope, runs: SiteRun[], gate: Tensor, h: Tensor, x: Tensor, o: { topK: 1 | 2; capacityFactor: number; balanceWeight: number }) {
  let balance = 0;
  const gateGrads: Tensor[] = [];
  const mx: MixtureRun = { config: o, gate, pool: runs, accumulate: (g) => gateGrads.push(g), report: (l) => { balance += l; } };
  const names = runs.map((_, e) => `p${e}`);
  const ctx: ComposeContext = { seed: 1, adapter: (n) => runs[names.indexOf(n)] ?? null, fusion: () => { throw new Error('no fusion'); }, mixture: () => mx };
  const res = composeSite(s, Mixture('mx', names), h, x, null, ctx);
  return { out: res.out, back: res.back, balance: () => balance, gateGrads };
}

/** Host reference of the routing: per token the chosen adapters (lowest index first among ties), weights, capacity. */
function referenceRouting(z: Float32Array, N: number, A: number, K: number, capacityFactor: number) {
  const cap = Math.ceil((capacityFactor * N * K) / A);
  const load = new Array(A).fill(0);
  const picks: { e: number; w: number; kept: boolean }[][] = [];
  const probs: number[][] = [];
  for (let n = 0; n < N; n++) {
    const row = Array.from(z.slice(n * A, n * A + A));
    const m = Math.max(...row);
    const ex = row.map((v) => Math.exp(v - m));
    const sum = ex.reduce((a, b) => a + b, 0);
    probs.push(ex.map((v) => v / sum));
    const order = row.map((v, e) => [v, e]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, K).map(([, e]) => e);
    const sel = order.map((e) => Math.exp(row[e] - Math.max(...order.map((i) => row[i]))));
    const ss = sel.reduce((a, b) => a + b, 0);
    picks.push(order.map((e, k) => {
      const kept = load[e] < cap;
      if (kept) load[e]++;
      return { e, w: sel[k] / ss, kept };
    }));
  }
  return { picks, probs };
}

describe(`routed mixtures (seed ${SEED})`, () => {
  for (const [K, cf, A] of [[1, 8, 3], [2, 8, 4], [2, 0.6, 4], [1, 0.5, 3]] as const)
    test(`top-${K}, capacity factor ${cf}, ${A} adapters: the batched dispatch equals a per-token loop; the balance loss as defined`, () => {
      const s = new Scope();
      const [B, T] = [3, 5];
      const N = B * T;
      const runs = pool(A, SEED % 1000);
      const gate = randn([A, H], { seed: SEED + 7, std: 0.8 });
      const h = randn([B, T, H], { seed: SEED + 8 });
      const x = randn([B, T, H], { seed: SEED + 9 });
      const o = { topK: K, capacityFactor: cf, balanceWeight: 0.3 };
      const got = site(s, runs, gate, h, x, o);
      // reference: z = h·Wᵀ on the host, each chosen adapter alone on its token
      const hv = h.toArray();
      const wv = gate.toArray();
      const z = new Float32Array(N * A);
      for (let n = 0; n < N; n++) for (let e = 0; e < A; e++) { let d = 0; for (let c = 0; c < H; c++) d += hv[n * H + c] * wv[e * H + c]; z[n * A + e] = d; }
      const ref = referenceRouting(z, N, A, K, cf);
      const xv = x.toArray();
      const want = new Float32Array(N * H);
      let dropped = 0;
      for (let n = 0; n < N; n++) {
        const tok = tensor(hv.slice(n * H, n * H + H), [1, H]);
        // double_seq_bn at a site without a layer norm: the residual is h, the adapters read h, then + x
        for (let c = 0; c < H; c++) want[n * H + c] = hv[n * H + c] + xv[n * H + c];
        for (const p of ref.picks[n]) {
          if (!p.kept) { dropped++; continue; }
          const delta = adapterForward(tok, runs[p.e].weights, { activation: 'gelu', scaling: runs[p.e].scaling, residual: tensor(new Float32Array(H), [1, H]) }).out.toArray();
          for (let c = 0; c < H; c++) want[n * H + c] += p.w * delta[c];
        }
      }
      const gv = got.out.toArray();
      let worst = 0;
      for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(gv[i] - want[i]));
      expect(worst).toBeLessThan(1e-5);
      if (cf < 1) expect(dropped).toBeGreaterThan(0); // the capacity limit did drop tokens
      // Switch Transformer's balance loss: w · A · Σ_e f_e · mean_n P_{n,e}, f_e the share of first choices
      let bal = 0;
      for (let e = 0; e < A; e++) {
        const f = ref.picks.filter((p) => p[0].e === e).length / N;
        const pm = ref.probs.reduce((a, p) => a + p[e], 0) / N;
        bal += f * pm;
      }
      expect(got.balance()).toBeCloseTo(0.3 * A * bal, 6);
      s.dispose();
    });

  test('gradients of the gate, the adapters and the input equal central differences (the balance loss included)', () => {
    const [B, T, A] = [2, 3, 3];
    const o = { topK: 2 as const, capacityFactor: 1, balanceWeight: 0.5 };
    const runs = pool(A, SEED % 1000 + 50);
    const gate = randn([A, H], { seed: SEED + 1, std: 0.8 });
    const h = randn([B, T, H], { seed: SEED + 2 });
    const x = randn([B, T, H], { seed: SEED + 3 });
    const R = randn([B, T, H], { seed: SEED + 4 }).toArray();
    const adapterGrads: Map<string, Tensor>[] = runs.map(() => new Map());
    runs.forEach((ru, e) => { ru.accumulate = (g) => { for (const k of ['dDownWeight', 'dUpBias'] as const) adapterGrads[e].set(k, g[k].to({})); }; });
    const lossOf = () => {
      const s = new Scope();
      const g = site(s, runs, gate, h, x, o);
      const v = g.out.toArray().reduce((a, b, i) => a + b * R[i], 0) + g.balance();
      s.dispose();
      return v;
    };
    const s = new Scope();
    const g = site(s, runs, gate, h, x, o);
    const b = g.back(tensor(R, [B, T, H]));
    const checks: [string, Tensor, Float32Array][] = [
      ['gate', gate, g.gateGrads[0].toArray()],
      ['h', h, b.dh.toArray()],
      ['x', x, b.dx.toArray()],
      ...runs.map((ru, e): [string, Tensor, Float32Array] => [`adapter ${e} downWeight`, ru.weights.downWeight, adapterGrads[e].get('dDownWeight')?.toArray() ?? new Float32Array(r * H)]),
    ];
    for (const [what, t, analytic] of checks) {
      const base = t.toArray();
      for (const j of [0, 5, t.size - 1]) {
        const eps = 1e-3;
        const at = (d: number) => { const v = Float32Array.from(base); v[j] += d; t.copyFrom(v); return lossOf(); };
        const numeric = (at(eps) - at(-eps)) / (2 * eps);
        t.copyFrom(base);
        if (Math.abs(numeric - analytic[j]) > 2e-2 * Math.max(1, Math.abs(numeric))) throw new Error(`${what}[${j}]: analytic ${analytic[j]}, central differences ${numeric}`);
      }
    }
    s.dispose();
  });

  test('through a model: training the gates moves only them; the balance loss is reported; files round-trip', async () => {
    const m = await loadBackbone(MODEL, { device: 'cpu' });
    for (const [k, n] of ['a', 'b', 'c'].entries()) {
      m.addAdapter(n, 'seq_bn', { seed: k });
      for (const t of m.adapterParameters(n).values()) t.copyFrom(Float32Array.from({ length: t.size }, (_, i) => 0.2 * Math.sin(i * (k + 1) + t.size)));
    }
    m.addAdapter('d', 'double_seq_bn');
    expect(() => m.addMixture('bad', ['a', 'd'])).toThrow(/must share one configuration/);
    const block = m.addMixture('moa', ['a', 'b', 'c'], { topK: 2, capacityFactor: 1.5, balanceWeight: 0.01 });
    expect([...m.mixtureParameters('moa').keys()][0]).toMatch(/^bert\.encoder\.layer\.0\.output\.adapter_mixture\.moa\.gate\.weight$/);
    m.addClassificationHead('task', { numLabels: 2 });
    m.trainMixture('moa');
    const inputs = { inputIds: [[2, 7, 11, 5, 3], [2, 9, 4, 3, 0]], attentionMask: [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]] };
    const adapterBefore = Array.from(m.adapterParameters('a').values().next().value!.toArray());
    const gates = [...m.mixtureParameters('moa').values()];
    const gateBefore = Array.from(gates[0].toArray());
    const opt = new AdamW(m.namedParameters(), { lr: 1e-2 });
    const res = m.forward(inputs, { labels: [0, 1] });
    expect(m.balanceLoss).toBeGreaterThan(0);
    m.backward(res);
    res.dispose();
    expect([...m.grads().keys()].filter((k) => k.includes('adapter_mixture')).length).toBe(gates.length);
    opt.step(m.grads());
    expect(Array.from(m.adapterParameters('a').values().next().value!.toArray())).toEqual(adapterBefore);
    expect(Array.from(gates[0].toArray())).not.toEqual(gateBefore);
    m.setActiveAdapters(block);
    const want = m.forward(inputs).lastHiddenState.toArray();
    const dir = path.join(work, 'moa');
    m.saveMixture(dir, 'moa');
    const fresh = await loadBackbone(MODEL, { device: 'cpu' });
    const loaded = fresh.loadMixture(dir);
    expect(fresh.adapterNames().sort()).toEqual(['a', 'b', 'c']);
    fresh.setActiveAdapters(loaded);
    expect(Array.from(fresh.forward(inputs).lastHiddenState.toArray())).toEqual(Array.from(want));
    expect(() => fresh.loadMixture(dir)).toThrow(/a mixture named 'moa' already exists/);
    fresh.dispose();
    m.dispose();
  });
});
