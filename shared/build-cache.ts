/**
 * node_modules/.cache/switchover/: what the processes build for themselves at run time (worker
 * bundles, the batch page hasher), each file named by a hash of what it was built from, so a file
 * that exists is the right one.
 */
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const CACHE_DIR = join(
  fileURLToPath(new URL('../', import.meta.url)),
  'node_modules',
  '.cache',
  'switchover',
);

/**
 * The path of cached file `name`, made first by `make(tmpPath)` if it is not there. Written under a
 * temporary name and renamed: source and destination may build the same file at the same moment.
 */
export function cachedFile(name: string, make: (tmpPath: string) => void): string {
  const file = join(CACHE_DIR, name);
  if (!existsSync(file)) {
    mkdirSync(CACHE_DIR, { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    make(tmp);
    renameSync(tmp, file);
  }
  return file;
}
