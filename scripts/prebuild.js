#!/usr/bin/env node
// Makes prebuilds/<platform>-<arch>/fused-adapters.napi.node, the layout node-gyp-build
// loads when build/ is absent; `npm pack` runs it (prepack), so the package carries it.
// prebuildify has no cmake-js backend, so:
//   node scripts/prebuild.js            the CPU + CUDA binary (cmake-js build, incremental), then --check;
//                                       fails when the CUDA toolkit was not found (scripts/setup-cuda.sh)
//   node scripts/prebuild.js --clean    the same from a clean build directory (for releases)
//   node scripts/prebuild.js --cpu-only CPU-only build through prebuildify (node-gyp, binding.gyp)
//   node scripts/prebuild.js --check    loads the prebuild from a copy of the package without build/
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.resolve(__dirname, '..');
const target = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
const file = path.join(target, 'fused-adapters.napi.node');

function run(cmd, args) {
  console.log(`prebuild: ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`prebuild: '${cmd} ${args.join(' ')}' failed`);
}

function full(clean) {
  run(process.execPath, [require.resolve('cmake-js/bin/cmake-js'), clean ? 'rebuild' : 'build']);
  fs.mkdirSync(target, { recursive: true });
  fs.copyFileSync(path.join(root, 'build', 'Release', 'fused_adapters.node'), file);
  spawnSync('strip', ['--strip-unneeded', file], { stdio: 'inherit' });
  console.log(`prebuild: wrote ${path.relative(root, file)}`);
}

function cpuOnly() {
  run(process.execPath, [require.resolve('prebuildify/bin.js'), '--napi', '--strip', '--name', 'fused-adapters']);
}

// Copies what a published package holds (no build/) and loads the addon from it.
function check() {
  if (!fs.existsSync(file)) throw new Error(`prebuild: ${path.relative(root, file)} is missing; run the prebuild first`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-prebuild-'));
  for (const p of ['package.json', 'dist', 'prebuilds']) fs.cpSync(path.join(root, p), path.join(dir, p), { recursive: true });
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
  const code = "const fa=require('./dist/lib/index.js');const i=fa.buildInfo();" +
    "const t=fa.matmul(fa.tensor([1,2,3,4],[2,2]),fa.tensor([1,0,0,1],[2,2]));" +
    "console.log(JSON.stringify({info:i,out:Array.from(t.toArray()),addon:require('node-gyp-build').path('.')}))";
  const r = spawnSync(process.execPath, ['-e', code], { cwd: dir, encoding: 'utf8' });
  fs.rmSync(dir, { recursive: true, force: true });
  if (r.status !== 0) throw new Error(`prebuild: loading from the prebuild failed:\n${r.stderr}`);
  const res = JSON.parse(r.stdout);
  if (!res.addon.includes('prebuilds')) throw new Error(`prebuild: loaded ${res.addon}, not the prebuild`);
  if (res.out.join(',') !== '1,2,3,4') throw new Error(`prebuild: wrong result ${res.out}`);
  console.log(`prebuild: OK, loaded ${path.basename(res.addon)} without build/ (cudaCompiled: ${res.info.cudaCompiled})`);
  return res.info;
}

const arg = process.argv[2];
try {
  if (arg === '--check') check();
  else if (arg === '--cpu-only') cpuOnly();
  else {
    full(arg === '--clean');
    const info = check();
    if (!info.cudaCompiled)
      throw new Error('prebuild: the binary has no CUDA backend (nvcc was not found); the published binary must have one. '
        + 'Run `bash scripts/setup-cuda.sh` (or set FA_CUDA_ROOT), then `npx cmake-js rebuild`, then pack again');
  }
} catch (e) {
  console.error(e.message);
  process.exitCode = 1;
}
