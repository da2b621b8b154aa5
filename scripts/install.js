#!/usr/bin/env node
// npm install hook: use a matching prebuilt binary when one is present (the published package
// carries prebuilds/linux-x64), else build from source (cmake-js: CPU + CUDA when nvcc is found;
// node-gyp: CPU only). A git checkout always builds from source (a prebuild there may be stale);
// FUSED_ADAPTERS_BUILD_FROM_SOURCE=1 does so anywhere.
//
// npm hides install scripts' output unless they fail, so a build from source also writes its
// progress to the terminal (/dev/tty) when there is one: it takes minutes with CUDA.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');

function has(cmd, args = ['--version']) {
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  return r.status === 0;
}

// The terminal, when there is one: npm captures the script's own stdout and stderr.
let tty = null;
try {
  tty = fs.openSync('/dev/tty', 'w');
} catch {
  // no terminal (CI, a pipe): progress goes to stdout, which npm shows when the install fails
}

function say(msg) {
  const line = `fused-adapters: ${msg}\n`;
  if (tty !== null) fs.writeSync(tty, line);
  else process.stdout.write(line);
}

function run(cmd, args) {
  say(`${path.basename(cmd)} ${args.map((a) => path.basename(a)).join(' ')}`);
  const out = tty !== null ? tty : 'inherit';
  const r = spawnSync(cmd, args, { cwd: root, stdio: ['ignore', out, out] });
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
  const checkout = fs.existsSync(path.join(root, '.git'));
  if (!process.env.FUSED_ADAPTERS_BUILD_FROM_SOURCE && !checkout) {
    const pre = prebuildFound();
    if (pre) {
      console.log(`fused-adapters: using the prebuilt binary ${path.relative(root, pre)}`);
      return 0;
    }
  }
  say(`building the native addon from source${checkout ? ' (a git checkout)' : ''}; with CUDA this takes a few minutes`);
  const cxx = process.env.CXX || 'c++';
  if (!has(cxx)) {
    console.error(
      `fused-adapters: ${process.env.FUSED_ADAPTERS_BUILD_FROM_SOURCE ? 'building from source was asked for' : `no prebuilt binary for ${process.platform}-${process.arch}`}, `
        + `and there is no C++ compiler ('${cxx}').\n` +
        '  Install a C++17 compiler (g++ or clang++) and cmake, then run `npm install` again.',
    );
    return 1;
  }
  if (has('cmake')) {
    const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
    const t0 = Date.now();
    if (run(process.execPath, [cmakeJs, 'rebuild'])) {
      say(`built in ${Math.round((Date.now() - t0) / 1000)} s`);
      return 0;
    }
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

/**
 * Says which BLAS the CPU matmuls will use (found at run time, like cuBLAS), and how to get one
 * when there is none: the portable GEMM is several times slower.
 */
function reportBlas() {
  let info;
  try {
    const bin = [path.join(root, 'build', 'Release', 'fused_adapters.node')].find((f) => fs.existsSync(f)) ?? prebuildFound();
    if (!bin) return;
    info = require(bin).buildInfo();
  } catch {
    return; // the addon does not load here (reported when it is used)
  }
  if (info.blas) {
    console.log(`fused-adapters: CPU matmuls use ${info.blasLibrary}${info.blasVersion ? ` (${info.blasVersion})` : ''}`);
    return;
  }
  console.log(
    'fused-adapters: no BLAS library found (libopenblas, MKL\'s libmkl_rt, BLIS, libcblas); CPU matmuls use the portable loop, '
      + 'several times slower. Install one (Debian/Ubuntu: apt-get install libopenblas0; Fedora: dnf install openblas; '
      + 'macOS: brew install openblas) or point FUSED_ADAPTERS_BLAS at a CBLAS library; nothing needs rebuilding.',
  );
}

process.exitCode = main();
if (process.exitCode === 0) reportBlas();
