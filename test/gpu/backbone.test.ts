// The frozen encoder on CUDA against the CPU: tiny-bert with each AdapterHub config
// (seq_bn, double_seq_bn, par_bn), the adapter and head weights of the PyTorch reference
// fixtures copied into every model, a padded batch, forward with labels and backward.
//   bf16 on CUDA  vs fp32 on the CPU: norm-wise relative error ≤ 3e-2 (see expectBf16)
//   fp32 on CUDA  vs fp32 on the CPU: ≤ 1e-4 (and vs the float64 fixture)
//   gradient checkpointing on CUDA: bitwise-identical loss and gradients (dropout on)
//   padding on CUDA: what sits in padded positions changes no real token, logit or gradient
import * as path from 'path';
import { Backbone, loadBackbone } from '../../lib';
import type { FloatDType, ForwardOptions, ModelInputs } from '../../lib';
import { SafetensorsFile } from '../../lib/io/safetensors';
import { describeGpu, relErr } from '../helpers';

const dev = 'cuda:0';
const FIX = path.join(__dirname, '..', 'fixtures', 'tiny-bert');
const CONFIGS = ['seq_bn', 'double_seq_bn', 'par_bn'] as const;
type ConfigName = (typeof CONFIGS)[number];
const BF16_TOL = 3e-2;
const FP32_TOL = 1e-4;

/** What one forward + backward gives, read back to the host. */
interface StepResult {
  last: Float32Array;
  logits: Float32Array;
  loss: Float32Array;
  grads: Map<string, Float32Array>;
}

interface Fixture {
  ref: SafetensorsFile;
  inputs: ModelInputs;
  labels: number[];
  B: number;
  T: number;
  H: number;
  mask: Float32Array;
}

function fixture(cfg: ConfigName): Fixture {
  const ref = SafetensorsFile.open(path.join(FIX, `reference-${cfg}.safetensors`));
  const [B, T] = ref.info('input_ids').shape;
  const mask = ref.getFloat32('attention_mask');
  const inputs: ModelInputs = {
    shape: [B, T], inputIds: ref.getInt32('input_ids'), attentionMask: mask, tokenTypeIds: ref.getInt32('token_type_ids'),
  };
  return { ref, inputs, labels: Array.from(ref.getInt32('labels')), B, T, H: ref.info('last_hidden_state').shape[2], mask };
}

/** tiny-bert on a device and dtype with the fixture's adapter 'task' and 3-label head 'task', trained. */
async function modelWith(cfg: ConfigName, f: Fixture, device: string, dtype: FloatDType): Promise<Backbone> {
  const m = await loadBackbone(FIX, { device, dtype });
  m.addAdapter('task', cfg);
  m.addClassificationHead('task', { numLabels: 3 });
  m.trainAdapter('task');
  for (const [name, t] of m.namedParameters()) t.copyFrom(f.ref.getFloat32(name));
  return m;
}

function step(m: Backbone, inputs: ModelInputs, labels: number[], opts: ForwardOptions = {}): StepResult {
  m.zeroGrad();
  const res = m.forward(inputs, { ...opts, labels });
  try {
    m.backward(res);
    const grads = new Map<string, Float32Array>();
    for (const [k, g] of m.grads()) grads.set(k, g.toArray());
    return { last: res.lastHiddenState.toArray(), logits: res.logits!.toArray(), loss: res.loss!.toArray(), grads };
  } finally {
    res.dispose();
  }
}

/** Every compared quantity of a step by name: outputs, then 'grad.<parameter>'. */
function quantities(r: StepResult): Map<string, Float32Array> {
  const q = new Map<string, Float32Array>([['last_hidden_state', r.last], ['logits', r.logits], ['loss', r.loss]]);
  for (const [k, g] of r.grads) q.set(`grad.${k}`, g);
  return q;
}

function sameKeys(a: StepResult, b: StepResult): void {
  expect([...a.grads.keys()].sort()).toEqual([...b.grads.keys()].sort());
}

/**
 * bf16 on CUDA against fp32 on the CPU. The fixture is tiny (30 rows, bottleneck 4 for the
 * sequential configs), so a gradient of a ReLU adapter's down-projection can move by tens
 * of percent when bf16 rounding flips the sign of one pre-activation near zero: one row's
 * term enters or leaves the sum. That is bf16 arithmetic, not an error of the CUDA code:
 * the CPU's own bf16 run shows it (seq_bn, layer 1, adapter_down.0.bias: 1.04 from fp32),
 * and PyTorch in bf16 misses 3e-2 on several adapter gradients of these fixtures too.
 * So each quantity must be within 3e-2 of the fp32 CPU result, or, failing that, within
 * 3e-2 of the CPU's bf16 result (the same bf16 storage points, fp32 arithmetic): either
 * as accurate as bf16 allows, or the same bf16 computation as the CPU.
 */
function expectBf16(got: StepResult, fp32: StepResult, cpuBf16: StepResult, log: string[]): void {
  sameKeys(got, fp32);
  const want = quantities(fp32);
  const alt = quantities(cpuBf16);
  const failures: string[] = [];
  for (const [name, g] of quantities(got)) {
    const e32 = relErr(g, want.get(name)!);
    if (e32 <= BF16_TOL) continue;
    const eBf = relErr(g, alt.get(name)!);
    const eCpu = relErr(alt.get(name)!, want.get(name)!);
    const line = `${name}: vs fp32 CPU ${e32.toExponential(2)}, vs bf16 CPU ${eBf.toExponential(2)} (bf16 CPU vs fp32 CPU ${eCpu.toExponential(2)})`;
    (eBf <= BF16_TOL ? log : failures).push(line);
  }
  if (failures.length) throw new Error(`bf16 on CUDA is off by more than ${BF16_TOL}:\n  ${failures.join('\n  ')}`);
}

function expectFp32(got: StepResult, want: StepResult, what: string): void {
  sameKeys(got, want);
  const w = quantities(want);
  const failures: string[] = [];
  for (const [name, g] of quantities(got)) {
    const e = relErr(g, w.get(name)!);
    if (!(e <= FP32_TOL)) failures.push(`${name}: ${e.toExponential(2)}`);
  }
  if (failures.length) throw new Error(`${what}: relative error above ${FP32_TOL}:\n  ${failures.join('\n  ')}`);
}

function expectBitwise(a: StepResult, b: StepResult): void {
  sameKeys(a, b);
  const qb = quantities(b);
  for (const [name, v] of quantities(a)) {
    const w = qb.get(name)!;
    let diff = -1;
    for (let i = 0; i < v.length && diff < 0; i++) if (!Object.is(v[i], w[i])) diff = i;
    if (diff >= 0) throw new Error(`${name} differs at element ${diff}: ${v[diff]} vs ${w[diff]}`);
  }
}

/** Rows of [B, T, H] at real (unmasked) positions. */
function realRows(last: Float32Array, f: Fixture): Float32Array {
  const out: number[] = [];
  for (let i = 0; i < f.B * f.T; i++) if (f.mask[i] !== 0) for (let h = 0; h < f.H; h++) out.push(last[i * f.H + h]);
  return Float32Array.from(out);
}

describeGpu('tiny-bert on CUDA matches the CPU', () => {
  for (const cfg of CONFIGS)
    describe(cfg, () => {
      let f: Fixture;
      let cpu32: Backbone;
      let cpuBf16: Backbone;
      let gpuBf16: Backbone;
      let gpu32: Backbone;
      const notes: string[] = [];

      beforeAll(async () => {
        f = fixture(cfg);
        cpu32 = await modelWith(cfg, f, 'cpu', 'float32');
        cpuBf16 = await modelWith(cfg, f, 'cpu', 'bfloat16');
        gpuBf16 = await modelWith(cfg, f, dev, 'bfloat16');
        gpu32 = await modelWith(cfg, f, dev, 'float32');
      });

      afterAll(() => {
        for (const m of [cpu32, cpuBf16, gpuBf16, gpu32]) m?.dispose();
        if (notes.length) console.log(`${cfg}: bf16 quantities beyond ${BF16_TOL} of fp32 that match the CPU's bf16 run:\n  ${notes.join('\n  ')}`);
      });

      test('bf16 on CUDA: last hidden state, logits, loss and every gradient match fp32 on the CPU', () => {
        expect(gpuBf16.dtype).toBe('bfloat16');
        expect(gpuBf16.device).toBe(dev);
        const want = step(cpu32, f.inputs, f.labels);
        const got = step(gpuBf16, f.inputs, f.labels);
        // the fixture has an adapter and a head gradient for every trainable tensor
        expect(got.grads.size).toBe(gpuBf16.namedParameters().size);
        expect(Number.isFinite(got.loss[0])).toBe(true);
        expectBf16(got, want, step(cpuBf16, f.inputs, f.labels), notes);
      });

      test('fp32 on CUDA matches fp32 on the CPU within 1e-4, and the float64 PyTorch reference', () => {
        const want = step(cpu32, f.inputs, f.labels);
        const got = step(gpu32, f.inputs, f.labels);
        expectFp32(got, want, 'fp32 CUDA vs CPU');
        const ref: StepResult = {
          last: f.ref.getFloat32('last_hidden_state'), logits: f.ref.getFloat32('logits'), loss: f.ref.getFloat32('loss'),
          grads: new Map([...got.grads.keys()].map((k) => [k, f.ref.getFloat32(`grad.${k}`)])),
        };
        expectFp32(got, ref, 'fp32 CUDA vs the float64 reference');
      });

      test('gradient checkpointing on CUDA gives bitwise-identical loss and gradients (bf16 and fp32, dropout on)', () => {
        for (const m of [gpuBf16, gpu32]) {
          const opts = { training: true, seed: 99 };
          const plain = step(m, f.inputs, f.labels, opts);
          const ckpt = step(m, f.inputs, f.labels, { ...opts, checkpointing: true });
          expectBitwise(ckpt, plain);
          // dropout is on: another seed gives another loss
          const other = step(m, f.inputs, f.labels, { training: true, seed: 100 });
          expect(other.loss[0]).not.toBe(plain.loss[0]);
        }
      });

      test('padding on CUDA: padded token ids and types change no real token, logit, loss or gradient', () => {
        const ids = Int32Array.from(f.inputs.inputIds as ArrayLike<number>);
        const types = Int32Array.from(f.inputs.tokenTypeIds as ArrayLike<number>);
        let padded = 0;
        for (let i = 0; i < ids.length; i++)
          if (f.mask[i] === 0) {
            ids[i] = 7;
            types[i] = 1;
            padded++;
          }
        expect(padded).toBeGreaterThan(0); // the fixture's batch is padded
        const alt: ModelInputs = { ...f.inputs, inputIds: ids, tokenTypeIds: types };
        for (const m of [gpuBf16, gpu32]) {
          const a = step(m, f.inputs, f.labels);
          const b = step(m, alt, f.labels);
          expect(relErr(realRows(b.last, f), realRows(a.last, f))).toBeLessThanOrEqual(1e-6);
          // the padded positions themselves do change: the test would be empty otherwise
          expect(relErr(b.last, a.last)).toBeGreaterThan(1e-3);
          expect(relErr(b.logits, a.logits)).toBeLessThanOrEqual(1e-6);
          expect(relErr(b.loss, a.loss)).toBeLessThanOrEqual(1e-6);
          sameKeys(a, b);
          for (const [k, g] of a.grads) {
            const e = relErr(b.grads.get(k)!, g);
            if (!(e <= 1e-6)) throw new Error(`${m.dtype} grad.${k}: padded positions change it (relative error ${e.toExponential(2)})`);
          }
        }
      });
    });
});
