// The child process of test/atomicSave.test.ts (plain JS on the built package, dist/lib; run
// `npm run build:ts` first). Modes:
//
//   node atomicSaveChild.js adapters <dir>          saves adapters 'a' (seq_bn) and 'b' (par_bn) with their
//                                                    heads alternately into <dir>, new values each save, forever
//   node atomicSaveChild.js checkpoint <dir>        saves training checkpoints into <dir>, forever
//   node atomicSaveChild.js crash <step> <dir> <label>   one replaceDirAtomic save of two text files holding
//                                                    <label>, killing itself (SIGKILL) at <step>
//
// The loops print `saved <k> <ms>` after save k is complete. The exported helpers let the test
// rebuild what save k held.
'use strict';
const path = require('path');

const FIXTURE = path.join(__dirname, '..', 'fixtures', 'tiny-bert');

/** Deterministic values for `n` floats from `seed` (xorshift32). */
function values(n, seed) {
  let s = (Math.imul(seed + 1, 2654435761) >>> 0) || 1;
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    a[i] = (s / 4294967296 - 0.5) * 0.4;
  }
  return a;
}

function fill(params, seed) {
  let j = 0;
  for (const t of params.values()) t.copyFrom(values(t.size, seed * 1000 + j++));
}

/** The model both sides use: adapters 'a' (seq_bn) and 'b' (par_bn), heads 'a' (3 labels) and 'b' (2 labels). */
async function makeModel(loadBackbone) {
  const m = await loadBackbone(FIXTURE, { device: 'cpu' });
  m.addAdapter('a', 'seq_bn');
  m.addAdapter('b', 'par_bn');
  m.addClassificationHead('a', { numLabels: 3 });
  m.addClassificationHead('b', { numLabels: 2 });
  return m;
}

/** Sets the adapter and head that save k writes to save k's values; returns their name. */
function prepareSave(model, k) {
  const name = k % 2 ? 'b' : 'a';
  fill(model.adapterParameters(name), 2 * k + 1);
  fill(model.head(name).parameters(), 2 * k + 2);
  return name;
}

/** Checkpoint k's data (for saveCheckpoint) and its tensor shapes. */
function checkpointData(k) {
  const shape = [16, 24];
  const params = new Map([['w', values(384, 3 * k)], ['b', values(16, 3 * k + 1)]]);
  const expAvg = new Map([['w', values(384, 3 * k + 2)], ['b', values(16, 3 * k + 2)]]);
  const state = {
    version: 1, position: { step: k, epoch: 0, index: k }, seed: 7,
    optimizer: { step: k, lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0 },
    entries: { w: { step: k, hasMaster: false }, b: { step: k, hasMaster: false } },
    best: null, evalsWithoutImprovement: 0, labels: ['x', 'y'], tensorsFile: '',
  };
  return {
    data: { state, params, expAvg, expAvgSq: expAvg, master: new Map(), best: new Map() },
    shapes: new Map([['w', shape], ['b', [16]]]),
  };
}

module.exports = { values, fill, makeModel, prepareSave, checkpointData };

async function main() {
  const [mode, ...args] = process.argv.slice(2);
  const dist = path.join(__dirname, '..', '..', 'dist', 'lib');
  if (mode === 'adapters') {
    const lib = require(dist);
    const dir = args[0];
    const model = await makeModel(lib.loadBackbone);
    for (let k = 0; ; k++) {
      const name = prepareSave(model, k);
      const t0 = Date.now();
      lib.saveAdapter(model, dir, name);
      process.stdout.write(`saved ${k} ${Date.now() - t0}\n`);
    }
  } else if (mode === 'checkpoint') {
    const { saveCheckpoint } = require(path.join(dist, 'train', 'checkpoint'));
    const dir = args[0];
    for (let k = 0; ; k++) {
      const { data, shapes } = checkpointData(k);
      const t0 = Date.now();
      saveCheckpoint(dir, data, shapes);
      process.stdout.write(`saved ${k} ${Date.now() - t0}\n`);
    }
  } else if (mode === 'crash') {
    const fs = require('fs');
    const { replaceDirAtomic } = require(path.join(dist, 'atomicDir'));
    const [step, dir, label] = args;
    const die = () => process.kill(process.pid, 'SIGKILL');
    replaceDirAtomic(dir, (tmp) => {
      fs.writeFileSync(path.join(tmp, 'a.txt'), label);
      if (step === 'mid-write') die();
      fs.writeFileSync(path.join(tmp, 'b.txt'), label);
    }, { where: 'crash', owns: (n) => n.endsWith('.txt'), onStep: (s) => { if (s === step) die(); } });
    process.stdout.write('finished\n');
  } else {
    throw new Error(`atomicSaveChild: unknown mode '${mode}'`);
  }
}

if (require.main === module)
  main().catch((e) => {
    process.stderr.write(`${e.stack}\n`);
    process.exit(1);
  });
