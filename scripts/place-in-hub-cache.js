#!/usr/bin/env node
// Places a local model directory in the Hugging Face hub cache as a snapshot of a repo, so that
// `loadBackbone('<repo>')` (and Python's from_pretrained) find it offline:
//   node scripts/place-in-hub-cache.js <dir> <org/name> [--cache-dir DIR]
// The snapshot's commit id is derived from the files' hashes (it is not the hub's commit).
'use strict';
const path = require('path');
const { placeInHubCache } = require(path.join(__dirname, '..', 'dist', 'lib', 'io', 'hub.js'));

async function main() {
  const args = process.argv.slice(2);
  const at = args.indexOf('--cache-dir');
  const cacheDir = at >= 0 ? args.splice(at, 2)[1] : undefined;
  const [dir, repo] = args;
  if (!dir || !repo) throw new Error('usage: place-in-hub-cache.js <dir> <org/name> [--cache-dir DIR]');
  const snap = await placeInHubCache(dir, repo, { cacheDir });
  console.log(`placed ${dir} as ${repo}: ${snap}`);
}
main().catch((e) => {
  console.error(`place-in-hub-cache: ${e.message}`);
  process.exit(1);
});
