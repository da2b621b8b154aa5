// The `decoder` bench suite: one SFT training step (forward with answer-only labels, backward to a
// seq_bn adapter) of a frozen SmolLM2-shaped LLaMA decoder, against the same architecture in
// PyTorch eager (transformers + AdapterHub's adapters; torch.compile where it works) on the same
// batch, in one run. On CUDA: SmolLM2-135M's shape, batch 4 × 256 tokens. On the CPU: the same
// widths with 4 layers and batch 4 × 128 (two cores would take minutes per full step).
//
// No model is downloaded: a checkpoint with random weights (seeded) is written as config.json +
// model.safetensors and loaded with loadDecoder; speed does not depend on the values.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadDecoder } from '../lib';
import { TensorToWrite, writeSafetensors } from '../lib/io/safetensors';
import {
  BenchOptions, deviceKind, errorMessage, findTorchPython, formatTable, measure, progress, runHeader, runPythonJson, sourceScript, Suite, TimingPlan,
} from './bench';

interface DecoderShape { layers: number; hidden: number; heads: number; kvHeads: number; intermediate: number; vocab: number; B: number; T: number }

const SMOLLM2 = { hidden: 576, heads: 9, kvHeads: 3, intermediate: 1536, vocab: 49152 };
const GPU_SHAPE: DecoderShape = { ...SMOLLM2, layers: 30, B: 4, T: 256 };
const CPU_SHAPE: DecoderShape = { ...SMOLLM2, layers: 4, B: 4, T: 128 };

function configOf(s: DecoderShape): Record<string, unknown> {
  return {
    model_type: 'llama', architectures: ['LlamaForCausalLM'], vocab_size: s.vocab, hidden_size: s.hidden, intermediate_size: s.intermediate,
    num_hidden_layers: s.layers, num_attention_heads: s.heads, num_key_value_heads: s.kvHeads, max_position_embeddings: 8192,
    rms_norm_eps: 1e-5, rope_theta: 100000, hidden_act: 'silu', tie_word_embeddings: true,
  };
}

/** Writes a random checkpoint of this shape (std 0.02 projections, norms 1). */
function writeModel(dir: string, s: DecoderShape): void {
  let seed = 12345;
  const rnd = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31 - 0.5;
  };
  const t: Record<string, TensorToWrite> = {};
  const put = (name: string, shape: number[], value?: number) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = value ?? 0.07 * rnd();
    t[name] = { dtype: 'F32', shape, data };
  };
  const dh = s.hidden / s.heads;
  put('model.embed_tokens.weight', [s.vocab, s.hidden]);
  for (let i = 0; i < s.layers; i++) {
    const p = `model.layers.${i}`;
    put(`${p}.input_layernorm.weight`, [s.hidden], 1);
    put(`${p}.post_attention_layernorm.weight`, [s.hidden], 1);
    put(`${p}.self_attn.q_proj.weight`, [s.heads * dh, s.hidden]);
    put(`${p}.self_attn.k_proj.weight`, [s.kvHeads * dh, s.hidden]);
    put(`${p}.self_attn.v_proj.weight`, [s.kvHeads * dh, s.hidden]);
    put(`${p}.self_attn.o_proj.weight`, [s.hidden, s.heads * dh]);
    put(`${p}.mlp.gate_proj.weight`, [s.intermediate, s.hidden]);
    put(`${p}.mlp.up_proj.weight`, [s.intermediate, s.hidden]);
    put(`${p}.mlp.down_proj.weight`, [s.hidden, s.intermediate]);
  }
  put('model.norm.weight', [s.hidden], 1);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(configOf(s)));
  writeSafetensors(path.join(dir, 'model.safetensors'), t);
}

/** Matmul FLOPs of one step: the forward's projections, attention and LM head, and the backward's activation gradients (the same again; no weight gradients for the frozen model). */
function stepFlops(s: DecoderShape): number {
  const N = s.B * s.T;
  const dh = s.hidden / s.heads;
  const proj = 2 * N * s.hidden * (s.heads * dh + 2 * s.kvHeads * dh + s.heads * dh) + 2 * N * 3 * s.hidden * s.intermediate;
  const attn = 2 * 2 * s.B * s.heads * s.T * s.T * dh;
  const head = 2 * N * s.hidden * s.vocab;
  return 2 * (s.layers * (proj + attn) + head);
}

interface TorchRow { mode: string; ms?: number; runs?: number; error?: string }

export const decoderSuite: Suite = {
  describe: 'SFT step of a SmolLM2-shaped decoder with a seq_bn adapter vs transformers + AdapterHub (eager, torch.compile)',
  async run(opts: BenchOptions): Promise<object> {
    const device = opts.device;
    const cuda = deviceKind(device) === 'cuda';
    const shape = cuda ? GPU_SHAPE : CPU_SHAPE;
    const header = runHeader(device);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-bench-decoder-'));
    try {
      progress(`decoder: writing a random ${shape.layers}-layer SmolLM2-shaped checkpoint to ${dir}`);
      writeModel(dir, shape);
      const model = await loadDecoder(dir, { device, dtype: cuda ? 'bfloat16' : 'float32' });
      model.addAdapter('bench', 'seq_bn', { seed: 1 });
      model.trainAdapter('bench');
      // a batch of token ids, the first half of each row a prompt without labels
      let s = 7;
      const ids = Array.from({ length: shape.B }, () => Array.from({ length: shape.T }, () => (s = (s * 48271) % 2147483647) % shape.vocab));
      const labels = ids.map((r) => r.map((v, t) => (t < shape.T / 2 ? -100 : v)));
      const step = () => {
        const out = model.forward({ inputIds: ids }, { labels, training: true });
        model.backward(out);
        out.dispose();
        model.zeroGrad();
      };
      const plan: TimingPlan = opts.quick ? { warmup: 1, runs: 3, minRuns: 2 } : { warmup: 2, runs: cuda ? 20 : 5, minRuns: 3, budgetMs: 60_000 };
      progress('decoder: timing this package');
      const ours = measure(device, step, plan);
      model.dispose();

      let torch: { rows: TorchRow[]; version?: string; error?: string } | null = null;
      const python = opts.torch ? findTorchPython(opts.python) : undefined;
      if (python) {
        progress(`decoder: timing PyTorch (${python})`);
        try {
          torch = runPythonJson(python, sourceScript('bench_decoder_torch.py'), {
            device, dtype: cuda ? 'bfloat16' : 'float32', dir, ids, labels, warmup: plan.warmup, runs: plan.runs, threads: os.cpus().length,
          }, 30 * 60 * 1000) as typeof torch;
        } catch (e) {
          torch = { rows: [], error: errorMessage(e) };
        }
      }
      const flops = stepFlops(shape);
      const tokens = shape.B * shape.T;
      const rows: string[][] = [[
        'fused-adapters', ours.ms.toFixed(1), String(ours.runs), (tokens / (ours.ms / 1e3)).toFixed(0), (flops / (ours.ms / 1e3) / 1e9).toFixed(1), '1.00',
      ]];
      for (const r of torch?.rows ?? [])
        rows.push(r.ms === undefined
          ? [`torch ${r.mode}`, `not measured: ${r.error}`, '', '', '', '']
          : [`torch ${r.mode}`, r.ms.toFixed(1), String(r.runs), (tokens / (r.ms / 1e3)).toFixed(0), (flops / (r.ms / 1e3) / 1e9).toFixed(1), (r.ms / ours.ms).toFixed(2)]);
      if (!python) rows.push(['torch', 'not measured: no Python with torch (pass --python)', '', '', '', '']);
      else if (torch?.error) rows.push(['torch', `not measured: ${torch.error}`, '', '', '', '']);
      console.log(`\ndecoder SFT step on ${header.deviceName} (${device}), ${header.date}: ${shape.layers} layers, hidden ${shape.hidden}, `
        + `${shape.heads} heads / ${shape.kvHeads} K/V heads, vocab ${shape.vocab}, batch ${shape.B} × ${shape.T}, seq_bn; ${cuda ? 'bf16' : 'fp32'}`);
      console.log(`floor: ${(flops / 1e9).toFixed(1)} GFLOP of matmuls per step (forward + activation gradients)\n`);
      console.log(formatTable(['', 'ms/step', 'runs', 'tokens/s', 'GFLOP/s', 'torch/ours'], rows, 1));
      return { suite: 'decoder', header, shape, flops, ours, torch };
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
};
