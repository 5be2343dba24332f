/**
 * Starts a worker thread from a TypeScript entry.
 *
 * Preferred: the entry is bundled once per process with esbuild (the compiler tsx itself runs on)
 * into one plain ES module under node_modules/.cache/switchover/, and the worker starts from that
 * file. A worker started through tsx's loader instead (bootstrap.mjs) carries a second V8 isolate
 * for the loader's hooks and compiles every module again: ~33 MiB per worker against ~19 MiB bundled,
 * measured here with four source page workers (scratch measurement, session 2), which is what kept
 * a 1 GiB guest with 4 page channels over its memory budget; it also starts slower.
 * Packages stay external (resolved from node_modules next to the bundle; the xxhash addon is native).
 * If bundling fails (read-only tree, esbuild missing) the tsx bootstrap is used and nothing else changes.
 *
 * Bundle BEFORE guest RAM exists: call prepareWorkerBundles() first thing. esbuild runs as a child
 * process, and libuv starts children with fork(): every private page of the parent becomes
 * copy-on-write, so after a fork each first write to a page of a touched 1 GiB guest takes a fault
 * and a 4 KiB copy. Measured here: a destination that bundled after its RAM preallocation took
 * 286,631 faults during the migration instead of 30,620, and its first round ran ~45 % slower.
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { CACHE_DIR, cachedFile } from '../build-cache.js';

const BOOTSTRAP = new URL('./bootstrap.mjs', import.meta.url);
const bundles = new Map<string, URL | null>();

export function spawnTsWorker(entry: URL, data: Record<string, unknown>): Worker {
  const bundled = bundleOnce(entry);
  if (bundled) return new Worker(bundled, { workerData: data });
  return new Worker(BOOTSTRAP, { workerData: { ...data, entry: entry.href } });
}

/** Bundles every entry this process will start, in one esbuild run (see the header: do it early). */
export function prepareWorkerBundles(entries: URL[]): void {
  const todo = entries.filter((e) => !bundles.has(e.href));
  if (todo.length === 0) return;
  try {
    const urls = bundle(todo);
    for (const [i, e] of todo.entries()) bundles.set(e.href, urls[i]!);
  } catch (err) {
    if (process.env.SWITCHOVER_DEBUG) process.stderr.write(`worker bundle failed, using tsx: ${err}\n`);
    for (const e of todo) bundles.set(e.href, null);
  }
}

function bundleOnce(entry: URL): URL | null {
  prepareWorkerBundles([entry]);
  return bundles.get(entry.href) ?? null;
}

function bundle(entries: URL[]): URL[] {
  const esbuild = createRequire(import.meta.url)('esbuild') as typeof import('esbuild');
  const paths = entries.map((e) => fileURLToPath(e));
  const out = esbuild.buildSync({
    entryPoints: paths.map((p, i) => ({ in: p, out: `entry${i}` })),
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: `node${process.versions.node.split('.')[0]}`,
    packages: 'external',
    outdir: CACHE_DIR,
    write: false,
    logLevel: 'silent',
  });
  return paths.map((p, i) => {
    const code = out.outputFiles.find((f) => basename(f.path) === `entry${i}.js`)!.contents;
    const hash = createHash('sha256').update(code).digest('hex').slice(0, 16);
    const file = cachedFile(`${basename(p, '.ts')}-${hash}.mjs`, (tmp) => writeFileSync(tmp, code));
    return pathToFileURL(file);
  });
}
