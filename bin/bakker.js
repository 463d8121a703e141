#!/usr/bin/env node
// Copies and links run on libuv's thread pool; its default of 4 threads starves them.
process.env.UV_THREADPOOL_SIZE ??= '16';
const { main } = await import('../dist/src/cli/main.js');
process.exitCode = await main(process.argv.slice(2));
