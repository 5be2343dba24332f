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
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';

const BOOTSTRAP = new URL('./bootstrap.mjs', import.meta.url);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CACHE_DIR = join(ROOT, 'node_modules', '.cache', 'switchover');
const bundles = new Map<string, URL | null>();

export function spawnTsWorker(entry: URL, data: Record<string, unknown>): Worker {
  const bundled = bundleOnce(entry);
  if (bundled) return new Worker(bundled, { workerData: data });
  return new Worker(BOOTSTRAP, { workerData: { ...data, entry: entry.href } });
}

function bundleOnce(entry: URL): URL | null {
  const cached = bundles.get(entry.href);
  if (cached !== undefined) return cached;
  let url: URL | null = null;
  try {
    url = bundle(entry);
  } catch (err) {
    if (process.env.SWITCHOVER_DEBUG) process.stderr.write(`worker bundle failed, using tsx: ${err}\n`);
  }
  bundles.set(entry.href, url);
  return url;
}

function bundle(entry: URL): URL {
  const esbuild = createRequire(import.meta.url)('esbuild') as typeof import('esbuild');
  const out = esbuild.buildSync({
    entryPoints: [fileURLToPath(entry)],
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: `node${process.versions.node.split('.')[0]}`,
    packages: 'external',
    write: false,
    logLevel: 'silent',
  });
  const code = out.outputFiles[0]!.contents;
  const hash = createHash('sha256').update(code).digest('hex').slice(0, 16);
  const file = join(CACHE_DIR, `${basename(fileURLToPath(entry), '.ts')}-${hash}.mjs`);
  if (!sameFile(file, code)) {
    mkdirSync(CACHE_DIR, { recursive: true });
    // write then rename: source and destination may bundle the same entry at the same moment
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, code);
    renameSync(tmp, file);
  }
  return pathToFileURL(file);
}

function sameFile(file: string, code: Uint8Array): boolean {
  try {
    return readFileSync(file).equals(code);
  } catch {
    return false;
  }
}
