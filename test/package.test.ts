// The package as users load it: CommonJS and ESM entry points, and a prebuild without build/.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.resolve(__dirname, '..');
const built = fs.existsSync(path.join(root, 'dist', 'lib', 'index.js'));

function node(args: string[], cwd = root) {
  return spawnSync(process.execPath, args, { cwd, encoding: 'utf8' });
}

describe('package entry points', () => {
  test('the TypeScript build exists (npm install runs prepare)', () => {
    expect(built).toBe(true);
  });

  test("require('fused-adapters') works", () => {
    const r = node(['-e', "const fa=require('fused-adapters');console.log(typeof fa.tensor, fa.buildInfo().napi)"]);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('function 8');
  });

  test("import … from 'fused-adapters' works", () => {
    const r = node(['--input-type=module', '-e',
      "import { tensor, matmul, buildInfo } from 'fused-adapters';" +
      'const t = matmul(tensor([1,2,3,4],[2,2]), tensor([1,1,1,1],[2,2]));' +
      'console.log(Array.from(t.toArray()).join(","), buildInfo().napi)']);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('3,3,7,7 8');
  });

  test('the ESM entry (scripts/gen-esm.js) exports exactly what the CommonJS one does', () => {
    const r = node(['--input-type=module', '-e',
      "import * as esm from 'fused-adapters'; import { createRequire } from 'module';" +
      "const cjs = createRequire(process.cwd() + '/')('fused-adapters');" +
      "const a = Object.keys(esm).filter((k) => k !== 'default').sort().join(); const b = Object.keys(cjs).sort().join();" +
      "console.log(a === b ? 'same' : 'esm: ' + a + ' cjs: ' + b)"]);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('same');
  });
});

describe('prebuilds', () => {
  test('node-gyp-build loads prebuilds/<platform>-<arch>/fused-adapters.napi.node with build/ absent', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-pkg-'));
    try {
      const target = path.join(dir, 'prebuilds', `${process.platform}-${process.arch}`);
      fs.mkdirSync(target, { recursive: true });
      fs.copyFileSync(path.join(root, 'build', 'Release', 'fused_adapters.node'), path.join(target, 'fused-adapters.napi.node'));
      fs.copyFileSync(path.join(root, 'package.json'), path.join(dir, 'package.json'));
      const gyp = require.resolve('node-gyp-build');
      const r = node(['-e', `const l=require(${JSON.stringify(gyp)});const b=l(${JSON.stringify(dir)});` +
        `console.log(l.path(${JSON.stringify(dir)}), b.buildInfo().version)`]);
      expect(r.stderr).toBe('');
      expect(fs.existsSync(path.join(dir, 'build'))).toBe(false);
      expect(r.stdout).toContain(path.join('prebuilds', `${process.platform}-${process.arch}`, 'fused-adapters.napi.node'));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('BLAS found at run time', () => {
  const probe = "const fa=require('./dist/lib');const a=fa.randn([37,29],{seed:1}),b=fa.randn([29,41],{seed:2});" +
    "console.log(JSON.stringify({blas:fa.buildInfo().blas,lib:fa.buildInfo().blasLibrary,version:fa.buildInfo().blasVersion,c:Array.from(fa.matmul(a,b).toArray()),a:Array.from(a.toArray()),b:Array.from(b.toArray())}))";
  const run = (env: Record<string, string>) => {
    const r = spawnSync(process.execPath, ['-e', probe], { cwd: root, encoding: 'utf8', env: { ...process.env, ...env } });
    expect(r.stderr).toBe('');
    return JSON.parse(r.stdout);
  };
  const ref = (a: number[], b: number[]) => Array.from({ length: 37 * 41 }, (_, i) => {
    let s = 0;
    for (let k = 0; k < 29; k++) s += a[Math.floor(i / 41) * 29 + k] * b[k * 41 + (i % 41)];
    return s;
  });

  test('the addon links no BLAS: it dlopens one, and without one (or with a bad path) GEMM runs the portable loop, same results', () => {
    const ldd = spawnSync('ldd', [path.join(root, 'build', 'Release', 'fused_adapters.node')], { encoding: 'utf8' });
    if (ldd.status === 0) expect(ldd.stdout).not.toMatch(/blas/i);
    const found = run({});
    const none = run({ FUSED_ADAPTERS_BLAS: 'none' });
    const bad = run({ FUSED_ADAPTERS_BLAS: '/nonexistent/libopenblas.so' });
    expect(none.blas).toBeNull();
    expect(bad.blas).toBeNull();
    expect([none.lib, none.version, bad.lib, bad.version]).toEqual([null, null, null, null]);
    const want = ref(found.a, found.b);
    for (const r of [found, none, bad]) r.c.forEach((v: number, i: number) => expect(Math.abs(v - want[i])).toBeLessThan(1e-4 * (1 + Math.abs(want[i]))));
    // CI installs OpenBLAS: there it must be found
    if (process.env.CI) {
      expect(found.blas).toBe('openblas');
      expect(found.lib).toMatch(/libopenblas/);
      expect(found.version).toMatch(/^OpenBLAS \d+\.\d+/);
    }
  });
});
