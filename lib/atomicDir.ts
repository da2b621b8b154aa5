// Whole-directory atomic saves, for anything saved as several files that belong together
// (an adapter with its head, a training checkpoint, ...).
//
// A save of `<dir>` with id ID (`<pid>-<time>-<random>`):
//
//   1. recover `<dir>` (below), remove stale siblings of processes that are no longer running
//   2. write every file into the fresh sibling `<dir>.tmp-ID`, fsync each file and the directory
//   3. rename `<dir>` → `<dir>.old-ID`              (only when `<dir>` exists)
//   4. rename `<dir>.tmp-ID` → `<dir>`, fsync the parent
//   5. remove `<dir>.old-ID`
//
// The rule after a kill at any instant: `<dir>` holds exactly one complete save, except between
// steps 3 and 4, where `<dir>` is missing and both `<dir>.old-ID` and `<dir>.tmp-ID` exist. That
// pair can exist only then (the .old- name is made after the .tmp- directory is complete, and the
// .tmp- name is gone once step 4 is done), so recovery rolls forward: when `<dir>` is missing and a
// `.old-ID`/`.tmp-ID` pair of a process that is not running exists, `.tmp-ID` is renamed to `<dir>`
// (the newest pair by its time, if several) and `.old-ID` is removed. Nothing else is ever renamed
// back: a lone `.tmp-` is an unfinished save, a lone `.old-` a save already replaced. Loaders call
// recoverDir before reading, savers before writing; where the parent cannot be written, the loader
// reads the complete `.tmp-ID` where it lies.
//
// What `<dir>` may hold before a save: nothing, or only the files a save of this kind writes (and
// carries over, see `carry`). A directory with anything else is refused, not replaced: its other
// contents would otherwise be lost or split between the old and the new directory.
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { fsyncDir } from './atomicWrite';

/** The points of a save that a test can stop at (see ReplaceDirOptions.onStep). */
export type DirSaveStep = 'written' | 'old-moved' | 'new-moved' | 'done';

export interface ReplaceDirOptions {
  /** Prefix for error messages, e.g. 'saveAdapter'. */
  where: string;
  /** Whether an entry of an existing `<dir>` is a file that this kind of save writes (it is replaced). */
  owns: (name: string) => boolean;
  /** Entries of an existing `<dir>` that are copied into the new save unchanged (e.g. the adapter, for a head). */
  carry?: (name: string) => boolean;
  /** Called after each step; for tests that crash a save at a chosen point. */
  onStep?: (step: DirSaveStep, paths: { tmp: string; old: string }) => void;
}

/** A fresh save id: 128 random bits as 32 hex digits. */
export function newSaveId(): string {
  return randomBytes(16).toString('hex');
}

interface Sibling { name: string; kind: 'tmp' | 'old'; id: string; pid: number; time: number }

const SIBLING = /^\.(tmp|old)-((\d+)-([0-9a-z]+)-[0-9a-f]+)$/;

/** `<base>.tmp-ID` and `<base>.old-ID` entries of `parent`. */
function siblings(parent: string, base: string): Sibling[] {
  let names: string[];
  try {
    names = fs.readdirSync(parent);
  } catch {
    return [];
  }
  const out: Sibling[] = [];
  for (const name of names) {
    if (!name.startsWith(base) || name.length === base.length) continue;
    const m = SIBLING.exec(name.slice(base.length));
    if (m) out.push({ name, kind: m[1] as 'tmp' | 'old', id: m[2], pid: Number(m[3]), time: parseInt(m[4], 36) });
  }
  return out;
}

/** Whether another process with this pid is running (this process counts as not: its saves are synchronous). */
function running(pid: number): boolean {
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function exists(p: string): boolean {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** `dir` as an absolute path, through a symlink to a directory (the link stays, its target is replaced). */
function target(dir: string): string {
  const abs = path.resolve(dir);
  try {
    if (fs.lstatSync(abs).isSymbolicLink()) return fs.realpathSync(abs);
  } catch {
    // missing, or a dangling link: used as given
  }
  return abs;
}

/**
 * Completes a save of `dir` that was stopped between its two renames (see the rule at the top) and
 * returns the directory to read: `dir`, or, where the rename is not possible (a read-only parent),
 * the complete `.tmp-` sibling. Does nothing when `dir` exists or no such save is found.
 */
export function recoverDir(dir: string): string {
  const abs = target(dir);
  if (exists(abs)) return dir;
  const parent = path.dirname(abs);
  const base = path.basename(abs);
  for (let waited = 0; ; waited += 20) {
    const sibs = siblings(parent, base);
    const tmps = new Map(sibs.filter((s) => s.kind === 'tmp').map((s) => [s.id, s]));
    const pairs = sibs.filter((s) => s.kind === 'old' && tmps.has(s.id));
    if (!pairs.length) return dir;
    // a running process between its renames does the second one itself in a moment
    if (pairs.some((p) => running(p.pid)) && waited < 2000) {
      sleep(20);
      if (exists(abs)) return dir;
      continue;
    }
    pairs.sort((a, b) => b.time - a.time || (b.id < a.id ? -1 : 1));
    const tmp = path.join(parent, tmps.get(pairs[0].id)!.name);
    try {
      fs.renameSync(tmp, abs);
    } catch {
      return exists(abs) ? dir : tmp; // recovered by someone else meanwhile, or read-only
    }
    fsyncDir(parent);
    try {
      fs.rmSync(path.join(parent, pairs[0].name), { recursive: true, force: true });
    } catch {
      // removed with the other stale siblings by the next save
    }
    return dir;
  }
}

/** Removes the `.tmp-` and `.old-` siblings of `dir` left by processes that are not running. */
function removeStale(parent: string, base: string): void {
  for (const s of siblings(parent, base)) {
    if (s.pid === process.pid || running(s.pid)) continue;
    try {
      fs.rmSync(path.join(parent, s.name), { recursive: true, force: true });
    } catch {
      // tried again on the next save
    }
  }
}

/**
 * Throws when a save could not replace `dir`: it is not a directory, or it holds entries that this
 * kind of save does not write (they would be lost), or entries that are not plain files. Returns the
 * directory's stats when it exists (null when a save would create it). Lets callers check an output
 * directory before long work (training) rather than when saving at its end.
 */
export function checkReplaceable(dir: string, opts: Pick<ReplaceDirOptions, 'where' | 'owns' | 'carry'>): fs.Stats | null {
  const { where } = opts;
  const abs = target(dir);
  if (!exists(abs)) return null;
  const stats = fs.statSync(abs);
  if (!stats.isDirectory()) throw new Error(`${where}: ${dir} is not a directory`);
  const entries = fs.readdirSync(abs).sort();
  const foreign = entries.filter((n) => !opts.owns(n) && !opts.carry?.(n));
  if (foreign.length)
    throw new Error(`${where}: ${dir} holds ${foreign.length} entr${foreign.length === 1 ? 'y' : 'ies'} that a save does not write `
      + `(${foreign.slice(0, 5).join(', ')}${foreign.length > 5 ? ', …' : ''}); a save replaces the directory as a whole, so it must be `
      + `missing, empty or a previous save. Save into another directory, or move them away`);
  for (const n of entries)
    if (!fs.lstatSync(path.join(abs, n)).isFile()) throw new Error(`${where}: cannot write ${path.join(dir, n)}: it exists and is not a file`);
  return stats;
}

/** Copies `from` to `to` and fsyncs the copy. */
function copySynced(from: string, to: string): void {
  fs.copyFileSync(from, to, fs.constants.COPYFILE_EXCL);
  const fd = fs.openSync(to, 'r+');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Replaces directory `dir` as a whole with what `write(tmpDir)` puts into a fresh directory (see the
 * top of this file). `write` writes plain files into `tmpDir` (each fsynced, e.g. with writeAtomic);
 * readers of `dir` see the previous save or this one, never a mix, also after a kill at any instant.
 */
export function replaceDirAtomic(dir: string, write: (tmpDir: string) => void, opts: ReplaceDirOptions): void {
  const { where } = opts;
  const abs = target(dir);
  const parent = path.dirname(abs);
  const base = path.basename(abs);
  if (!base || abs === parent) throw new Error(`${where}: cannot replace ${dir} (the root directory)`);
  const cwd = process.cwd();
  if (cwd === abs || cwd.startsWith(abs + path.sep))
    throw new Error(`${where}: ${dir} is (or holds) the working directory; saving replaces the directory as a whole, save into a subdirectory`);
  try {
    fs.mkdirSync(parent, { recursive: true });
  } catch (e) {
    throw new Error(`${where}: cannot create directory ${parent}: ${(e as Error).message}`);
  }
  recoverDir(abs);
  removeStale(parent, base);

  const previous = checkReplaceable(dir, opts);
  const carried = previous ? fs.readdirSync(abs).sort().filter((n) => opts.carry?.(n)) : [];

  const id = `${process.pid}-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
  const tmp = path.join(parent, `${base}.tmp-${id}`);
  const old = path.join(parent, `${base}.old-${id}`);
  const step = (s: DirSaveStep) => opts.onStep?.(s, { tmp, old });
  try {
    fs.mkdirSync(tmp);
  } catch (e) {
    throw new Error(`${where}: cannot create directory ${tmp}: ${(e as Error).message}`);
  }
  try {
    if (previous) fs.chmodSync(tmp, previous.mode & 0o7777);
    for (const n of carried) copySynced(path.join(abs, n), path.join(tmp, n));
    write(tmp);
    fsyncDir(tmp);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  step('written');

  if (previous) {
    try {
      fs.renameSync(abs, old);
    } catch (e) {
      fs.rmSync(tmp, { recursive: true, force: true });
      throw new Error(`${where}: cannot move ${dir} aside: ${(e as Error).message}`);
    }
    step('old-moved');
  }
  try {
    fs.renameSync(tmp, abs);
  } catch (e) {
    if (previous) {
      try {
        fs.renameSync(old, abs);
      } catch {
        // left as an .old-/.tmp- pair, which recoverDir completes
      }
    }
    if (exists(abs)) fs.rmSync(tmp, { recursive: true, force: true });
    throw new Error(`${where}: cannot move the new save into ${dir}: ${(e as Error).message}`);
  }
  step('new-moved');
  fsyncDir(parent);
  if (previous) {
    try {
      fs.rmSync(old, { recursive: true, force: true });
    } catch {
      // a stale sibling: removed by the next save
    }
  }
  step('done');
}
