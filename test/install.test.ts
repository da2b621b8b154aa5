// The package as published (issue 12): `npm pack` carries the prebuilt CPU+CUDA binary, and the
// tarball installs into a fresh project on a host with no compiler, no cmake and no CUDA toolkit
// in seconds, then runs a forward; strict TypeScript compiles against its types; the CLI runs.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { buildInfo } from '../lib';

const root = path.resolve(__dirname, '..');
const FIX = path.join(__dirname, 'fixtures', 'tiny-bert');
// The published binary must have the CUDA backend; without the toolkit here it cannot be made.
const packable = buildInfo().cudaCompiled;
const describePack = packable ? describe : describe.skip;
if (!packable) console.log('install.test: skipped: this build has no CUDA backend (run scripts/setup-cuda.sh, then npm run build:native), so npm pack cannot make the published binary');

describePack('npm pack → install the tarball with the compilers hidden', () => {
  let work: string;
  let tarball: string;
  let project: string;
  let bin: string;
  let installSeconds: number;
  let packed: string[];

  /** Runs with PATH holding only node, npm and sh: no cc, c++, cmake, make or nvcc. */
  function bare(cmd: string, args: string[], cwd: string) {
    return spawnSync(cmd, args, {
      cwd, encoding: 'utf8', timeout: 300_000,
      env: { HOME: process.env.HOME ?? os.homedir(), PATH: bin, npm_config_cache: process.env.npm_config_cache ?? path.join(os.homedir(), '.npm') },
    });
  }

  beforeAll(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-install-'));
    const pack = spawnSync('npm', ['pack', '--json', '--pack-destination', work], { cwd: root, encoding: 'utf8', timeout: 600_000 });
    if (pack.status !== 0) throw new Error(`npm pack failed:\n${pack.stderr}\n${pack.stdout}`);
    // prepack's build log comes first on stdout; npm's JSON report is the last '[' line onwards
    const json = pack.stdout.slice(pack.stdout.lastIndexOf('\n[\n') + 1);
    const info = JSON.parse(json)[0];
    tarball = path.join(work, info.filename);
    packed = info.files.map((f: { path: string }) => f.path);

    bin = path.join(work, 'bin');
    fs.mkdirSync(bin);
    const npmCli = fs.realpathSync(spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).stdout.trim());
    fs.symlinkSync(process.execPath, path.join(bin, 'node'));
    fs.symlinkSync(npmCli, path.join(bin, 'npm'));
    fs.symlinkSync('/bin/sh', path.join(bin, 'sh'));

    project = path.join(work, 'project');
    fs.mkdirSync(project);
    fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'newcomer', version: '1.0.0', private: true }));
    const t0 = Date.now();
    const inst = bare(path.join(bin, 'npm'), ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball], project);
    installSeconds = (Date.now() - t0) / 1000;
    if (inst.status !== 0) throw new Error(`npm install of the tarball failed:\n${inst.stderr}\n${inst.stdout}`);
  });
  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

  test('the tarball holds prebuilds/linux-x64 and no source maps without their sources', () => {
    const files = packed;
    expect(files).toContain(`prebuilds/${process.platform}-${process.arch}/fused-adapters.napi.node`);
    expect(files.filter((f) => f.endsWith('.map'))).toEqual([]);
    expect(files).toContain('dist/lib/index.js');
  });

  test('no compiler was there, and the install took seconds', () => {
    for (const tool of ['cc', 'c++', 'g++', 'cmake', 'make', 'nvcc'])
      expect(bare('sh', ['-c', `command -v ${tool} || echo none`], project).stdout.trim()).toBe('none');
    expect(fs.existsSync(path.join(project, 'node_modules', 'fused-adapters', 'build'))).toBe(false);
    console.log(`install.test: the tarball installed in ${installSeconds.toFixed(1)} s`);
    expect(installSeconds).toBeLessThan(60);
  });

  test('a forward through the installed package: the prebuilt addon, CUDA compiled in, a backbone and an adapter', () => {
    const script = `
      const fa = require('fused-adapters');
      const info = fa.buildInfo();
      const addon = require('node-gyp-build').path(require('path').dirname(require.resolve('fused-adapters/package.json')));
      (async () => {
        const model = await fa.loadBackbone(${JSON.stringify(FIX)}, { device: 'cpu' });
        model.addAdapter('a', 'seq_bn');
        model.addClassificationHead('a', { numLabels: 2 });
        const res = model.forward({ inputIds: [[2, 7, 9, 3]], attentionMask: [[1, 1, 1, 1]] }, { labels: [1] });
        console.log(JSON.stringify({ cuda: info.cudaCompiled, addon, logits: Array.from(res.logits.toArray()), loss: res.lossValue }));
      })().catch((e) => { console.error(e.message); process.exit(1); });`;
    const r = bare(path.join(bin, 'node'), ['-e', script], project);
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout.trim());
    expect(out.cuda).toBe(true);
    expect(out.addon).toMatch(/node_modules\/fused-adapters\/prebuilds\/linux-x64\/fused-adapters\.napi\.node$/);
    expect(out.logits).toHaveLength(2);
    expect(out.logits.every(Number.isFinite)).toBe(true);
    expect(out.loss).toBeGreaterThan(0);
  });

  test('FUSED_ADAPTERS_BUILD_FROM_SOURCE=1 ignores the prebuild and says what it does; without a compiler, what to install', () => {
    const pkg = path.join(project, 'node_modules', 'fused-adapters');
    const r = spawnSync(path.join(bin, 'node'), [path.join(pkg, 'scripts', 'install.js')], {
      cwd: pkg, encoding: 'utf8', env: { HOME: os.homedir(), PATH: bin, FUSED_ADAPTERS_BUILD_FROM_SOURCE: '1' },
    });
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/fused-adapters: building the native addon from source; with CUDA this takes a few minutes/);
    expect(r.stderr).toMatch(/building from source was asked for, and there is no C\+\+ compiler \('c\+\+'\)\.\n  Install a C\+\+17 compiler/);
    const plain = spawnSync(path.join(bin, 'node'), [path.join(pkg, 'scripts', 'install.js')], { cwd: pkg, encoding: 'utf8', env: { HOME: os.homedir(), PATH: bin } });
    expect(plain.status).toBe(0);
    expect(plain.stdout).toMatch(/using the prebuilt binary prebuilds\/linux-x64\/fused-adapters\.napi\.node/);
  });

  test('the CLI runs from node_modules/.bin, and strict TypeScript compiles against the types', () => {
    const v = bare(path.join(project, 'node_modules', '.bin', 'fused-adapters'), ['--version'], project);
    expect(v.status).toBe(0);
    fs.writeFileSync(path.join(project, 'use.ts'), [
      "import { loadBackbone, tensor, adapterForward, NonFiniteError, setMemoryBudget, type Tensor } from 'fused-adapters';",
      'export async function f(dir: string): Promise<number> {',
      "  const m = await loadBackbone(dir, { device: 'cpu' });",
      "  const x: Tensor = tensor([1, 2, 3, 4], [1, 4]);",
      '  const w = { downWeight: tensor([1, 0, 0, 0], [1, 4]), downBias: tensor([0], [1]), upWeight: tensor([1, 1, 1, 1], [4, 1]), upBias: tensor([0, 0, 0, 0], [4]) };',
      '  setMemoryBudget({ host: null });',
      '  const e: NonFiniteError | null = null;',
      '  return adapterForward(x, w).out.size + m.config.numLayers + (e ? 1 : 0);',
      '}',
    ].join('\n'));
    const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    const r = bare(path.join(bin, 'node'), [tsc, '--strict', '--noEmit', '--module', 'node16', '--moduleResolution', 'node16', '--target', 'es2022',
      '--types', 'node', '--typeRoots', path.join(root, 'node_modules', '@types'), 'use.ts'], project);
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});
