// loadBackbone(dir): config.json picks the architecture; model.safetensors (or a sharded
// index) gives the weights, with or without the model prefix and with legacy
// LayerNorm gamma/beta names; weights go to the device in the requested dtype.
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { defaultDevice } from '../backend';
import { FloatDType, Tensor, tensor } from '../tensor';
import { LayerWeights, Linear, Norm } from './blocks';
import { EncoderConfig, parseConfig, weightNames } from './config';
import { Backbone, BackboneWeights } from './model';
import { openCheckpoint } from './safetensors';
import { HubOptions, resolveModelDir } from '../io/hub';

/** The files a backbone needs from a hub repo (the tokenizer's come along when present). */
export const BACKBONE_FILES = {
  required: ['config.json'],
  oneOf: [['model.safetensors', 'model.safetensors.index.json']],
  optional: ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt'],
};

export interface LoadOptions extends HubOptions {
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
  const missing: string[] = [];
  // The backbone's identity: sha256 over each used tensor's canonical name and stored bytes.
  const hash = createHash('sha256');

  const load = (name: string, shape: number[]): Tensor => {
    const found = find(name);
    if (!found) {
      missing.push(name);
      return undefined as unknown as Tensor;
    }
    const info = ck.info(found);
    if (info.shape.join() !== shape.join())
      throw new Error(`loadBackbone: tensor '${found}' has shape [${info.shape.join(', ')}], the config needs [${shape.join(', ')}]`);
    const t = tensor(ck.getFloat32(found), shape, { device, dtype });
    hash.update(name).update(ck.getRaw(found));
    all.set(name, t);
    return t;
  };
  const H = config.hiddenSize;
  const lin = (base: string, out: number, inp: number): Linear => ({ weight: load(`${base}.weight`, [out, inp]), bias: load(`${base}.bias`, [out]) });
  const norm = (base: string): Norm => ({ weight: load(`${base}.weight`, [H]), bias: load(`${base}.bias`, [H]) });
  try {
    const embeddings = {
      word: load(names.word, [config.vocabSize, H]),
      position: load(names.position, [config.maxPositions, H]),
      tokenType: names.tokenType ? load(names.tokenType, [config.typeVocabSize, H]) : undefined,
      ln: norm(names.embLn),
    };
    const layers: LayerWeights[] = [];
    for (let i = 0; i < config.numLayers; i++) {
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
    let pooler: Linear | undefined;
    if (names.pooler) {
      const hasPooler = find(`${names.pooler}.weight`) !== null;
      if (hasPooler) pooler = lin(names.pooler, H, H);
    }
    if (missing.length)
      throw new Error(
        `loadBackbone: ${dir} lacks ${missing.length} tensor(s) the ${config.modelType} config needs, e.g. ${missing.slice(0, 4).join(', ')}`,
      );
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
