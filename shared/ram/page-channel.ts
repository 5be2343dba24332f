/**
 * Page channels (our multifd): what the main thread and the page workers of one side share. The
 * frames on the wire are in shared/protocol/page-batch.ts (batches, then ROUND_END per round). A
 * channel's ROUND_END follows every batch of that round it carried, so "all channels ended round R"
 * means every page of round R is placed: the sync point that keeps a stale copy from overwriting a
 * newer one (QEMU's multifd flush). The source starts round R+1 only after that.
 *
 * Source control words (Int32Array over a SharedArrayBuffer):
 *   ROUND      round being sent
 *   COUNT      pages in the round's list
 *   CURSOR     next list entry to claim (workers Atomics.add their batch size)
 *   ALLOW_KIB  send allowance in KiB (max-bandwidth per 100 ms window), UNLIMITED when 1
 *   SENT_KIB   KiB handed to the sockets by all workers (Atomics.add)
 *   BATCH      pages per batch (smaller when max-bandwidth allows less than 256 pages a window)
 */
import type { Worker } from 'node:worker_threads';
import type { ChannelSecurity } from '../handlers.js';

export const SRC = {
  ROUND: 0,
  COUNT: 1,
  CURSOR: 2,
  ALLOW_KIB: 3,
  SENT_KIB: 4,
  UNLIMITED: 5,
  BATCH: 6,
} as const;
export const SRC_WORDS = 8;
/** Most pages in one batch (1 MiB of 4 KiB pages). */
export const BATCH_PAGES = 256;

/** What both kinds of page worker get in workerData (plus their own fields). */
export interface PageWorkerShared {
  security: ChannelSecurity;
  ram: SharedArrayBuffer;
  pageSize: number;
  pageCount: number;
  /** BigUint64Array: checksum of the newest copy of each page (sent on the source, verified on the destination). */
  checksums: SharedArrayBuffer;
  index: number;
  migrationId: Uint8Array;
  /** Path of the batch page hasher (native-hash.ts), or null: hash page by page. */
  nativeHash: string | null;
  /** No progress on the channel for this long fails it (ms; 0 = never). */
  stallTimeoutMs: number;
}

/** Worker → main thread. */
export type PageWorkerEvent =
  | { type: 'listening'; port: number }
  | { type: 'connected' }
  /** A connection to the page port that was not our peer's page channel: dropped, logged. */
  | { type: 'stranger'; remote: string; reason: string }
  | { type: 'round-sent'; round: number; pages: number; zero: number; bytes: number }
  | { type: 'round-done'; round: number; pages: number; torn: number }
  | { type: 'error'; code: string; message: string; page?: number };

/** Main thread → worker. */
export type PageWorkerCommand =
  | { type: 'round'; round: number }
  /** Destination: connect to host:port, from our address on the main connection (`from`, '' = any). */
  | { type: 'connect'; host: string; port: number; from: string }
  | { type: 'close' };

/** How long page workers get to close their sockets before they are terminated. */
const CLOSE_GRACE_MS = 200;

/** Tells every page worker to close, and terminates those still running after a short grace. */
export function closePageWorkers(workers: readonly Worker[]): void {
  for (const w of workers) w.postMessage({ type: 'close' } satisfies PageWorkerCommand);
  setTimeout(() => {
    for (const w of workers) void w.terminate();
  }, CLOSE_GRACE_MS).unref();
}
