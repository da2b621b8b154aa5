// Loading models from the Hugging Face hub, with the same cache as Python's huggingface_hub:
//   <cache>/models--org--name/blobs/<etag>                 file contents, named by their etag
//   <cache>/models--org--name/snapshots/<commit>/<file>    relative symlinks ../../blobs/<etag>
//   <cache>/models--org--name/refs/<revision>              the commit a branch/tag pointed at
//   <cache>/models--org--name/.no_exist/<commit>/<file>    empty markers: the file is not in the repo
// so caches filled by Python load here (offline too) and ours load in Python.
import { createHash, randomBytes } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { SingleBar, Presets } from 'cli-progress';
import { getRepoFolderName } from '@huggingface/hub';
import { writeTextAtomic } from '../atomicWrite';

export interface HubOptions {
  /** Branch, tag or commit; default 'main'. */
  revision?: string;
  /** Default: HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub. */
  cacheDir?: string;
  /** Default: HF_TOKEN, else the file $HF_HOME/token. */
  token?: string;
  /** Default: HF_ENDPOINT, else https://huggingface.co. */
  endpoint?: string;
  /** Default: HF_HUB_OFFLINE in 1/ON/YES/TRUE. When offline the network is never touched. */
  offline?: boolean;
  /** Progress bar on stderr; default: process.stderr.isTTY. */
  progress?: boolean;
  fetch?: typeof fetch;
}

const COMMIT_RE = /^[0-9a-f]{40}$/;
const HEAD_TIMEOUT_MS = 10_000;
const IDLE_TIMEOUT_MS = 60_000;
const MAX_RELATIVE_REDIRECTS = 10;
const DEFAULT_ENDPOINT = 'https://huggingface.co';

// ---------------------------------------------------------------------------------------------
// Settings (read at call time, so tests and callers may change process.env)

function hfHome(): string {
  return process.env.HF_HOME || path.join(os.homedir(), '.cache', 'huggingface');
}

export function hubCacheDir(opts: HubOptions = {}): string {
  if (opts.cacheDir) return path.resolve(opts.cacheDir);
  if (process.env.HF_HUB_CACHE) return path.resolve(process.env.HF_HUB_CACHE);
  return path.resolve(hfHome(), 'hub');
}

function resolveToken(opts: HubOptions): string | undefined {
  if (opts.token) return opts.token;
  if (process.env.HF_TOKEN) return process.env.HF_TOKEN.trim();
  const file = process.env.HF_TOKEN_PATH || path.join(hfHome(), 'token');
  try {
    const t = fs.readFileSync(file, 'utf8').trim();
    return t || undefined;
  } catch {
    return undefined;
  }
}

function resolveEndpoint(opts: HubOptions): string {
  return (opts.endpoint || process.env.HF_ENDPOINT || DEFAULT_ENDPOINT).replace(/\/+$/, '');
}

function resolveOffline(opts: HubOptions): boolean {
  if (opts.offline !== undefined) return opts.offline;
  return ['1', 'ON', 'YES', 'TRUE'].includes((process.env.HF_HUB_OFFLINE ?? '').trim().toUpperCase());
}

interface Ctx {
  repo: string;
  cache: string;
  storage: string; // <cache>/models--org--name
  endpoint: string;
  token?: string;
  offline: boolean;
  progress: boolean;
  fetch: typeof fetch;
}

function makeCtx(repo: string, opts: HubOptions): Ctx {
  validateRepoId(repo);
  const cache = hubCacheDir(opts);
  return {
    repo,
    cache,
    storage: path.join(cache, getRepoFolderName({ name: repo, type: 'model' })),
    endpoint: resolveEndpoint(opts),
    token: resolveToken(opts),
    offline: resolveOffline(opts),
    progress: opts.progress ?? Boolean(process.stderr.isTTY),
    fetch: opts.fetch ?? globalThis.fetch,
  };
}

// ---------------------------------------------------------------------------------------------
// Validation

function validateRepoId(repo: string): void {
  const parts = repo.split('/');
  const ok =
    repo.length > 0 &&
    parts.length <= 2 &&
    parts.every((p) => /^[A-Za-z0-9_.-]{1,96}$/.test(p) && /^[A-Za-z0-9_]/.test(p) && /[A-Za-z0-9_]$/.test(p)) &&
    !repo.includes('--') &&
    !repo.includes('..') &&
    !repo.endsWith('.git');
  if (!ok) {
    throw new Error(
      `invalid repo id '${repo}': expected 'name' or 'org/name' made of letters, digits, '.', '_' and '-' ` +
        `(or an existing local directory)`,
    );
  }
}

function validateRelPath(p: string, what: string): void {
  const segs = p.split('/');
  if (!p || p.startsWith('/') || p.includes('\\') || p.includes('\0') || segs.some((s) => s === '' || s === '.' || s === '..')) {
    throw new Error(`invalid ${what} '${p}': must be a relative path with '/' separators and no '.' or '..' parts`);
  }
}

function validateRevision(rev: string): void {
  validateRelPath(rev, 'revision');
}

// ---------------------------------------------------------------------------------------------
// Cache paths and small file helpers

function snapshotPath(ctx: Ctx, commit: string, file: string): string {
  return path.join(ctx.storage, 'snapshots', commit, ...file.split('/'));
}

function refPath(ctx: Ctx, revision: string): string {
  return path.join(ctx.storage, 'refs', ...revision.split('/'));
}

function noExistPath(ctx: Ctx, commit: string, file: string): string {
  return path.join(ctx.storage, '.no_exist', commit, ...file.split('/'));
}

function readRef(ctx: Ctx, revision: string): string | null {
  if (COMMIT_RE.test(revision)) return revision;
  try {
    const c = fs.readFileSync(refPath(ctx, revision), 'utf8').trim();
    return COMMIT_RE.test(c) ? c : null;
  } catch {
    return null;
  }
}

function writeRef(ctx: Ctx, revision: string, commit: string): void {
  if (revision === commit) return;
  const file = refPath(ctx, revision);
  try {
    if (fs.readFileSync(file, 'utf8') === commit) return;
  } catch {
    // absent
  }
  fs.mkdirSync(path.dirname(file), { recursive: true });
  writeTextAtomic(file, commit); // no trailing newline: Python reads the file verbatim
}

function tmpName(file: string): string {
  return `${file}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
}

/** Points `pointer` at `blob` with a relative symlink, atomically (temporary name, then rename). */
function linkPointer(blob: string, pointer: string): void {
  fs.mkdirSync(path.dirname(pointer), { recursive: true });
  const tmp = tmpName(pointer);
  try {
    fs.symlinkSync(path.relative(path.dirname(pointer), blob), tmp);
  } catch {
    fs.copyFileSync(blob, tmp); // filesystems without symlinks: a copy, as Python does
  }
  try {
    fs.renameSync(tmp, pointer);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

function markNoExist(ctx: Ctx, commit: string, file: string): void {
  try {
    const p = noExistPath(ctx, commit, file);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.closeSync(fs.openSync(p, 'a'));
  } catch {
    // only an optimisation for later offline runs
  }
}

function normalizeEtag(etag: string | null): string | null {
  if (!etag) return null;
  return etag.trim().replace(/^W\//, '').replace(/^"|"$/g, '') || null;
}

function isErrno(e: unknown, code: string): boolean {
  return typeof e === 'object' && e !== null && (e as NodeJS.ErrnoException).code === code;
}

function fsyncFile(file: string): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** sha256 hex for LFS etags (64 hex), git blob sha1 for regular-file etags (40 hex); null: unknown scheme. */
async function hashFor(file: string, etag: string, size: number): Promise<{ algo: string; hex: string } | null> {
  let h;
  let algo;
  if (/^[0-9a-f]{64}$/.test(etag)) {
    algo = 'sha256';
    h = createHash('sha256');
  } else if (/^[0-9a-f]{40}$/.test(etag)) {
    algo = 'git-sha1';
    h = createHash('sha1');
    h.update(`blob ${size}\0`);
  } else {
    return null;
  }
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return { algo, hex: h.digest('hex') };
}

// ---------------------------------------------------------------------------------------------
// Errors

class CacheMissError extends Error {}
/** The request never got an HTTP answer (refused, DNS, timeout, reset) or got a 5xx. */
class NetworkError extends Error {}
/** An HTTP answer that settles the matter (not found, gated, ...). */
class HubHttpError extends Error {}

function cacheMiss(ctx: Ctx, file: string, revision: string, why: string): CacheMissError {
  return new CacheMissError(
    `${why}, and '${file}' of repo '${ctx.repo}' (revision '${revision}') is not in the cache ${ctx.cache}` +
      ` (looked in ${ctx.storage}); connect once to download it, or pass a local directory`,
  );
}

function networkReason(e: unknown): string {
  let cur: unknown = e;
  for (let i = 0; i < 4 && cur && typeof cur === 'object'; i++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    cur = (cur as { cause?: unknown }).cause;
  }
  return e instanceof Error ? e.message : String(e);
}

function httpError(ctx: Ctx, res: Response, file: string, revision: string): HubHttpError {
  const code = res.headers.get('x-error-code') ?? '';
  const msg = res.headers.get('x-error-message');
  const detail = `HTTP ${res.status}${code ? ` ${code}` : ''}${msg ? `: ${msg}` : ''}`;
  if (code === 'GatedRepo' || ((res.status === 401 || res.status === 403) && code !== 'RepoNotFound' && code !== 'RepositoryNotFound')) {
    return new HubHttpError(
      `repository '${ctx.repo}' on ${ctx.endpoint} is gated or private (${detail}); ` +
        (ctx.token
          ? 'a token was sent but was refused: check it has access (accept the terms on the model page)'
          : 'no token was sent: pass `token` or set HF_TOKEN (or log in so that $HF_HOME/token exists)'),
    );
  }
  if (code === 'RevisionNotFound') {
    return new HubHttpError(`revision '${revision}' not found in repository '${ctx.repo}' on ${ctx.endpoint} (${detail})`);
  }
  if (code === 'RepoNotFound' || code === 'RepositoryNotFound' || res.status === 404) {
    return new HubHttpError(
      `repository '${ctx.repo}' not found on ${ctx.endpoint} (or it is private: pass a token / set HF_TOKEN)` +
        ` (${detail}${ctx.token ? ', a token was sent' : ''})`,
    );
  }
  return new HubHttpError(`fetching '${file}' of '${ctx.repo}' (revision '${revision}') from ${ctx.endpoint} failed: ${detail}`);
}

// ---------------------------------------------------------------------------------------------
// HTTP

function fileUrl(ctx: Ctx, revision: string, file: string): string {
  const f = file.split('/').map(encodeURIComponent).join('/');
  return `${ctx.endpoint}/${ctx.repo}/resolve/${encodeURIComponent(revision)}/${f}`;
}

function baseHeaders(ctx: Ctx, url: string): Record<string, string> {
  const h: Record<string, string> = { 'Accept-Encoding': 'identity', 'User-Agent': 'fused-adapters' };
  // The token goes to the hub only, never to a CDN on another origin.
  if (ctx.token && new URL(url).origin === new URL(ctx.endpoint).origin) h.Authorization = `Bearer ${ctx.token}`;
  return h;
}

interface Meta {
  commit: string;
  etag: string;
  size: number | null;
  location: string; // where to GET the content
}

type HeadResult = { kind: 'ok'; meta: Meta } | { kind: 'missing'; commit: string | null };

/** HEAD of the resolve URL, following relative redirects only (renamed repos), as Python does. */
async function head(ctx: Ctx, revision: string, file: string): Promise<HeadResult> {
  let url = fileUrl(ctx, revision, file);
  for (let hop = 0; ; hop++) {
    let res: Response;
    try {
      res = await ctx.fetch(url, {
        method: 'HEAD',
        redirect: 'manual',
        headers: baseHeaders(ctx, url),
        signal: AbortSignal.timeout(HEAD_TIMEOUT_MS),
      });
    } catch (e) {
      throw new NetworkError(networkReason(e));
    }
    if (res.status >= 500) throw new NetworkError(`HTTP ${res.status} from ${ctx.endpoint}`);
    const location = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && location && !/^[a-z][a-z0-9+.-]*:|^\/\//i.test(location)) {
      if (hop >= MAX_RELATIVE_REDIRECTS) throw new HubHttpError(`too many redirects fetching '${file}' of '${ctx.repo}'`);
      url = new URL(location, url).toString();
      continue;
    }
    if (res.status === 404 && res.headers.get('x-error-code') === 'EntryNotFound') {
      const c = res.headers.get('x-repo-commit');
      return { kind: 'missing', commit: c && COMMIT_RE.test(c) ? c : null };
    }
    if (res.status >= 400) throw httpError(ctx, res, file, revision);
    const commit = res.headers.get('x-repo-commit');
    const etag = normalizeEtag(res.headers.get('x-linked-etag') ?? res.headers.get('etag'));
    if (!commit || !etag) {
      throw new Error(
        `${ctx.endpoint} answered for '${file}' of '${ctx.repo}' without X-Repo-Commit/ETag headers: ` +
          'is the endpoint a Hugging Face hub (check HF_ENDPOINT)?',
      );
    }
    if (!COMMIT_RE.test(commit)) throw new Error(`unexpected commit '${commit}' from ${ctx.endpoint}`);
    validateRelPath(etag, 'etag');
    const sizeHeader = res.headers.get('x-linked-size') ?? res.headers.get('content-length');
    const size = sizeHeader !== null && /^\d+$/.test(sizeHeader) ? Number(sizeHeader) : null;
    const isRedirect = res.status >= 300 && res.status < 400 && location;
    return { kind: 'ok', meta: { commit, etag, size, location: isRedirect ? new URL(location, url).toString() : url } };
  }
}

/** GETs meta.location into blobs/<etag>.incomplete (resuming it), verifies size and hash, renames to blobs/<etag>. */
async function downloadBlob(ctx: Ctx, meta: Meta, file: string, blob: string): Promise<void> {
  const incomplete = `${blob}.incomplete`;
  fs.mkdirSync(path.dirname(blob), { recursive: true });
  let have = 0;
  try {
    have = fs.statSync(incomplete).size;
  } catch {
    // nothing to resume
  }
  if (meta.size !== null && have > meta.size) {
    fs.rmSync(incomplete, { force: true });
    have = 0;
  }
  if (meta.size === null || have < meta.size || meta.size === 0) {
    await fetchInto(ctx, meta, file, incomplete, have);
  }
  const size = fs.statSync(incomplete).size;
  if (meta.size !== null && size !== meta.size) {
    fs.rmSync(incomplete, { force: true });
    throw new Error(`download of '${file}' of '${ctx.repo}' has ${size} bytes, expected ${meta.size}; removed it, try again`);
  }
  const got = await hashFor(incomplete, meta.etag, size);
  if (got && got.hex !== meta.etag) {
    fs.rmSync(incomplete, { force: true });
    throw new Error(
      `download of '${file}' of '${ctx.repo}' is corrupt: ${got.algo} ${got.hex} does not match etag ${meta.etag}; removed it, try again`,
    );
  }
  fsyncFile(incomplete);
  fs.renameSync(incomplete, blob);
}

async function fetchInto(ctx: Ctx, meta: Meta, file: string, incomplete: string, have: number): Promise<void> {
  const url = meta.location;
  const headers = baseHeaders(ctx, url);
  if (have > 0) headers.Range = `bytes=${have}-`;
  const ac = new AbortController();
  let timer = setTimeout(() => ac.abort(new Error(`no data for ${IDLE_TIMEOUT_MS / 1000} s`)), IDLE_TIMEOUT_MS);
  const touch = () => {
    clearTimeout(timer);
    timer = setTimeout(() => ac.abort(new Error(`no data for ${IDLE_TIMEOUT_MS / 1000} s`)), IDLE_TIMEOUT_MS);
  };
  let bar: SingleBar | null = null;
  let fh: fs.promises.FileHandle | null = null;
  try {
    let res: Response;
    try {
      res = await ctx.fetch(url, { method: 'GET', redirect: 'follow', headers, signal: ac.signal });
    } catch (e) {
      throw new NetworkError(networkReason(e));
    }
    if (res.status === 416 && have > 0) {
      // The server has nothing past `have`: the incomplete file is already whole; it gets verified.
      await res.body?.cancel();
      return;
    }
    if (res.status !== 200 && res.status !== 206) throw httpError(ctx, res, file, meta.commit);
    const resumed = res.status === 206;
    if (resumed) {
      const m = /^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '');
      if (!m || Number(m[1]) !== have) {
        await res.body?.cancel();
        throw new HubHttpError(`server resumed '${file}' at the wrong offset (${res.headers.get('content-range')}); expected ${have}`);
      }
    }
    let done = resumed ? have : 0;
    fh = await fs.promises.open(incomplete, resumed ? 'a' : 'w');
    const cl = res.headers.get('content-length');
    const total = meta.size ?? (cl ? done + Number(cl) : 0);
    if (ctx.progress && total > 0) {
      bar = new SingleBar(
        { format: `${file} [{bar}] {percentage}% | {mb}/{totalMb} MB`, hideCursor: true, stream: process.stderr },
        Presets.shades_classic,
      );
      bar.start(total, done, { mb: (done / 1e6).toFixed(1), totalMb: (total / 1e6).toFixed(1) });
    }
    if (res.body) {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        touch();
        await fh.write(chunk);
        done += chunk.length;
        bar?.update(done, { mb: (done / 1e6).toFixed(1) });
      }
    }
  } catch (e) {
    if (e instanceof HubHttpError) throw e;
    throw new Error(
      `download of '${file}' of '${ctx.repo}' was interrupted (${e instanceof NetworkError ? e.message : networkReason(e)}); ` +
        `the partial file is kept and the next call resumes it`,
    );
  } finally {
    clearTimeout(timer);
    bar?.stop();
    await fh?.close();
  }
}

// ---------------------------------------------------------------------------------------------
// One file

type FileResult = { path: string | null; commit: string | null };

/** Looks the file up in the cache only. Throws CacheMissError when the cache cannot tell. */
function fromCache(ctx: Ctx, revision: string, file: string, why: string): FileResult {
  const commit = readRef(ctx, revision);
  if (commit) {
    const p = snapshotPath(ctx, commit, file);
    if (fs.existsSync(p)) return { path: p, commit };
    if (fs.existsSync(noExistPath(ctx, commit, file))) return { path: null, commit };
  }
  throw cacheMiss(ctx, file, revision, why);
}

const inFlight = new Map<string, Promise<void>>();

async function getFile(ctx: Ctx, revision: string, file: string): Promise<FileResult> {
  validateRelPath(file, 'file name');
  validateRevision(revision);
  if (ctx.offline) return fromCache(ctx, revision, file, 'offline mode (offline: true or HF_HUB_OFFLINE)');
  // A commit never changes: a file already in its snapshot needs no request.
  if (COMMIT_RE.test(revision)) {
    const p = snapshotPath(ctx, revision, file);
    if (fs.existsSync(p)) return { path: p, commit: revision };
  }
  let h: HeadResult;
  try {
    h = await head(ctx, revision, file);
  } catch (e) {
    if (!(e instanceof NetworkError)) throw e;
    // No network (ECONNREFUSED, ENOTFOUND, timeout, 5xx, ...): the cache decides.
    return fromCache(ctx, revision, file, `no network: cannot reach ${ctx.endpoint} (${e.message})`);
  }
  if (h.kind === 'missing') {
    if (h.commit) {
      writeRef(ctx, revision, h.commit);
      markNoExist(ctx, h.commit, file);
    }
    return { path: null, commit: h.commit };
  }
  const { meta } = h;
  const blob = path.join(ctx.storage, 'blobs', meta.etag);
  const pointer = snapshotPath(ctx, meta.commit, file);
  if (!fs.existsSync(blob)) {
    // One download per blob in this process; concurrent callers wait for it.
    let p = inFlight.get(blob);
    if (!p) {
      p = downloadBlob(ctx, meta, file, blob).finally(() => inFlight.delete(blob));
      inFlight.set(blob, p);
    }
    await p;
  }
  if (!fs.existsSync(pointer)) linkPointer(blob, pointer);
  writeRef(ctx, revision, meta.commit);
  return { path: pointer, commit: meta.commit };
}

/** Downloads one file (or finds it in the cache); its snapshot path, or null when the repo has no such file. */
export async function downloadFromHub(repo: string, file: string, opts: HubOptions = {}): Promise<string | null> {
  const ctx = makeCtx(repo, opts);
  return (await getFile(ctx, opts.revision ?? 'main', file)).path;
}

// ---------------------------------------------------------------------------------------------
// A model directory

function looksLikePath(s: string): boolean {
  return (
    path.isAbsolute(s) || s.startsWith('.') || s.startsWith('~') || s.includes('\\') || s.split('/').length > 2
  );
}

/**
 * A local directory is returned as is (resolved). Otherwise `nameOrPath` is a repo id: fetches (or finds in the
 * cache) every `required` file, the first existing file of each `oneOf` group, the `optional` files that exist,
 * and the shards a fetched model.safetensors.index.json names; returns the snapshot directory.
 */
export async function resolveModelDir(
  nameOrPath: string,
  files: { required: string[]; oneOf?: string[][]; optional?: string[] },
  opts: HubOptions = {},
): Promise<string> {
  try {
    if (fs.statSync(nameOrPath).isDirectory()) return path.resolve(nameOrPath);
  } catch {
    // not a local path
  }
  if (looksLikePath(nameOrPath)) throw new Error(`model directory '${nameOrPath}' does not exist`);
  const ctx = makeCtx(nameOrPath, opts);
  const revision = opts.revision ?? 'main';
  validateRevision(revision);
  let commit: string | null = null;
  // After the first answer every file is fetched at that commit, so all come from one snapshot.
  const get = async (file: string): Promise<string | null> => {
    const r = await getFile(ctx, commit ?? revision, file);
    if (r.commit && !commit) commit = r.commit;
    return r.path;
  };
  const missingRequired = (file: string) =>
    new Error(`'${file}' does not exist in repository '${ctx.repo}' (revision '${revision}') on ${ctx.endpoint}`);

  const fetched: string[] = [];
  for (const f of files.required) {
    const p = await get(f);
    if (!p) throw missingRequired(f);
    fetched.push(f);
  }
  for (const group of files.oneOf ?? []) {
    let found: string | null = null;
    for (const f of group) {
      if (await get(f)) {
        found = f;
        break;
      }
    }
    if (!found) {
      if (group.some((f) => f.endsWith('.safetensors') || f.endsWith('.safetensors.index.json'))) {
        const pickle = ctx.offline ? null : await getPickleHint(ctx, commit ?? revision);
        if (pickle) {
          const dir = `./${ctx.repo.replace('/', '--')}-safetensors`;
          throw new Error(
            `repository '${ctx.repo}' has only PyTorch pickle weights (${pickle}), no safetensors ` +
              `(${group.join(', ')}); pickle files are not loaded (they can run code). Convert once with\n` +
              `  python -c "from transformers import AutoModel; AutoModel.from_pretrained('${ctx.repo}')` +
              `.save_pretrained('${dir}', safe_serialization=True)"\nthen pass that directory ('${dir}').`,
          );
        }
      }
      throw new Error(
        `none of ${group.map((f) => `'${f}'`).join(', ')} exist in repository '${ctx.repo}' (revision '${revision}') on ${ctx.endpoint}`,
      );
    }
    fetched.push(found);
  }
  for (const f of files.optional ?? []) {
    try {
      if (await get(f)) fetched.push(f);
    } catch (e) {
      if (!(e instanceof CacheMissError)) throw e; // offline and never downloaded: fine for an optional file
    }
  }
  for (const f of fetched.filter((x) => x === 'model.safetensors.index.json' || x.endsWith('/model.safetensors.index.json'))) {
    const c = commit ?? revision;
    const indexPath = snapshotPath(ctx, c, f);
    let shards: string[];
    try {
      const idx = JSON.parse(fs.readFileSync(indexPath, 'utf8')) as { weight_map?: Record<string, string> };
      shards = [...new Set(Object.values(idx.weight_map ?? {}))];
    } catch (e) {
      throw new Error(`cannot read ${f} of '${ctx.repo}': ${(e as Error).message}`);
    }
    const dir = path.posix.dirname(f);
    for (const s of shards) {
      const shard = dir === '.' ? s : `${dir}/${s}`;
      if (!(await get(shard))) {
        throw new Error(`'${shard}', named in '${f}', does not exist in repository '${ctx.repo}' (revision '${revision}')`);
      }
    }
  }
  if (!commit) throw new Error(`no files requested from '${ctx.repo}'`);
  return path.join(ctx.storage, 'snapshots', commit);
}

async function getPickleHint(ctx: Ctx, revision: string): Promise<string | null> {
  for (const f of ['pytorch_model.bin', 'pytorch_model.bin.index.json']) {
    try {
      const h = await head(ctx, revision, f);
      if (h.kind === 'ok') return f;
    } catch {
      // no hint then
    }
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Seeding the cache from a local directory

function listFiles(dir: string, prefix = ''): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.name === '.git' || e.name === '.cache' || e.name.endsWith('.incomplete')) continue;
    const st = fs.statSync(path.join(dir, rel)); // follows symlinks (a snapshot directory is fine)
    if (st.isDirectory()) out.push(...listFiles(dir, rel));
    else if (st.isFile()) out.push(rel);
  }
  return out.sort();
}

async function etagOf(file: string, rel: string): Promise<string> {
  const size = fs.statSync(file).size;
  const lfs = size >= 1 << 20 || /\.(safetensors|bin|pt|pth|ckpt|onnx|h5|msgpack|npz|gguf|model)$/.test(rel);
  const h = lfs ? createHash('sha256') : createHash('sha1');
  if (!lfs) h.update(`blob ${size}\0`);
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * Copies a local model directory into the cache as the snapshot of `repo` at `commit` (default: a sha1 over the
 * files' names and hashes) and points refs/<revision ?? 'main'> at it. Returns the snapshot directory.
 */
export async function placeInHubCache(
  dir: string,
  repo: string,
  opts: { cacheDir?: string; commit?: string; revision?: string } = {},
): Promise<string> {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new Error(`'${dir}' is not a directory`);
  if (opts.commit !== undefined && !COMMIT_RE.test(opts.commit)) {
    throw new Error(`commit must be 40 lowercase hex digits, got '${opts.commit}'`);
  }
  const revision = opts.revision ?? 'main';
  validateRevision(revision);
  const ctx = makeCtx(repo, { cacheDir: opts.cacheDir, offline: true });
  const files = listFiles(dir);
  if (files.length === 0) throw new Error(`'${dir}' has no files`);
  const etags: string[] = [];
  for (const f of files) etags.push(await etagOf(path.join(dir, f), f));
  const commit =
    opts.commit ??
    createHash('sha1')
      .update(files.map((f, i) => `${f}\0${etags[i]}\n`).join(''))
      .digest('hex');
  for (let i = 0; i < files.length; i++) {
    const blob = path.join(ctx.storage, 'blobs', etags[i]);
    if (!fs.existsSync(blob)) {
      fs.mkdirSync(path.dirname(blob), { recursive: true });
      const tmp = tmpName(blob);
      try {
        fs.copyFileSync(path.join(dir, files[i]), tmp);
        fsyncFile(tmp);
        fs.renameSync(tmp, blob);
      } catch (e) {
        fs.rmSync(tmp, { force: true });
        throw e;
      }
    }
    const pointer = snapshotPath(ctx, commit, files[i]);
    let ok = false;
    try {
      ok = fs.realpathSync(pointer) === fs.realpathSync(blob);
    } catch (e) {
      if (!isErrno(e, 'ENOENT')) throw e;
    }
    if (!ok) linkPointer(blob, pointer);
  }
  writeRef(ctx, revision, commit);
  return path.join(ctx.storage, 'snapshots', commit);
}
