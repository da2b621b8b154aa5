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
