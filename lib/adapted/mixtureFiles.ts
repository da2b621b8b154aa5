// A routed mixture on disk (this package's format; AdapterHub has no mixtures):
//   dir/mixture_config.json       {name, adapters, top_k, capacity_factor, balance_weight, hidden_size, model_type, version}
//   dir/model_mixture.safetensors the gates, one [A, H] per site, under their names (….adapter_mixture.<name>.gate.weight)
//   dir/<adapter>/                each pool adapter as saveAdapter writes it (AdapterHub's format)
import * as fs from 'fs';
import * as path from 'path';
import { SafetensorsFile, writeSafetensors } from '../io/safetensors';
import { replaceDirAtomic, recoverDir } from '../atomicDir';
import type { Tensor } from '../tensor';
import { AdapterHost, checkDir, copyTensors, f32Tensors, openSafetensors, pyJson, readJson, writeFileAtomic } from '../adapterhub/files';
import { saveAdapter, loadAdapter } from '../adapterhub/files';
import type { MixtureConfig } from './mixture';
import { resolveMixtureConfig } from './mixture';
import type { CompositionBlock } from './composition';

export const MIXTURE_FILES = { config: 'mixture_config.json', weights: 'model_mixture.safetensors' } as const;

export interface MixtureHost extends AdapterHost {
  adapterNames(): string[];
  addMixture(name: string, adapters: string[], config?: Partial<MixtureConfig>): CompositionBlock;
  mixtureAdapters(name: string): string[];
  mixtureConfig(name: string): MixtureConfig;
  mixtureParameters(name: string): Map<string, Tensor>;
  deleteMixture(name: string): void;
}

/** Saves mixture `name` with its adapters into `dir` (replaced as a whole, atomically). */
export function saveMixture(model: MixtureHost, dir: string, name: string): void {
  const c = model.mixtureConfig(name);
  const adapters = model.mixtureAdapters(name);
  const json = {
    name, adapters, top_k: c.topK, capacity_factor: c.capacityFactor, balance_weight: c.balanceWeight,
    hidden_size: model.config.hiddenSize, model_type: model.config.modelType, version: 'fused-adapters.mixture.1',
  };
  const tensors = f32Tensors(model.mixtureParameters(name));
  const owns = (n: string) => n === MIXTURE_FILES.config || n === MIXTURE_FILES.weights || adapters.includes(n);
  replaceDirAtomic(dir, (tmp) => {
    writeSafetensors(path.join(tmp, MIXTURE_FILES.weights), tensors, { format: 'pt' });
    for (const a of adapters) saveAdapter(model, path.join(tmp, a), a, { withHead: false });
    writeFileAtomic(path.join(tmp, MIXTURE_FILES.config), pyJson(json));
  }, { where: 'saveMixture', owns });
}

/** Loads a mixture saved by saveMixture: its adapters (unless the model has them) and its gates. Returns its block. */
export function loadMixture(model: MixtureHost, dir: string): CompositionBlock {
  const where = 'loadMixture';
  dir = recoverDir(dir);
  checkDir(dir, where);
  const json = readJson(path.join(dir, MIXTURE_FILES.config), where);
  const name = json.name;
  const adapters = json.adapters;
  if (typeof name !== 'string' || !Array.isArray(adapters) || !adapters.every((a) => typeof a === 'string'))
    throw new Error(`${where}: ${MIXTURE_FILES.config} must hold "name" and the "adapters" list`);
  if (json.hidden_size !== model.config.hiddenSize)
    throw new Error(`${where}: the mixture was saved for hidden size ${String(json.hidden_size)}, the model has ${model.config.hiddenSize}`);
  const config = resolveMixtureConfig({ topK: json.top_k as 1 | 2, capacityFactor: json.capacity_factor as number, balanceWeight: json.balance_weight as number }, where);
  const file = path.join(dir, MIXTURE_FILES.weights);
  if (!fs.existsSync(file)) throw new Error(`${where}: ${dir} has no ${MIXTURE_FILES.weights}`);
  const added: string[] = [];
  const st: SafetensorsFile = openSafetensors(file, where);
  try {
    for (const a of adapters as string[])
      if (!model.adapterNames().includes(a)) {
        loadAdapter(model, path.join(dir, a));
        added.push(a);
      }
    const block = model.addMixture(name, adapters as string[], config);
    try {
      copyTensors(st, model.mixtureParameters(name), (n) => n, true, `${where}: ${file}`, []);
    } catch (e) {
      model.deleteMixture(name);
      throw e;
    }
    return block;
  } catch (e) {
    for (const a of added) model.deleteAdapter(a);
    throw e;
  } finally {
    st.close();
  }
}
