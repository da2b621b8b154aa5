// The child process of test/memory.test.ts (plain JS on the built package): adapterForward outputs
// at [2048, 768] are dropped, never disposed, in a long async loop, under a host memory budget
// (FUSED_ADAPTERS_HOST_MEMORY_LIMIT, set by the test). Native memory must stay bounded because V8
// hears of every tensor's bytes and collects the dropped ones; without that, the budget refuses an
// allocation within a few dozen calls and this process exits with the error.
//   node droppedOutputs.js <calls>   → prints one JSON line {calls, peakBytes, finalBytes, limitBytes}
const path = require('path');
const fa = require(path.join(__dirname, '..', '..', 'dist', 'lib'));

(async () => {
  const calls = Number(process.argv[2] ?? 1500);
  const [N, d, r] = [2048, 768, 8];
  const x = fa.randn([N, d], { device: 'cpu', seed: 1 });
  const w = {
    downWeight: fa.randn([r, d], { device: 'cpu', seed: 2 }), downBias: fa.randn([r], { device: 'cpu', seed: 3 }),
    upWeight: fa.randn([d, r], { device: 'cpu', seed: 4 }), upBias: fa.randn([d], { device: 'cpu', seed: 5 }),
  };
  let peak = 0;
  for (let i = 0; i < calls; i++) {
    adapterOutputDropped(fa, x, w);
    await new Promise((resolve) => setImmediate(resolve));
    peak = Math.max(peak, fa.memoryStats('cpu').allocatedBytes);
  }
  const s = fa.memoryStats('cpu');
  console.log(JSON.stringify({ calls, peakBytes: peak, finalBytes: s.allocatedBytes, limitBytes: s.limitBytes }));
})().catch((e) => {
  console.error(e.message);
  process.exit(1);
});

function adapterOutputDropped(fa, x, w) {
  const { out } = fa.adapterForward(x, w);
  if (out.shape[0] !== x.shape[0]) throw new Error('unexpected output shape');
}
