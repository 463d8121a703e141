#!/usr/bin/env -S MALLOC_ARENA_MAX=1 node --max-semi-space-size=4 --expose-gc
// MALLOC_ARENA_MAX=1 (read by glibc when the process starts): V8's worker threads, which start
// before any of bakker's code runs, share the main malloc arena instead of one each; the code
// they compile in the background left 3-10 MB in each own arena (the native helper then allows
// one more arena, for the thread pool). Measured: a 100k-entry incremental's peak 95-108 MB ->
// 92-94 MB, no slower. It is not passed on to the programs bakker runs (hooks, ssh).
// --max-semi-space-size=4: a smaller young generation keeps a 100k-entry backup under 100 MB
// of memory at no measurable cost in speed; --expose-gc lets a backup ask for a collection every
// 300 ms, which keeps the peak near what is in use (docs/PERFORMANCE.md).
// Copies, links and directory scans run on libuv's thread pool; 6 threads keep two or more
// cores busy without starving the main thread.
if (process.env.MALLOC_ARENA_MAX === '1') delete process.env.MALLOC_ARENA_MAX;
process.env.UV_THREADPOOL_SIZE ??= '6';
const { main } = await import('../dist/src/cli/main.js');
process.exitCode = await main(process.argv.slice(2));
