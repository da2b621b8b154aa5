// The adapter library a server serves: a directory of adapters as AdapterHub (and this package)
// save them, one per folder. A folder `name@version` is that version of `name`; a plain folder
// `name` is version "0" unless its adapter_config.json has `adapter_version`. The backbone weight
// hash an adapter was trained on comes from its config (`backbone.weight_hash`, written by
// saveAdapter); the server refuses to load one whose hash differs from the served model's.
// scan() re-reads the directory: new, replaced and removed folders are picked up without a restart.
import * as fs from 'fs';
import * as path from 'path';

export interface LibraryEntry {
  name: string;
  version: string;
  /** `name@version`. */
  ref: string;
  dir: string;
  /** The backbone weight hash recorded at save time (undefined when the file has none). */
  backboneHash?: string;
  /** adapter_config.json's `config` (the adapter architecture), for listing. */
  config: Record<string, unknown>;
  /** Changes when the folder's files change (so a replaced adapter is reloaded). */
  stamp: string;
  hasHead: boolean;
}

const NAME = /^[A-Za-z0-9_-]+$/;

export class AdapterLibrary {
  private entries = new Map<string, LibraryEntry>();
  /** Folders that could not be read at the last scan, with the reason. */
  errors = new Map<string, string>();

  constructor(readonly root: string) {
    if (!fs.existsSync(root) || !fs.statSync(root).isDirectory()) throw new Error(`adapter library ${root} is not a directory`);
  }

  /** Re-reads the directory; returns the refs added (or changed) and removed. */
  scan(): { changed: string[]; removed: string[] } {
    const next = new Map<string, LibraryEntry>();
    const errors = new Map<string, string>();
    for (const folder of fs.readdirSync(this.root).sort()) {
      const dir = path.join(this.root, folder);
      if (folder.startsWith('.') || !fs.statSync(dir).isDirectory()) continue;
      try {
        const e = readEntry(dir, folder);
        if (e) next.set(e.ref, e);
      } catch (err) {
        errors.set(folder, (err as Error).message);
      }
    }
    const changed = [...next.values()].filter((e) => this.entries.get(e.ref)?.stamp !== e.stamp).map((e) => e.ref);
    const removed = [...this.entries.keys()].filter((r) => !next.has(r));
    this.entries = next;
    this.errors = errors;
    return { changed, removed };
  }

  list(): LibraryEntry[] {
    return [...this.entries.values()];
  }

  /** `name` (its highest version) or `name@version`; undefined when the library has no such adapter. */
  resolve(ref: string): LibraryEntry | undefined {
    const at = ref.indexOf('@');
    if (at >= 0) return this.entries.get(ref);
    const versions = this.list().filter((e) => e.name === ref);
    return versions.sort((a, b) => compareVersions(b.version, a.version))[0];
  }
}

function readEntry(dir: string, folder: string): LibraryEntry | undefined {
  const cfgFile = path.join(dir, 'adapter_config.json');
  if (!fs.existsSync(cfgFile)) return undefined; // not an adapter folder
  const [name, folderVersion] = folder.includes('@') ? folder.split('@', 2) : [folder, undefined];
  if (!NAME.test(name)) throw new Error(`adapter folder '${folder}': the name must be letters, digits, '_' or '-'`);
  const json = JSON.parse(fs.readFileSync(cfgFile, 'utf8')) as Record<string, unknown>;
  const version = folderVersion ?? (typeof json.adapter_version === 'string' || typeof json.adapter_version === 'number' ? String(json.adapter_version) : '0');
  if (!/^[A-Za-z0-9._-]+$/.test(version)) throw new Error(`adapter folder '${folder}': bad version '${version}'`);
  const bb = json.backbone as Record<string, unknown> | undefined;
  const files = fs.readdirSync(dir).sort();
  const stamp = files.map((f) => {
    const st = fs.statSync(path.join(dir, f));
    return `${f}:${st.size}:${st.mtimeMs}`;
  }).join('|');
  return {
    name, version, ref: `${name}@${version}`, dir, stamp,
    backboneHash: typeof bb?.weight_hash === 'string' ? bb.weight_hash : undefined,
    config: (json.config as Record<string, unknown>) ?? {},
    hasHead: files.includes('head_config.json'),
  };
}

/** Numeric-aware version order: "1.10" > "1.9" > "1". */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/);
  const pb = b.split(/[.-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? '';
    const y = pb[i] ?? '';
    const nx = Number(x);
    const ny = Number(y);
    const c = x !== '' && y !== '' && Number.isFinite(nx) && Number.isFinite(ny) ? nx - ny : x.localeCompare(y);
    if (c) return c;
  }
  return 0;
}
