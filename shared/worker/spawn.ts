/** Starts a TypeScript worker through the tsx bootstrap (see bootstrap.mjs for why). */
import { Worker } from 'node:worker_threads';

const BOOTSTRAP = new URL('./bootstrap.mjs', import.meta.url);

export function spawnTsWorker(entry: URL, data: Record<string, unknown>): Worker {
  return new Worker(BOOTSTRAP, { workerData: { ...data, entry: entry.href } });
}
