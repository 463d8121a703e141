#!/usr/bin/env node
// Copies and links run on libuv's thread pool; 6 threads keep 2+ cores busy without starving the main thread (docs/PERFORMANCE.md).
process.env.UV_THREADPOOL_SIZE ??= '6';
const { main } = await import('../dist/src/cli/main.js');
process.exitCode = await main(process.argv.slice(2));
