// Checks a job's output paths before it starts, so that long work (training) never ends by
// writing into its own inputs or failing to save: an output that is one of the inputs, a
// directory output that holds an input or another output, an output that cannot be created.
import * as fs from 'fs';
import * as path from 'path';
import { checkReplaceable } from './atomicDir';

/** A path and the name the user knows it by: a CLI flag ('--log') or an option ('logFile'). */
export interface NamedPath {
  path: string;
  name: string;
}

export interface OutputPath extends NamedPath {
  /** A file appended or written, or a directory replaced as a whole by a save. */
  kind: 'file' | 'dir';
  /** For a directory: the entries its save writes (others in an existing directory are refused). */
  owns?: (entry: string) => boolean;
}

/** The path with symlinks resolved as far as it exists (the rest appended as given). */
function canonical(p: string): string {
  let abs = path.resolve(p);
  const rest: string[] = [];
  for (;;) {
    try {
      return path.join(fs.realpathSync(abs), ...rest.reverse());
    } catch {
      const up = path.dirname(abs);
      if (up === abs) return path.join(abs, ...rest.reverse());
      rest.push(path.basename(abs));
      abs = up;
    }
  }
}

const inside = (p: string, dir: string) => p.startsWith(dir.endsWith(path.sep) ? dir : dir + path.sep);

/** Throws unless `out` can be created or replaced: its nearest existing ancestor is a writable directory. */
function checkCreatable(where: string, out: OutputPath): void {
  const abs = path.resolve(out.path);
  let st: fs.Stats | null = null;
  try {
    st = fs.statSync(abs);
  } catch {
    // does not exist yet
  }
  if (st) {
    if (out.kind === 'file' && !st.isFile()) throw new Error(`${where}: ${out.name} ${out.path} exists and is not a file`);
    if (out.kind === 'dir' && !st.isDirectory()) throw new Error(`${where}: ${out.name} ${out.path} exists and is not a directory`);
  }
  let dir = path.dirname(abs);
  for (;;) {
    let ds: fs.Stats | null = null;
    try {
      ds = fs.statSync(dir);
    } catch {
      // keep going up
    }
    if (ds) {
      if (!ds.isDirectory()) throw new Error(`${where}: cannot create ${out.name} ${out.path}: ${dir} is not a directory`);
      try {
        fs.accessSync(dir, fs.constants.W_OK);
      } catch {
        if (!st || out.kind === 'dir') throw new Error(`${where}: cannot create ${out.name} ${out.path}: ${dir} is not writable`);
      }
      break;
    }
    const up = path.dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  if (st && out.kind === 'file') {
    try {
      fs.accessSync(abs, fs.constants.W_OK);
    } catch {
      throw new Error(`${where}: ${out.name} ${out.path} is not writable`);
    }
  }
}

/**
 * Throws, naming the paths by the names the user gave them, when an output is one of the inputs,
 * a directory output holds an input or another output (a save replaces the directory as a whole),
 * two outputs are one path, an existing output directory holds files its save would not write, or
 * an output cannot be created. Nothing is created or changed.
 */
export function checkOutputPaths(where: string, inputs: NamedPath[], outputs: OutputPath[]): void {
  const ins = inputs.filter((i) => i.path).map((i) => ({ ...i, real: canonical(i.path) }));
  const outs = outputs.filter((o) => o.path).map((o) => ({ ...o, real: canonical(o.path) }));
  for (const o of outs) {
    for (const i of ins) {
      if (o.real === i.real)
        throw new Error(`${where}: ${o.name} ${o.path} is the ${i.name} input; writing there would change or destroy it. Choose another path`);
      if (o.kind === 'dir' && inside(i.real, o.real))
        throw new Error(`${where}: ${o.name} ${o.path} holds the ${i.name} input ${i.path}; a save replaces that directory as a whole. Choose another directory`);
    }
    for (const p of outs) {
      if (p === o) continue;
      if (p.real === o.real) throw new Error(`${where}: ${o.name} and ${p.name} are the same path (${o.path}); give each its own`);
      if (o.kind === 'dir' && inside(p.real, o.real))
        throw new Error(`${where}: ${p.name} ${p.path} lies inside ${o.name} ${o.path}, which a save replaces as a whole; put it elsewhere`);
    }
    checkCreatable(where, o);
    if (o.kind === 'dir' && o.owns) checkReplaceable(o.path, { where: `${where}: ${o.name}`, owns: o.owns });
  }
}
