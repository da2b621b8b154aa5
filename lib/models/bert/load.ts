// loadBackbone(dir): config.json picks the architecture; model.safetensors (or a sharded
// index) gives the weights, with or without the model prefix and with legacy
// LayerNorm gamma/beta names; weights go to the device in the requested dtype.
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { defaultDevice } from '../../backend';
import { FloatDType, Tensor, tensor } from '../../tensor';
import { LayerWeights, Linear, Norm } from './blocks';
import { EncoderConfig, parseConfig, weightNames } from './config';
import { Backbone, BackboneWeights } from './model';
import { openCheckpoint } from '../../io/safetensors';
import { HubOptions, resolveModelDir } from '../../io/hub';

/** The files a backbone needs from a hub repo (the tokenizer's come along when present). */
export const BACKBONE_FILES = {
  required: ['config.json'],
  oneOf: [['model.safetensors', 'model.safetensors.index.json']],
  optional: ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt'],
};

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);

/** Index of the first NaN or ±Infinity, or -1. */
function firstNonFinite(a: Float32Array): number {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return i;
  return -1;
}

export interface LoadOptions extends HubOptions {
  /** Load weights that hold NaN or ±Infinity (refused by default). */
  allowNonFinite?: boolean;
  device?: string;
  /** Default: bfloat16 on CUDA, float32 on the CPU. */
  dtype?: FloatDType;
  seed?: number;
}

type Checkpoint = ReturnType<typeof openCheckpoint>;

/** Finds `name` in the checkpoint: as is, without the model prefix, or with legacy gamma/beta. */
function resolver(ck: Checkpoint, prefix: string) {
  return (name: string): string | null => {
    const bare = name.startsWith(prefix + '.') ? name.slice(prefix.length + 1) : name;
    const legacy = (n: string) => n.replace(/LayerNorm\.weight$/, 'LayerNorm.gamma').replace(/LayerNorm\.bias$/, 'LayerNorm.beta');
    for (const c of [name, bare, legacy(name), legacy(bare)]) if (ck.has(c)) return c;
    return null;
  };
}

/**
 * Loads a frozen backbone from a local directory or a Hugging Face hub repo id
 * ('sentence-transformers/all-MiniLM-L6-v2'), downloaded into (or found in) the hub cache.
 */
export async function loadBackbone(nameOrDir: string, opts: LoadOptions = {}): Promise<Backbone> {
  const dir = await resolveModelDir(nameOrDir, BACKBONE_FILES, opts);
  const fromHub = dir !== path.resolve(nameOrDir); // then the model is named by its repo id
  const cfgPath = path.join(dir, 'config.json');
  let rawText: string;
  try {
    rawText = await fs.promises.readFile(cfgPath, 'utf8');
  } catch (e) {
    throw new Error(`loadBackbone: cannot read ${cfgPath} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(rawText);
  } catch (e) {
    throw new Error(`loadBackbone: ${cfgPath} is not valid JSON (${(e as Error).message})`);
  }
  const config = parseConfig(raw);
  const device = opts.device ?? defaultDevice();
  const dtype: FloatDType = opts.dtype ?? (device.startsWith('cuda') ? 'bfloat16' : 'float32');
  const ck = openCheckpoint(dir);
  const names = weightNames(config);
  const find = resolver(ck, names.prefix);
  const all = new Map<string, Tensor>();
  // The backbone's identity: sha256 over each used tensor's canonical name and stored bytes.
  const hash = createHash('sha256');
  const where = `loadBackbone: ${dir}`;

  // The config against the file's header before anything is allocated: the layers it claims exist.
  const L = config.numLayers;
  for (let i = 0; i < L; i++) {
    const probe = `${names.layer(i).q}.weight`;
    if (!find(probe)) {
      const field = config.modelType === 'distilbert' ? 'n_layers' : 'num_hidden_layers';
      throw new Error(`${where}: config.json says ${field}: ${L}, but the weights hold ${i} layer(s) (no '${probe}')`);
    }
  }

  // Every tensor checked (present, float, the config's shape) from the header alone, then loaded.
  const check = (name: string, shape: number[]): string => {
    const found = find(name);
    if (!found) throw new Error(`${where}: lacks tensor '${name}', which the ${config.modelType} config needs (the first missing one)`);
    const info = ck.info(found);
    if (!FLOAT_DTYPES.has(info.dtype))
      throw new Error(`${where}: tensor '${found}' is ${info.dtype}; backbone weights must be floating point (F32, F16, BF16, F64)`);
    if (info.shape.join() !== shape.join())
      throw new Error(`${where}: tensor '${found}' has shape [${info.shape.join(', ')}], the config needs [${shape.join(', ')}]`);
    return found;
  };
  const load = (name: string, shape: number[]): Tensor => {
    const found = check(name, shape);
    const data = ck.getFloat32(found);
    if (!opts.allowNonFinite) {
      const bad = firstNonFinite(data);
      if (bad >= 0)
        throw new Error(`${where}: tensor '${found}' holds ${data[bad]} at element ${bad} (pass allowNonFinite: true to load it anyway)`);
    }
    const t = tensor(data, shape, { device, dtype });
    hash.update(name).update(ck.getRaw(found));
    all.set(name, t);
    return t;
  };
  const H = config.hiddenSize;
  const build = (get: (name: string, shape: number[]) => Tensor) => {
    const lin = (base: string, out: number, inp: number): Linear => ({ weight: get(`${base}.weight`, [out, inp]), bias: get(`${base}.bias`, [out]) });
    const norm = (base: string): Norm => ({ weight: get(`${base}.weight`, [H]), bias: get(`${base}.bias`, [H]) });
    const embeddings = {
      word: get(names.word, [config.vocabSize, H]),
      position: get(names.position, [config.maxPositions, H]),
      tokenType: names.tokenType ? get(names.tokenType, [config.typeVocabSize, H]) : undefined,
      ln: norm(names.embLn),
    };
    const layers: LayerWeights[] = [];
    for (let i = 0; i < L; i++) {
      const n = names.layer(i);
      layers.push({
        attn: { q: lin(n.q, H, H), k: lin(n.k, H, H), v: lin(n.v, H, H) },
        attnOut: lin(n.attnOut, H, H),
        attnLn: norm(n.attnLn),
        inter: lin(n.inter, config.intermediateSize, H),
        out: lin(n.out, H, config.intermediateSize),
        outLn: norm(n.outLn),
      });
    }
    const pooler = names.pooler && find(`${names.pooler}.weight`) !== null ? lin(names.pooler, H, H) : undefined;
    return { embeddings, layers, pooler };
  };
  build((name, shape) => {
    check(name, shape);
    return undefined as unknown as Tensor;
  });
  try {
    const { embeddings, layers, pooler } = build(load);
    const weights: BackboneWeights = { embeddings, layers, pooler, all };
    const raw = config.raw as { _name_or_path?: string };
    return new Backbone({ ...config, hasPooler: !!pooler } as EncoderConfig, names, weights, {
      device, dtype, seed: opts.seed, weightHash: hash.digest('hex'),
      modelName: fromHub ? nameOrDir : raw._name_or_path || path.basename(path.resolve(dir)), dir: path.resolve(dir),
    });
  } catch (e) {
    for (const t of all.values()) t.dispose();
    throw e;
  }
}
