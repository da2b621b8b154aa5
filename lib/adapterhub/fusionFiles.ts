// AdapterFusion files as AdapterHub writes them (save_adapter_fusion(..., use_safetensors=True)):
//   dir/adapter_fusion_config.json   {adapter_names, config, hidden_size, model_class, model_name, model_type, name, version}
//   dir/model_adapter_fusion.safetensors   <layer prefix>.adapter_fusion_layer.<name>.{query,key,value}.*
// A fusion saved by AdapterHub loads here once its adapters are loaded, and the reverse. Tensor names
// with or without the model prefix ('bert.') are read, as AdapterHub reads both.
import * as fs from 'fs';
import * as path from 'path';
import { SafetensorsFile, writeSafetensors } from '../io/safetensors';
import { replaceDirAtomic, newSaveId, recoverDir } from '../atomicDir';
import type { Tensor } from '../tensor';
import { FusionConfig, resolveFusionConfig } from '../adapted/fusion';
import type { FusionConfigInput } from '../adapted/fusion';
import {
  ADAPTERHUB_VERSION, AdapterHost, checkDir, copyTensors, f32Tensors, HEAD_FILES, headFiles, modelClass, openSafetensors, pyJson, readJson,
  writeFileAtomic, writeHead,
} from './files';
import type { Backbone } from '../models/bert/model';

export const FUSION_FILES = {
  config: 'adapter_fusion_config.json',
  weights: 'model_adapter_fusion.safetensors',
  pickleWeights: 'pytorch_model_adapter_fusion.bin',
} as const;

/** What the fusion files need of a model. */
export interface FusionHost extends AdapterHost {
  addFusion(adapters: string[], config?: FusionConfigInput, opts?: { name?: string }): string;
  fusionConfig(name: string): FusionConfig;
  fusionParameters(name: string): Map<string, Tensor>;
  fusionNames(): string[];
  deleteFusion(name: string): void;
  fusionAdapters(name: string): string[];
  adapterNames(): string[];
}

/** Whether an entry of a directory is one saveFusion writes (and so may replace): the fusion's files and a head's. */
export const ownsFusionEntry = (n: string): boolean => (Object.values(FUSION_FILES) as string[]).includes(n) || HEAD_FILES.includes(n);

/**
 * Saves fusion `name` into `dir` (replaced as a whole, atomically); with `head`, that head's files go
 * beside it (head_config.json, model_head.safetensors), as AdapterHub's save_adapter_fusion(with_head=True).
 */
export function saveFusion(model: FusionHost, dir: string, name: string, opts: { head?: string; labels?: (string | number)[] } = {}): void {
  const where = 'saveFusion';
  const config = model.fusionConfig(name); // throws for an unknown fusion
  const saveId = newSaveId();
  const head = opts.head === undefined ? null : headFiles(model as unknown as Backbone, opts.head, opts.labels, where, saveId);
  const json = {
    adapter_names: model.fusionAdapters(name),
    config: { ...config },
    hidden_size: model.config.hiddenSize,
    model_class: modelClass(model),
    model_name: model.modelName,
    model_type: model.config.modelType,
    name,
    version: ADAPTERHUB_VERSION,
    save_id: saveId, // ours; AdapterHub ignores unknown top-level keys
  };
  const text = pyJson(json);
  const tensors = f32Tensors(model.fusionParameters(name));
  replaceDirAtomic(dir, (tmp) => {
    writeSafetensors(path.join(tmp, FUSION_FILES.weights), tensors, { format: 'pt', save_id: saveId });
    if (head) writeHead(tmp, head, saveId);
    writeFileAtomic(path.join(tmp, FUSION_FILES.config), text);
  }, { where, owns: ownsFusionEntry });
}

/**
 * Loads a fusion saved by AdapterHub or saveFusion; its adapters must be loaded first. Returns its name.
 * On any error nothing is added.
 */
export function loadFusion(model: FusionHost, dir: string, opts: { strict?: boolean } = {}): string {
  const where = 'loadFusion';
  dir = recoverDir(dir);
  checkDir(dir, where);
  const json = readJson(path.join(dir, FUSION_FILES.config), where);
  const file = path.join(dir, FUSION_FILES.weights);
  if (!fs.existsSync(file)) {
    if (fs.existsSync(path.join(dir, FUSION_FILES.pickleWeights)))
      throw new Error(`${where}: ${dir} holds only ${FUSION_FILES.pickleWeights} (a pickle, never read here); save it from AdapterHub with use_safetensors=True`);
    throw new Error(`${where}: ${dir} has no ${FUSION_FILES.weights}`);
  }
  const name = json.name;
  if (typeof name !== 'string' || !name) throw new Error(`${where}: ${FUSION_FILES.config} has no "name"`);
  const names = Array.isArray(json.adapter_names) ? json.adapter_names : name.split(',');
  if (!names.length || !names.every((n): n is string => typeof n === 'string' && n.length > 0))
    throw new Error(`${where}: "adapter_names" must list the fused adapters`);
  if (typeof json.hidden_size === 'number' && json.hidden_size !== model.config.hiddenSize)
    throw new Error(`${where}: the fusion was saved for hidden size ${json.hidden_size}, the model has ${model.config.hiddenSize}`);
  const have = new Set(model.adapterNames());
  const missing = names.filter((n) => !have.has(n));
  if (missing.length) throw new Error(`${where}: the fusion '${name}' needs adapter(s) ${missing.join(', ')}; load them first (loadAdapter)`);
  if (model.fusionNames().includes(name)) throw new Error(`${where}: a fusion named '${name}' already exists (deleteFusion first)`);
  const raw = json.config;
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`${where}: "config" must be an object of fusion fields`);
  const fields = Object.fromEntries(Object.entries(raw as Record<string, unknown>).filter(([k]) => k !== 'architecture'));
  const config = resolveFusionConfig(fields as FusionConfigInput, where);
  const st: SafetensorsFile = openSafetensors(file, where);
  try {
    model.addFusion(names, config, { name });
    try {
      const prefix = model.names.prefix + '.';
      const rename = (n: string) => (n.startsWith(prefix) ? n : prefix + n);
      copyTensors(st, model.fusionParameters(name), rename, opts.strict ?? true, `${where}: ${file}`, []);
    } catch (e) {
      model.deleteFusion(name);
      throw e;
    }
  } finally {
    st.close();
  }
  return name;
}
