// loadDecoder(dir | hub id): config.json → DecoderConfig, model.safetensors (or a sharded index)
// → the frozen weights in nn.Linear layout ([out, in]) on the device, in the compute dtype.
//
// GPT-2 stores its projections as Conv1D, [in, out], and q/k/v fused in one c_attn: they are
// transposed (and split) here, once, at load. Names may carry the causal-LM prefix
// ('transformer.' / 'model.') or not (a base-model checkpoint). A tied LM head is the token
// embedding itself (no second copy).
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { defaultDevice } from '../../backend';
import { openCheckpoint } from '../../io/safetensors';
import { firstNonFinite } from '../../core/finite';
import { HubOptions, resolveModelDir } from '../../io/hub';
import type { GgufFile } from '../../io/gguf';
import { ggufDecoderSource } from './gguf';
import { FloatDType, Tensor, tensor } from '../../tensor';
import { DecoderConfig, parseDecoderConfig } from './config';
import { Decoder, DecoderLayerWeights, DecoderWeights, Proj } from './model';

export interface DecoderLoadOptions extends HubOptions {
  device?: string;
  /** Default: bfloat16 on CUDA, float32 on the CPU. */
  dtype?: FloatDType;
  /** Load weights that hold NaN or ±Infinity (refused by default). */
  allowNonFinite?: boolean;
}

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);

export const DECODER_FILES = {
  required: ['config.json'],
  oneOf: [['model.safetensors', 'model.safetensors.index.json']],
  optional: ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'],
};

/** A [rows, cols] row-major matrix transposed. */
function transposed(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  return out;
}

/** Where the weights come from: a safetensors checkpoint, or a GGUF file mapped to Hugging Face names. */
export interface WeightSource {
  has(name: string): boolean;
  info(name: string): { dtype: string; shape: number[] };
  getFloat32(name: string): Float32Array;
  /** The bytes as stored, for the weight hash. */
  getRaw(name: string): Buffer;
}

/**
 * Loads a frozen decoder: a model directory or hub id (config.json + safetensors), or a local
 * .gguf file (its metadata gives the config, its tensors are dequantized; see ./gguf.ts).
 */
export async function loadDecoder(nameOrDir: string, opts: DecoderLoadOptions = {}): Promise<Decoder> {
  if (/\.gguf$/i.test(nameOrDir)) {
    const g = await ggufDecoderSource(nameOrDir);
    return buildDecoder(g.raw, g.source, { ...opts, where: `loadDecoder: ${nameOrDir}`, dir: path.dirname(path.resolve(nameOrDir)),
      modelName: g.name, extra: { gguf: g.file } });
  }
  const dir = await resolveModelDir(nameOrDir, DECODER_FILES, opts);
  const cfgPath = path.join(dir, 'config.json');
  let raw: unknown;
  try {
    raw = JSON.parse(await fs.promises.readFile(cfgPath, 'utf8'));
  } catch (e) {
    throw new Error(`loadDecoder: cannot read ${cfgPath}: ${(e as Error).message}`);
  }
  const r = raw as { _name_or_path?: string };
  return buildDecoder(raw, openCheckpoint(dir), {
    ...opts, where: `loadDecoder: ${dir}`, cfgPath, dir: path.resolve(dir),
    modelName: dir !== path.resolve(nameOrDir) ? nameOrDir : r._name_or_path || path.basename(path.resolve(dir)),
  });
}

async function buildDecoder(
  raw: unknown, ck: WeightSource,
  opts: DecoderLoadOptions & { where: string; cfgPath?: string; dir: string; modelName: string; extra?: { gguf?: GgufFile } },
): Promise<Decoder> {
  const where = opts.where;
  const config = parseDecoderConfig(raw, opts.cfgPath ?? where);
  const device = opts.device ?? defaultDevice();
  const dtype: FloatDType = opts.dtype ?? (device.startsWith('cuda') ? 'bfloat16' : 'float32');
  const prefix = config.family === 'gpt2' ? 'transformer.' : 'model.';
  const find = (name: string): string | null => {
    for (const n of [prefix + name, name]) if (ck.has(n)) return n;
    return null;
  };
  const layerName = (i: number) => (config.family === 'gpt2' ? `h.${i}.attn.c_attn.weight` : `layers.${i}.self_attn.q_proj.weight`);
  for (let i = 0; i < config.numLayers; i++)
    if (!find(layerName(i)))
      throw new Error(`${where}: config.json says ${config.family === 'gpt2' ? 'n_layer' : 'num_hidden_layers'}: ${config.numLayers}, `
        + `but the weights hold ${i} layer(s) (no '${prefix}${layerName(i)}')`);

  const hash = createHash('sha256');
  const all = new Map<string, Tensor>();
  /** The stored tensor `name` checked against `shape` ([rows, cols] as stored), as fp32 on the host. */
  const read = (name: string, shape: number[], dryRun: boolean): Float32Array | null => {
    const found = find(name);
    if (!found) throw new Error(`${where}: lacks tensor '${prefix}${name}', which the ${config.modelType} config needs (the first missing one)`);
    const info = ck.info(found);
    if (!FLOAT_DTYPES.has(info.dtype)) throw new Error(`${where}: tensor '${found}' is ${info.dtype}; weights must be floating point`);
    if (info.shape.join() !== shape.join())
      throw new Error(`${where}: tensor '${found}' has shape [${info.shape.join(', ')}], the config needs [${shape.join(', ')}]`);
    if (dryRun) return null;
    const data = ck.getFloat32(found);
    if (!opts.allowNonFinite) {
      const bad = firstNonFinite(data);
      if (bad >= 0) throw new Error(`${where}: tensor '${found}' holds ${data[bad]} at element ${bad} (pass allowNonFinite: true to load it anyway)`);
    }
    hash.update(found).update(ck.getRaw(found));
    return data;
  };
  const put = (name: string, data: Float32Array, shape: number[]): Tensor => {
    const t = tensor(data, shape, { device, dtype });
    all.set(name, t);
    return t;
  };

  const build = (dry: boolean): DecoderWeights => {
    const H = config.hiddenSize;
    const I = config.intermediateSize;
    const qDim = config.numHeads * config.headDim;
    const kvDim = config.numKvHeads * config.headDim;
    const t = (name: string, shape: number[]) => (dry ? (null as unknown as Tensor) : put(name, read(name, shape, false)!, shape));
    const check = (name: string, shape: number[]) => read(name, shape, dry);
    /** nn.Linear [out, in] as stored (LLaMA family). */
    const linear = (base: string, out: number, inp: number, bias: boolean): Proj => {
      if (dry) {
        check(`${base}.weight`, [out, inp]);
        if (bias) check(`${base}.bias`, [out]);
        return null as unknown as Proj;
      }
      return { weight: t(`${base}.weight`, [out, inp]), bias: bias ? t(`${base}.bias`, [out]) : undefined };
    };
    /** GPT-2's Conv1D, [in, out] as stored: transposed to [out, in]. */
    const conv1d = (base: string, inp: number, out: number): Proj => {
      const w = read(`${base}.weight`, [inp, out], dry);
      const b = read(`${base}.bias`, [out], dry);
      if (dry) return null as unknown as Proj;
      return { weight: put(`${base}.weight`, transposed(w!, inp, out), [out, inp]), bias: put(`${base}.bias`, b!, [out]) };
    };
    const layers: DecoderLayerWeights[] = [];
    if (config.family === 'gpt2') {
      for (let i = 0; i < config.numLayers; i++) {
        const p = `h.${i}`;
        const ln = (n: string) => ({ weight: t(`${p}.${n}.weight`, [H]), bias: t(`${p}.${n}.bias`, [H]) });
        // c_attn [H, 3H] (q | k | v along the output): transposed, then split into three [H, H]
        const w = read(`${p}.attn.c_attn.weight`, [H, 3 * H], dry);
        const b = read(`${p}.attn.c_attn.bias`, [3 * H], dry);
        let q: Proj, k: Proj, v: Proj;
        if (dry) q = k = v = null as unknown as Proj;
        else {
          const wt = transposed(w!, H, 3 * H);
          const part = (j: number, n: string): Proj => ({
            weight: put(`${p}.attn.${n}.weight`, wt.slice(j * H * H, (j + 1) * H * H), [H, H]),
            bias: put(`${p}.attn.${n}.bias`, b!.slice(j * H, (j + 1) * H), [H]),
          });
          [q, k, v] = [part(0, 'q'), part(1, 'k'), part(2, 'v')];
        }
        layers.push({
          norm1: ln('ln_1'), q, k, v, o: conv1d(`${p}.attn.c_proj`, H, H),
          norm2: ln('ln_2'), up: conv1d(`${p}.mlp.c_fc`, H, I), down: conv1d(`${p}.mlp.c_proj`, I, H),
        });
      }
      const wte = t('wte.weight', [config.vocabSize, H]);
      const weights: DecoderWeights = {
        tokens: wte, positions: t('wpe.weight', [config.maxPositions, H]), layers,
        finalNorm: { weight: t('ln_f.weight', [H]), bias: t('ln_f.bias', [H]) },
        lmHead: config.tieEmbeddings ? wte : t('lm_head.weight', [config.vocabSize, H]), all,
      };
      return weights;
    }
    for (let i = 0; i < config.numLayers; i++) {
      const p = `layers.${i}`;
      layers.push({
        norm1: { weight: t(`${p}.input_layernorm.weight`, [H]) },
        q: linear(`${p}.self_attn.q_proj`, qDim, H, config.qkvBias),
        k: linear(`${p}.self_attn.k_proj`, kvDim, H, config.qkvBias),
        v: linear(`${p}.self_attn.v_proj`, kvDim, H, config.qkvBias),
        o: linear(`${p}.self_attn.o_proj`, H, qDim, config.outBias),
        norm2: { weight: t(`${p}.post_attention_layernorm.weight`, [H]) },
        gate: linear(`${p}.mlp.gate_proj`, I, H, config.mlpBias),
        up: linear(`${p}.mlp.up_proj`, I, H, config.mlpBias),
        down: linear(`${p}.mlp.down_proj`, H, I, config.mlpBias),
      });
    }
    const embed = t('embed_tokens.weight', [config.vocabSize, H]);
    return {
      tokens: embed, layers, finalNorm: { weight: t('norm.weight', [H]) },
      lmHead: config.tieEmbeddings ? embed : t('lm_head.weight', [config.vocabSize, H]), all,
    };
  };
  build(true); // every tensor checked against the config from the header, before anything is allocated
  try {
    const weights = build(false);
    return new Decoder(config as DecoderConfig, weights, {
      device, dtype, weightHash: hash.digest('hex'), dir: opts.dir, modelName: opts.modelName, gguf: opts.extra?.gguf,
    });
  } catch (e) {
    for (const t of all.values()) t.dispose();
    throw e;
  }
}
