// Adapter and head files in AdapterHub's format (the `adapters` library, use_safetensors=True), so
// adapters move both ways between this package and Python:
//
//   dir/adapter_config.json       {config, hidden_size, model_class, model_name, model_type, name, version}
//                                 plus `backbone` {weight_hash, num_layers, hidden_size, model_type, save_id}, which
//                                 AdapterHub ignores and which lets this package recognise its backbone
//   dir/adapter.safetensors       the adapter's tensors under AdapterHub's names, F32, metadata {format: pt, save_id}
//   dir/head_config.json          {config, hidden_size, model_class, model_name, model_type, name, version, save_id}
//   dir/model_head.safetensors    heads.<name>.1.weight/bias, heads.<name>.4.weight/bias, metadata {format: pt, save_id}
//
// A save replaces `dir` as a whole (lib/atomicDir.ts: a fresh sibling directory, then two renames), so after a
// kill at any instant the directory holds one complete save; save_id (128 random bits, the same in every file of
// one save) lets the loader refuse files from different saves. Files without a save id (AdapterHub's) load as before.
//
// The JSON is written as Python's json.dump(..., indent=2, sort_keys=True) writes it, with float fields
// (scaling, dropout, ...) keeping a decimal point: AdapterHub tests `isinstance(scaling, float)`, so a
// scaling of 1 must read back in Python as 1.0, not as the int 1.
//
// Pickle files (pytorch_adapter.bin, pytorch_model_head.bin) are never read.
import * as fs from 'fs';
import { newSaveId, recoverDir, replaceDirAtomic } from '../atomicDir';
import { writeTextAtomic } from '../atomicWrite';
import * as path from 'path';
import { AdapterConfigInput, BnConfig, bottleneckSize, configName, resolveConfig } from '../methods/bottleneck/config';
import type { Backbone } from '../models/bert/model';
import type { ClassificationHead } from '../heads/classification';
import { SafetensorsFile, TensorToWrite, writeSafetensors } from '../io/safetensors';
import type { Tensor } from '../tensor';

/** AdapterHub's file names (adapters/utils.py). */
export const ADAPTER_FILES = {
  config: 'adapter_config.json',
  weights: 'adapter.safetensors',
  pickleWeights: 'pytorch_adapter.bin',
  headConfig: 'head_config.json',
  headWeights: 'model_head.safetensors',
  pickleHeadWeights: 'pytorch_model_head.bin',
} as const;

/**
 * The `version` written into the JSON files. AdapterHub writes "adapters." + its own __version__; we write
 * the release whose BnConfig field set (incl. init_weights_seed and stochastic_depth) these files carry,
 * checked against that release by test/reference/adapterhub.test.ts.
 * A version >= 1.1.0 with the "adapters." prefix also keeps AdapterHub's loader from applying its fix-ups
 * for files from older releases (its LoRA alpha rewrite, the activation renames of unversioned files).
 */
export const ADAPTERHUB_VERSION = 'adapters.1.3.0';

export interface SaveAdapterOptions {
  /** Also save the head named like the adapter (default: when such a head exists). */
  withHead?: boolean;
  /** Label names of the head's outputs, by index; recorded as AdapterHub's label2id. */
  labels?: (string | number)[];
}

export interface LoadAdapterOptions {
  /** Name to load the adapter (and its head) as; default the name it was saved with. */
  loadAs?: string;
  /** Load the head too (default: when the directory holds one); true makes a missing head an error. */
  withHead?: boolean;
  /** Tensors in the files that the adapter does not have are an error (default true); else a warning. */
  strict?: boolean;
}

export interface LoadedAdapter {
  name: string;
  warnings: string[];
  /** The head's label names by index, when the head file records them. */
  labels?: string[];
}

export interface SaveHeadOptions {
  labels?: (string | number)[];
}

export interface LoadHeadOptions {
  loadAs?: string;
  strict?: boolean;
}

export interface LoadedHead {
  name: string;
  warnings: string[];
  labels?: string[];
}

// ---------------------------------------------------------------------------------------------
// JSON as Python writes it
// ---------------------------------------------------------------------------------------------

/** A number that Python must read as a float (written with a decimal point when integral). */
class PyFloat {
  constructor(readonly value: number) {}
}

function pyString(s: string): string {
  // json.dump's default ensure_ascii=True: everything above U+007F as \uXXXX (lowercase hex)
  return JSON.stringify(s).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function pyNumber(v: number, float: boolean): string {
  if (!Number.isFinite(v)) throw new Error(`adapter files: cannot write the number ${v} as JSON`);
  if (float && Number.isInteger(v)) return Math.abs(v) < 1e16 ? `${v}.0` : JSON.stringify(v);
  return JSON.stringify(v);
}

/** json.dumps(value, indent=2, sort_keys=True). */
export function pyJson(value: unknown, indent = ''): string {
  if (value === null || value === undefined) return 'null';
  if (value instanceof PyFloat) return pyNumber(value.value, true);
  if (typeof value === 'number') return pyNumber(value, false);
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'string') return pyString(value);
  const inner = indent + '  ';
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    return `[\n${value.map((v) => inner + pyJson(v, inner)).join(',\n')}\n${indent}]`;
  }
  if (typeof value === 'object') {
    const keys = Object.keys(value as object).sort();
    if (keys.length === 0) return '{}';
    const o = value as Record<string, unknown>;
    return `{\n${keys.map((k) => `${inner}${pyString(k)}: ${pyJson(o[k], inner)}`).join(',\n')}\n${indent}}`;
  }
  throw new Error(`adapter files: cannot write a ${typeof value} as JSON`);
}

/** Writes `text` to `file` atomically (see lib/atomicWrite.ts). */
export function writeFileAtomic(file: string, text: string): void {
  try {
    writeTextAtomic(file, text);
  } catch (e) {
    throw new Error(`cannot write ${file}: ${(e as Error).message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// What the files hold
// ---------------------------------------------------------------------------------------------

const MODEL_CLASS: Record<string, string> = {
  bert: 'BertAdapterModel', roberta: 'RobertaAdapterModel', distilbert: 'DistilBertAdapterModel',
  gpt2: 'GPT2AdapterModel', llama: 'LlamaAdapterModel', mistral: 'MistralAdapterModel',
};

/**
 * What the adapter files need of a model: an encoder (Backbone) or a decoder (Decoder). Heads are
 * the encoder's (classification heads); a model without head() saves and loads adapters only.
 */
export interface AdapterHost {
  readonly config: { hiddenSize: number; numLayers: number; modelType: string };
  readonly modelName: string;
  readonly weightHash: string;
  /** The checkpoint prefix ('bert', 'model', 'transformer') and AdapterHub's name of an adapter site. */
  readonly names: { prefix: string; adapterPrefix(layer: number, site: 'mh' | 'output', name: string): string };
  adapterConfig(name: string): BnConfig;
  adapterParameters(name: string): Map<string, Tensor>;
  addAdapter(name: string, config: AdapterConfigInput): void;
  deleteAdapter(name: string): void;
  head?(name: string): ClassificationHead | undefined;
}

function isBackbone(model: AdapterHost): model is Backbone {
  return typeof model.head === 'function';
}

/**
 * AdapterHub's flexible-head model class for the backbone (e.g. BertAdapterModel). AdapterHub only loads a
 * head saved from the same model class, and a model with our heads is its <Arch>AdapterModel.
 */
export function modelClass(model: AdapterHost): string {
  return MODEL_CLASS[model.config.modelType] ?? `${model.config.modelType}AdapterModel`;
}

/**
 * BnConfig.to_dict() of AdapterHub 1.3 for our config: every field, the unsupported ones at their defaults.
 * No `architecture` key: AdapterHub's bottleneck configs have architecture None, which to_dict() leaves out,
 * and its loader picks the config class by that key (KeyError for 'bottleneck').
 */
function adapterConfigDict(c: BnConfig): Record<string, unknown> {
  return {
    mh_adapter: c.mh_adapter,
    output_adapter: c.output_adapter,
    reduction_factor: c.reduction_factor,
    non_linearity: c.non_linearity,
    original_ln_before: c.original_ln_before,
    original_ln_after: c.original_ln_after,
    ln_before: c.ln_before,
    ln_after: c.ln_after,
    init_weights: c.init_weights,
    init_weights_seed: null,
    is_parallel: c.is_parallel,
    scaling: typeof c.scaling === 'number' ? new PyFloat(c.scaling) : c.scaling,
    use_gating: c.use_gating,
    residual_before_ln: c.residual_before_ln,
    adapter_residual_before_ln: c.adapter_residual_before_ln,
    inv_adapter: null,
    inv_adapter_reduction_factor: null,
    cross_adapter: false,
    leave_out: c.leave_out.slice(),
    dropout: new PyFloat(c.dropout),
    phm_layer: false,
    phm_dim: 4,
    factorized_phm_W: true,
    shared_W_phm: false,
    shared_phm_rule: true,
    factorized_phm_rule: false,
    phm_c_init: 'normal',
    phm_init_range: new PyFloat(0.0001),
    learn_phm: true,
    hypercomplex_nonlinearity: 'glorot-uniform',
    phm_rank: 1,
    phm_bias: true,
    stochastic_depth: new PyFloat(0),
  };
}

export function f32Tensors(params: Map<string, Tensor>): Record<string, TensorToWrite> {
  const out: Record<string, TensorToWrite> = {};
  // a copy made here: the native layer's arrays may come from another JS realm (instanceof checks fail)
  for (const [k, t] of params) out[k] = { dtype: 'F32', shape: [...t.shape], data: new Float32Array(t.toArray()) };
  return out;
}

function label2id(labels: (string | number)[] | undefined, numLabels: number, where: string): Record<string, number> | null {
  if (labels === undefined) return null;
  if (!Array.isArray(labels) || labels.length !== numLabels)
    throw new Error(`${where}: labels must be an array of ${numLabels} names (one per output), got ${Array.isArray(labels) ? labels.length : typeof labels}`);
  const m: Record<string, number> = Object.create(null);
  labels.forEach((l, i) => {
    if (typeof l !== 'string' && typeof l !== 'number') throw new Error(`${where}: label ${i} must be a string or a number`);
    const k = String(l);
    if (k in m) throw new Error(`${where}: label '${k}' appears twice`);
    m[k] = i;
  });
  return m;
}

export interface HeadFiles {
  config: string;
  tensors: Record<string, TensorToWrite>;
}

export function headFiles(model: Backbone, name: string, labels: (string | number)[] | undefined, where: string, saveId: string): HeadFiles {
  const head = model.head(name);
  if (!head) throw new Error(`${where}: no head named '${name}'`);
  const dropout = head.dropout === model.config.hiddenDropout ? null : new PyFloat(head.dropout);
  const json = {
    config: {
      head_type: 'classification', num_labels: head.numLabels, layers: 2, activation_function: 'tanh',
      label2id: label2id(labels, head.numLabels, where), use_pooler: false, bias: true, dropout_prob: dropout,
    },
    hidden_size: model.config.hiddenSize,
    model_class: modelClass(model),
    model_name: model.modelName,
    model_type: model.config.modelType,
    name,
    version: ADAPTERHUB_VERSION,
    save_id: saveId, // ours; AdapterHub ignores unknown top-level keys
  };
  return { config: pyJson(json), tensors: f32Tensors(head.parameters()) };
}

/** Entries that an adapter or head save writes into its directory (plus our per-file temporaries of older releases). */
const SAVED_FILES: readonly string[] = Object.values(ADAPTER_FILES);
export const HEAD_FILES: readonly string[] = [ADAPTER_FILES.headConfig, ADAPTER_FILES.headWeights, ADAPTER_FILES.pickleHeadWeights];
const isLeftoverTemp = (n: string, names: readonly string[]) => names.some((f) => n.startsWith(`${f}.tmp-`) && /^\d+-[0-9a-f]+$/.test(n.slice(f.length + 5)));
/** Whether an entry of a directory is one that saveAdapter writes (and so may replace). */
export const ownsAdapterEntry = (n: string): boolean => SAVED_FILES.includes(n) || isLeftoverTemp(n, SAVED_FILES);

/** The save id recorded in a JSON file of ours (adapter_config.json: backbone.save_id; head_config.json: save_id). */
function jsonSaveId(json: Record<string, unknown>): string | undefined {
  const bb = json.backbone && typeof json.backbone === 'object' ? (json.backbone as Record<string, unknown>) : null;
  const id = bb ? bb.save_id : json.save_id;
  return typeof id === 'string' ? id : undefined;
}

/**
 * Refuses two files of one directory that record different save ids. A file without an id (written by
 * AdapterHub or by hand) is not compared: only files of ours are known to belong to one save.
 */
function checkSameSave(dir: string, a: [string, string | undefined], b: [string, string | undefined], where: string): void {
  if (a[1] === undefined || b[1] === undefined || a[1] === b[1]) return;
  throw new Error(`${where}: ${a[0]} and ${b[0]} in ${dir} come from different saves (save id ${a[1].slice(0, 12)}… and `
    + `${b[1].slice(0, 12)}…); the directory was assembled from two saves or overwritten in part. Save the adapter again`);
}

export function writeHead(dir: string, h: HeadFiles, saveId: string): void {
  writeSafetensors(path.join(dir, ADAPTER_FILES.headWeights), h.tensors, { format: 'pt', save_id: saveId });
  writeFileAtomic(path.join(dir, ADAPTER_FILES.headConfig), h.config);
}

/**
 * Saves adapter `name` (and its head) into `dir` in AdapterHub's format. The directory is replaced as a
 * whole (lib/atomicDir.ts): readers, also after a kill at any instant, find the previous save or this one,
 * never a mix; a directory holding files that a save does not write is refused. Every file records this
 * save's id (adapter_config.json backbone.save_id, head_config.json save_id, the safetensors metadata
 * save_id), so files from different saves are refused by loadAdapter. Without a head, head files of an
 * earlier save are dropped, so that the directory never pairs this adapter with another head.
 */
export function saveAdapter(model: AdapterHost, dir: string, name: string, opts: SaveAdapterOptions = {}): void {
  const where = 'saveAdapter';
  const cfg = model.adapterConfig(name); // throws for an unknown adapter
  const withHead = opts.withHead ?? model.head?.(name) !== undefined;
  if (opts.labels !== undefined && !withHead) throw new Error(`${where}: labels are recorded with the head; there is no head '${name}' to save`);
  if (withHead && !isBackbone(model)) throw new Error(`${where}: a ${model.config.modelType} model has no heads to save`);
  const saveId = newSaveId();
  const head = withHead && isBackbone(model) ? headFiles(model, name, opts.labels, where, saveId) : null;
  const json = {
    config: adapterConfigDict(cfg),
    hidden_size: model.config.hiddenSize,
    model_class: modelClass(model),
    model_name: model.modelName,
    model_type: model.config.modelType,
    name,
    version: ADAPTERHUB_VERSION,
    backbone: {
      weight_hash: model.weightHash, num_layers: model.config.numLayers,
      hidden_size: model.config.hiddenSize, model_type: model.config.modelType, save_id: saveId,
    },
  };
  const configText = pyJson(json);
  const tensors = f32Tensors(model.adapterParameters(name));
  replaceDirAtomic(dir, (tmp) => {
    writeSafetensors(path.join(tmp, ADAPTER_FILES.weights), tensors, { format: 'pt', save_id: saveId });
    if (head) writeHead(tmp, head, saveId);
    writeFileAtomic(path.join(tmp, ADAPTER_FILES.config), configText);
  }, { where, owns: ownsAdapterEntry });
}

/**
 * Saves head `name` alone into `dir` (head_config.json and model_head.safetensors), replacing the directory
 * as a whole like saveAdapter. An adapter saved in `dir` is kept (carried into the new directory) and the head
 * joins its save (records its save id), so loadAdapter loads the two together.
 */
export function saveHead(model: Backbone, dir: string, name: string, opts: SaveHeadOptions = {}): void {
  const where = 'saveHead';
  recoverDir(dir);
  let saveId = newSaveId();
  const adapterCfg = path.join(dir, ADAPTER_FILES.config);
  if (fs.existsSync(adapterCfg)) {
    try {
      saveId = jsonSaveId(JSON.parse(fs.readFileSync(adapterCfg, 'utf8'))) ?? saveId;
    } catch {
      // not ours, or unreadable: the head gets its own id
    }
  }
  const h = headFiles(model, name, opts.labels, where, saveId);
  const adapterFiles = SAVED_FILES.filter((f) => !HEAD_FILES.includes(f));
  replaceDirAtomic(dir, (tmp) => writeHead(tmp, h, saveId), {
    where,
    owns: (n) => HEAD_FILES.includes(n) || isLeftoverTemp(n, SAVED_FILES),
    carry: (n) => adapterFiles.includes(n),
  });
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

const warned = new Set<string>();
/** Whether a warning was already printed by this module (callers that print warnings skip it). */
export function warningPrinted(msg: string): boolean {
  return warned.has(msg);
}

function warnOnce(msg: string): void {
  if (warned.has(msg)) return;
  warned.add(msg);
  console.warn(msg);
}

export function checkDir(dir: string, where: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new Error(`${where}: directory '${dir}' does not exist`);
  }
  if (!st.isDirectory()) throw new Error(`${where}: '${dir}' is not a directory`);
}

export function readJson(file: string, where: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${where}: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new Error(`${where}: ${file} is not valid JSON (${(e as Error).message})`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${where}: ${file} must hold a JSON object`);
  return v as Record<string, unknown>;
}

function pickleRefusal(where: string, dir: string, pickle: string, safe: string, kind: 'adapter' | 'head'): Error {
  const save = kind === 'adapter'
    ? `model.load_adapter('${dir}'); model.save_adapter(out_dir, name, use_safetensors=True)`
    : `model.load_head('${dir}'); model.save_head(out_dir, name, use_safetensors=True)`;
  return new Error(
    `${where}: ${dir} holds only the pickle file ${pickle}, no ${safe}. Pickle files can run arbitrary code when `
    + `loaded, so they are refused. Convert it once in Python:\n`
    + `  python -c "import torch; from safetensors.torch import save_file; sd = torch.load('${path.join(dir, pickle)}', `
    + `map_location='cpu', weights_only=True); save_file({k: v.contiguous() for k, v in sd.items()}, '${path.join(dir, safe)}', metadata={'format': 'pt'})"\n`
    + `or with AdapterHub: ${save}`);
}

/** The tensors file of `dir`, refusing pickles. */
function weightsFile(dir: string, safe: string, pickle: string, kind: 'adapter' | 'head', where: string): string {
  const p = path.join(dir, safe);
  if (fs.existsSync(p)) return p;
  const bins = fs.readdirSync(dir).filter((f) => f.endsWith('.bin'));
  if (fs.existsSync(path.join(dir, pickle))) throw pickleRefusal(where, dir, pickle, safe, kind);
  if (kind === 'adapter' && bins.length) throw pickleRefusal(where, dir, bins[0], safe, kind);
  throw new Error(`${where}: ${dir} has no ${safe}`);
}

interface Identity { modelType?: string; hidden?: number; layers?: number }

function describe(i: Identity): string {
  const parts = [i.hidden !== undefined ? `hidden size ${i.hidden}` : '', i.layers !== undefined ? `${i.layers} layers` : ''].filter(Boolean);
  return `${i.modelType ?? 'an unknown model type'}${parts.length ? ` with ${parts.join(' and ')}` : ''}`;
}

/** Throws when the recorded backbone differs from `model` in model type, hidden size or layer count. */
function checkIdentity(model: AdapterHost, what: string, saved: Identity): void {
  const mine: Identity = { modelType: model.config.modelType, hidden: model.config.hiddenSize, layers: model.config.numLayers };
  const differs = (saved.modelType !== undefined && saved.modelType !== mine.modelType)
    || (saved.hidden !== undefined && saved.hidden !== mine.hidden)
    || (saved.layers !== undefined && saved.layers !== mine.layers);
  if (!differs) return;
  const shown: Identity = { modelType: mine.modelType, hidden: mine.hidden, layers: saved.layers !== undefined ? mine.layers : undefined };
  throw new Error(`${what} was trained on ${describe(saved)}, this backbone is ${describe(shown)}`);
}

const optNum = (v: unknown): number | undefined => (typeof v === 'number' ? v : undefined);
const optStr = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

// adapters/utils.py ACTIVATION_RENAME: unversioned (old) files meant gelu_new by 'gelu'
const ACTIVATION_RENAME: Record<string, string> = { gelu: 'gelu_new', gelu_orig: 'gelu' };

// adapters/loading.py: weight names of old adapter-transformers files
const LEGACY_WEIGHT_NAMES: [string, string][] = [
  ['attention_text_task_adapters', 'adapters'], ['attention_text_lang_adapters', 'adapters'],
  ['layer_text_task_adapters', 'adapters'], ['layer_text_lang_adapters', 'adapters'],
  ['invertible_lang_adapters', 'invertible_adapters'],
];

/** adapter_config.json's `config` (AdapterHub 1.x, adapter-transformers 2/3, or a config name) → our BnConfig. */
function toBnConfig(raw: unknown, versioned: boolean, where: string): { config: BnConfig; invertible: boolean } {
  if (typeof raw === 'string') return { config: resolveConfig(configName(raw)), invertible: false };
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`${where}: "config" must be an object or a config name`);
  const c = raw as Record<string, unknown>;
  if (c.architecture !== undefined && c.architecture !== null && c.architecture !== 'bottleneck')
    throw new Error(`${where}: the adapter's architecture is '${String(c.architecture)}'; only bottleneck adapters are supported`);
  for (const k of ['mh_adapter', 'output_adapter', 'reduction_factor', 'non_linearity'])
    if (c[k] === undefined || c[k] === null) throw new Error(`${where}: "config" lacks the required field ${k}`);
  for (const k of ['mh_adapter', 'output_adapter', 'original_ln_before', 'original_ln_after', 'ln_before', 'ln_after',
    'is_parallel', 'use_gating', 'adapter_residual_before_ln'])
    if (c[k] !== undefined && typeof c[k] !== 'boolean') throw new Error(`${where}: "config".${k} must be true or false`);
  if (c.residual_before_ln !== undefined && c.residual_before_ln !== true)
    throw new Error(`${where}: residual_before_ln=${JSON.stringify(c.residual_before_ln)} is not supported (only true)`);
  if (c.phm_layer === true) throw new Error(`${where}: PHM (Compacter) adapters are not supported`);
  if (typeof c.stochastic_depth === 'number' && c.stochastic_depth !== 0) throw new Error(`${where}: stochastic_depth is not supported`);
  if (typeof c.non_linearity !== 'string') throw new Error(`${where}: "config".non_linearity must be a string`);
  const inv = c.inv_adapter ?? (c.invertible_adapter as { block_type?: unknown } | null | undefined)?.block_type;
  // AdapterHub's BnConfig defaults for whatever an older file does not record
  const cfg: BnConfig = {
    architecture: 'bottleneck',
    mh_adapter: c.mh_adapter as boolean,
    output_adapter: c.output_adapter as boolean,
    reduction_factor: c.reduction_factor as BnConfig['reduction_factor'],
    non_linearity: versioned ? c.non_linearity : ACTIVATION_RENAME[c.non_linearity] ?? c.non_linearity,
    original_ln_before: (c.original_ln_before as boolean | undefined) ?? false,
    original_ln_after: (c.original_ln_after as boolean | undefined) ?? true,
    residual_before_ln: true,
    is_parallel: (c.is_parallel as boolean | undefined) ?? false,
    scaling: (c.scaling as BnConfig['scaling'] | undefined) ?? 1,
    init_weights: (c.init_weights as BnConfig['init_weights'] | undefined) ?? 'bert',
    leave_out: (c.leave_out as number[] | null | undefined) ?? [],
    ln_before: (c.ln_before as boolean | undefined) ?? false,
    ln_after: (c.ln_after as boolean | undefined) ?? false,
    adapter_residual_before_ln: (c.adapter_residual_before_ln as boolean | undefined) ?? false,
    use_gating: (c.use_gating as boolean | undefined) ?? false,
    dropout: (c.dropout as number | undefined) ?? 0,
  };
  if (typeof cfg.dropout !== 'number' || !(cfg.dropout >= 0 && cfg.dropout < 1)) throw new Error(`${where}: "config".dropout must be a number in [0, 1)`);
  try {
    return { config: resolveConfig(cfg), invertible: inv !== undefined && inv !== null };
  } catch (e) {
    throw new Error(`${where}: ${(e as Error).message}`);
  }
}

function replaceAll(s: string, from: string, to: string): string {
  return s.split(from).join(to);
}

interface TensorPlan { file: string; key: string; shape: number[] }

/**
 * Before anything is allocated: the projections the config implies (per layer and site) must be in the
 * file with the same shapes, so a config whose sizes disagree with its weights (say reduction_factor 2e-7)
 * fails on a comparison, not after building a huge adapter.
 */
function checkPlannedShapes(
  model: AdapterHost, config: BnConfig, name: string, st: SafetensorsFile, rename: (n: string) => string, where: string,
): void {
  const H = model.config.hiddenSize;
  const inFile = new Map<string, { stored: string; shape: number[] }>();
  for (const n of st.names()) inFile.set(rename(n), { stored: n, shape: st.info(n).shape });
  for (const i of config.leave_out)
    if (!Number.isInteger(i) || i < 0 || i >= model.config.numLayers)
      throw new Error(`${where}: leave_out holds ${i}; the backbone has layers 0..${model.config.numLayers - 1}`);
  for (let i = 0; i < model.config.numLayers; i++) {
    if (config.leave_out.includes(i)) continue;
    const r = bottleneckSize(config, H, i);
    for (const site of ['mh', 'output'] as const) {
      if (site === 'mh' ? !config.mh_adapter : !config.output_adapter) continue;
      const base = model.names.adapterPrefix(i, site, name);
      for (const [k, shape] of [['adapter_down.0.weight', [r, H]], ['adapter_up.weight', [H, r]]] as const) {
        const got = inFile.get(`${base}.${k}`);
        if (!got) throw new Error(`${where}: lacks '${base}.${k}', which its config (layer ${i}, ${site} adapter) implies`);
        if (got.shape.join() !== shape.join())
          throw new Error(`${where}: tensor '${got.stored}' has shape [${got.shape.join(', ')}], but its config `
            + `(reduction_factor ${JSON.stringify(config.reduction_factor)}, hidden ${H}) implies [${shape.join(', ')}]`);
      }
    }
  }
}

/**
 * Copies the tensors of `file` into `params`: every expected tensor must be present with its shape;
 * `rename` maps a stored name to ours (or null for a name that is not this module's).
 */
export function copyTensors(
  st: SafetensorsFile, params: Map<string, Tensor>, rename: (n: string) => string, strict: boolean,
  what: string, warnings: string[],
): void {
  const found = new Map<string, TensorPlan>();
  const unknown: string[] = [];
  const badDtype: string[] = [];
  for (const n of st.names()) {
    const info = st.info(n);
    const key = rename(n);
    if (!params.has(key)) {
      unknown.push(n);
      continue;
    }
    if (!['F32', 'F16', 'BF16', 'F64'].includes(info.dtype)) badDtype.push(`${n} (${info.dtype})`);
    found.set(key, { file: n, key, shape: info.shape });
  }
  const problems: string[] = [];
  const missing = [...params.keys()].filter((k) => !found.has(k));
  if (missing.length) problems.push(`missing ${missing.length} tensor(s): ${missing.join(', ')}`);
  const wrong: string[] = [];
  for (const [k, p] of found) {
    const want = params.get(k)!.shape;
    if (p.shape.join() !== want.join()) wrong.push(`${p.file} has shape [${p.shape.join(', ')}], expected [${want.join(', ')}]`);
  }
  if (wrong.length) problems.push(`wrong shape: ${wrong.join('; ')}`);
  if (badDtype.length) problems.push(`not floating point: ${badDtype.join(', ')}`);
  if (unknown.length && strict) problems.push(`${unknown.length} unexpected tensor(s) (pass strict: false to ignore them): ${unknown.join(', ')}`);
  if (problems.length) throw new Error(`${what}: ${problems.join('; ')}`);
  if (unknown.length) warnings.push(`${what}: ignored ${unknown.length} unexpected tensor(s): ${unknown.join(', ')}`);
  const data = new Map<string, Float32Array>();
  for (const p of found.values()) {
    const a = st.getFloat32(p.file);
    for (let i = 0; i < a.length; i++)
      if (!Number.isFinite(a[i])) throw new Error(`${what}: tensor '${p.file}' holds ${a[i]} at element ${i}; weights must be finite`);
    data.set(p.key, a);
  }
  for (const [key, a] of data) params.get(key)!.copyFrom(a);
}

export function openSafetensors(file: string, where: string): SafetensorsFile {
  try {
    return SafetensorsFile.open(file, { mode: 'memory' });
  } catch (e) {
    throw new Error(`${where}: ${(e as Error).message}`);
  }
}

function labelsOf(raw: unknown, numLabels: number, where: string): string[] | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`${where}: "config".label2id must be an object`);
  const out: string[] = new Array(numLabels);
  for (const [label, id] of Object.entries(raw as Record<string, unknown>)) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= numLabels || out[id] !== undefined)
      throw new Error(`${where}: label2id maps '${label}' to ${JSON.stringify(id)}, not a free index below ${numLabels}`);
    out[id] = label;
  }
  for (let i = 0; i < numLabels; i++) if (out[i] === undefined) throw new Error(`${where}: label2id names no label for output ${i}`);
  return out;
}

/** The config JSON of a saved adapter or head, its weights file and its saved name. */
function openSaved(dir: string, cfgName: string, weightsName: string, pickleName: string, kind: 'adapter' | 'head', where: string) {
  checkDir(dir, where);
  const cfgFile = path.join(dir, cfgName);
  if (!fs.existsSync(cfgFile)) throw new Error(`${where}: ${dir} has no ${cfgName}`);
  const json = readJson(cfgFile, where);
  const file = weightsFile(dir, weightsName, pickleName, kind, where);
  const saved = json.name;
  if (typeof saved !== 'string' || !saved) throw new Error(`${where}: ${cfgFile} has no "name"`);
  return { cfgFile, json, file, saved };
}

/** Reads head_config.json + model_head.safetensors of `dir` and adds the head to `model`. */
export function loadHead(model: Backbone, dir: string, opts: LoadHeadOptions = {}): LoadedHead {
  const where = 'loadHead';
  dir = recoverDir(dir); // a save stopped between its renames (lib/atomicDir.ts)
  const { cfgFile, json, file, saved } = openSaved(dir, ADAPTER_FILES.headConfig, ADAPTER_FILES.headWeights, ADAPTER_FILES.pickleHeadWeights, 'head', where);
  const name = opts.loadAs ?? saved;
  const what = `head '${saved}'`;
  checkIdentity(model, what, { modelType: optStr(json.model_type), hidden: optNum(json.hidden_size) });
  const c = json.config as Record<string, unknown> | null | undefined;
  if (!c || typeof c !== 'object') throw new Error(`${where}: ${cfgFile} has no "config" object`);
  const fail = (msg: string): never => {
    throw new Error(`${where}: ${what}: ${msg}`);
  };
  if (c.head_type !== 'classification') fail(`head_type '${String(c.head_type)}' is not supported (only classification)`);
  if ((c.layers ?? 2) !== 2) fail(`layers ${String(c.layers)} is not supported (only 2)`);
  if ((c.activation_function ?? 'tanh') !== 'tanh') fail(`activation_function '${String(c.activation_function)}' is not supported (only tanh)`);
  if (c.use_pooler === true) fail('use_pooler=true is not supported (the head reads the first token)');
  if (c.bias === false) fail('bias=false is not supported');
  const numLabels = c.num_labels;
  if (typeof numLabels !== 'number' || !Number.isInteger(numLabels) || numLabels < 1) fail('num_labels must be a positive integer');
  const labels = labelsOf(c.label2id, numLabels as number, `${where}: ${what}`);
  const dropout = typeof c.dropout_prob === 'number' ? c.dropout_prob : undefined;
  const st = openSafetensors(file, where);
  try {
    checkSameSave(dir, [ADAPTER_FILES.headConfig, jsonSaveId(json)], [path.basename(file), st.metadata.save_id], where);
  } catch (e) {
    st.close();
    throw e;
  }
  const warnings: string[] = [];
  model.addClassificationHead(name, { numLabels: numLabels as number, layers: 2, dropout });
  try {
    const from = `heads.${saved}.`;
    const to = `heads.${name}.`;
    copyTensors(st, model.head(name)!.parameters(), (n) => (n.startsWith(from) ? to + n.slice(from.length) : n),
      opts.strict ?? true, `${where}: ${file}`, warnings);
  } catch (e) {
    model.deleteHead(name);
    throw e;
  } finally {
    st.close();
  }
  return labels ? { name, warnings, labels } : { name, warnings };
}

const LAYER_INDEX = /\.layer\.(\d+)\./;

/**
 * Reads an adapter directory written by saveAdapter or by AdapterHub (`save_adapter(..., use_safetensors=True)`),
 * checks it against the backbone, adds the adapter as `loadAs` (default its saved name) and copies its tensors.
 * A head in the directory is loaded under the same name. On any error nothing stays added.
 */
export function loadAdapter(model: AdapterHost, dir: string, opts: LoadAdapterOptions = {}): LoadedAdapter {
  const where = 'loadAdapter';
  dir = recoverDir(dir); // a save stopped between its renames (lib/atomicDir.ts)
  const { cfgFile, json, file, saved } = openSaved(dir, ADAPTER_FILES.config, ADAPTER_FILES.weights, ADAPTER_FILES.pickleWeights, 'adapter', where);
  const name = opts.loadAs ?? saved;
  const what = `adapter '${saved}'`;
  const strict = opts.strict ?? true;
  const warnings: string[] = [];

  // the backbone it was trained on: ours records it in full, AdapterHub's files give type and hidden size
  const bb = json.backbone && typeof json.backbone === 'object' ? (json.backbone as Record<string, unknown>) : null;
  checkIdentity(model, what, {
    modelType: optStr(bb?.model_type) ?? optStr(json.model_type),
    hidden: optNum(bb?.hidden_size) ?? optNum(json.hidden_size),
    layers: optNum(bb?.num_layers),
  });

  const { config, invertible } = toBnConfig(json.config, typeof json.version === 'string', `${where}: ${cfgFile}`);
  const st = openSafetensors(file, where);
  try {
    checkSameSave(dir, [ADAPTER_FILES.config, jsonSaveId(json)], [path.basename(file), st.metadata.save_id], where);
    const prefix = model.names.prefix + '.';
    const from = `adapters.${saved}.`;
    const to = `adapters.${name}.`;
    const rename = (n: string): string => {
      let k = n;
      for (const [a, b] of LEGACY_WEIGHT_NAMES) k = replaceAll(k, a, b);
      if (!k.startsWith(prefix)) k = prefix + k; // saved from a plain BertModel (adapters.init) has no prefix
      return replaceAll(k, from, to);
    };
    const names = st.names();
    if (invertible) {
      if (names.some((n) => n.includes('invertible'))) throw new Error(`${where}: ${what} has invertible adapter modules, which are not supported`);
      // as AdapterHub does for task adapters whose file holds no invertible modules
      warnings.push(`${what}: its config names an invertible adapter but the file holds none; ignored`);
    }
    if (!bb) {
      // AdapterHub's files do not record the layer count: an adapter of a deeper model has tensors beyond ours
      let deepest = -1;
      for (const n of names) {
        const m = LAYER_INDEX.exec(n);
        if (m && n.includes(from)) deepest = Math.max(deepest, Number(m[1]));
      }
      if (deepest >= model.config.numLayers)
        throw new Error(`${what} was trained on ${describe({ modelType: optStr(json.model_type), hidden: optNum(json.hidden_size), layers: undefined })} `
          + `with at least ${deepest + 1} layers, this backbone is ${describe({ modelType: model.config.modelType, hidden: model.config.hiddenSize, layers: model.config.numLayers })}`);
    }
    const hash = optStr(bb?.weight_hash);
    if (hash && model.weightHash && hash !== model.weightHash) {
      const msg = `${where}: ${what} was saved from a backbone with different weights (weight hash ${hash.slice(0, 12)}…, `
        + `this backbone ${model.weightHash.slice(0, 12)}…, ${model.modelName}); it loads, but its outputs may differ from training`;
      warnings.push(msg);
      warnOnce(msg);
    }

    checkPlannedShapes(model, config, name, st, rename, `${where}: ${file}`);
    model.addAdapter(name, config);
    try {
      copyTensors(st, model.adapterParameters(name), rename, strict, `${where}: ${file}`, warnings);
    } catch (e) {
      model.deleteAdapter(name);
      throw e;
    }
  } finally {
    st.close();
  }

  const hasHead = [ADAPTER_FILES.headConfig, ADAPTER_FILES.headWeights, ADAPTER_FILES.pickleHeadWeights]
    .some((f) => fs.existsSync(path.join(dir, f)));
  if (opts.withHead === true && !hasHead) {
    model.deleteAdapter(name);
    throw new Error(`${where}: withHead is set but ${dir} holds no head (${ADAPTER_FILES.headConfig}, ${ADAPTER_FILES.headWeights})`);
  }
  if (opts.withHead === false || !hasHead) return { name, warnings };
  if (!isBackbone(model)) {
    warnings.push(`${where}: ${dir} also holds a head, which a ${model.config.modelType} model does not take; ignored`);
    return { name, warnings };
  }
  try {
    const headCfg = path.join(dir, ADAPTER_FILES.headConfig);
    if (fs.existsSync(headCfg)) checkSameSave(dir, [ADAPTER_FILES.config, jsonSaveId(json)], [ADAPTER_FILES.headConfig, jsonSaveId(readJson(headCfg, where))], where);
    const h = loadHead(model, dir, { loadAs: name, strict });
    warnings.push(...h.warnings);
    return h.labels ? { name, warnings, labels: h.labels } : { name, warnings };
  } catch (e) {
    model.deleteAdapter(name);
    throw e;
  }
}
