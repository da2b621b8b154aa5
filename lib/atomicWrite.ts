// Atomic file writes: the data goes to a temporary file next to the target, is fsynced, then
// renamed over it, so readers see the old file or the new one, never a partial one.
// Saves that consist of several files (adapters, heads, checkpoints) replace their whole
// directory at once: see lib/atomicDir.ts.
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';

/** Calls write(fd) on a fresh temporary file, then renames it to `file`. Cleans up on failure. */
export function writeAtomic(file: string, write: (fd: number) => void): void {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  let fd: number | null = null;
  try {
    fd = fs.openSync(tmp, 'wx');
    write(fd);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = null;
    fs.renameSync(tmp, file);
  } catch (e) {
    if (fd !== null) {
      try {
        fs.closeSync(fd);
      } catch {
        // already failing; the original error is what matters
      }
    }
    try {
      fs.unlinkSync(tmp);
    } catch {
      // never created, or already renamed
    }
    throw e;
  }
  // Make the rename durable where directories can be fsynced (not on Windows).
  fsyncDir(path.dirname(file));
}

/** fsync a directory so that renames and creations in it are durable; best effort (not on Windows). */
export function fsyncDir(dir: string): void {
  try {
    const dfd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(dfd);
    } finally {
      fs.closeSync(dfd);
    }
  } catch {
    // best effort
  }
}

export function writeTextAtomic(file: string, text: string): void {
  writeAtomic(file, (fd) => fs.writeSync(fd, text, null, 'utf8'));
}
