#!/usr/bin/env node
// npm install hook: use a matching prebuilt binary when one is present, else build
// from source (cmake-js: CPU + CUDA when nvcc is found; node-gyp: CPU only).
// Set FUSED_ADAPTERS_BUILD_FROM_SOURCE=1 to ignore prebuilds.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');

function has(cmd, args = ['--version']) {
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  return r.status === 0;
}

function run(cmd, args) {
  console.log(`fused-adapters: ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  return r.status === 0;
}

function prebuildFound() {
  try {
    const found = require('node-gyp-build').path(root);
    return found.includes(`${path.sep}prebuilds${path.sep}`) ? found : null;
  } catch {
    return null;
  }
}

function main() {
  if (!process.env.FUSED_ADAPTERS_BUILD_FROM_SOURCE) {
    const pre = prebuildFound();
    if (pre) {
      console.log(`fused-adapters: using the prebuilt binary ${path.relative(root, pre)}`);
      return 0;
    }
  }
  const cxx = process.env.CXX || 'c++';
  if (!has(cxx)) {
    console.error(
      `fused-adapters: no prebuilt binary for ${process.platform}-${process.arch} and no C++ compiler ('${cxx}').\n` +
        '  Install a C++17 compiler (g++ or clang++) and cmake, then run `npm install` again.',
    );
    return 1;
  }
  if (has('cmake')) {
    const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
    if (run(process.execPath, [cmakeJs, 'rebuild'])) return 0;
    console.error('fused-adapters: the cmake-js build failed (see above).');
    return 1;
  }
  console.log('fused-adapters: cmake not found; building the CPU-only addon with node-gyp (no CUDA).');
  const gyp = process.env.npm_config_node_gyp;
  const ok = gyp && fs.existsSync(gyp) ? run(process.execPath, [gyp, 'rebuild']) : run('node-gyp', ['rebuild']);
  if (ok) return 0;
  console.error(
    'fused-adapters: the build failed. Install cmake (recommended, enables CUDA when nvcc is present) ' +
      'or node-gyp with Python 3, then run `npm install` again.',
  );
  return 1;
}

process.exitCode = main();
