/**
 * Page channels (our multifd): layout shared by the main thread and the page workers of one side.
 *
 * Frames on a page channel are RAM records in the ram-records.ts layout, back to back:
 *   PAGES batch  | u8 2 | u8 0 | u16 block | u32 round | u32 count | u32 data_len | descriptors | data |
 *   round end    | u8 3 | u8 0 | u16 0     | u32 round | u32 0     | u32 0        |   (16 bytes)
 * A channel's round-end follows every batch of that round it carried, so "all channels ended
 * round R" means every page of round R is placed: the sync point that keeps a stale copy from
 * overwriting a newer one (QEMU's multifd flush). The source starts round R+1 only after that.
 *
 * Source control words (Int32Array over a SharedArrayBuffer):
 *   ROUND      round being sent
 *   COUNT      pages in the round's list
 *   CURSOR     next list entry to claim (workers Atomics.add BATCH)
 *   ALLOW_KIB  send allowance in KiB (max-bandwidth per 100 ms window), UNLIMITED when 1
 *   SENT_KIB   KiB sent by all workers (Atomics.add)
 */
import type { TlsConfig } from '../tls/config.js';

export const SRC = { ROUND: 0, COUNT: 1, CURSOR: 2, ALLOW_KIB: 3, SENT_KIB: 4, UNLIMITED: 5 } as const;
export const SRC_WORDS = 8;
export const BATCH_PAGES = 256;
export const ROUND_END_KIND = 3;

/** Destination `received` table, one byte per page. */
export const PageState = {
  /** no copy yet */
  MISSING: 0,
  /** the newest copy verified and is in RAM */
  RECEIVED: 1,
  /** the newest copy failed its checksum (torn by a guest write, or corrupt); a newer one must come */
  TORN: 2,
} as const;

/**
 * How a page channel proves itself, as the main and return-path channels do: TLS (source = client,
 * destination = server, whoever opened the TCP connection) and the hello's tag keyed by the
 * migration key K (shared/tls/binding.ts).
 */
export interface PageChannelSecurity {
  tls: TlsConfig | null;
  /** The migration key K (32 bytes). */
  key: Uint8Array;
  /** Source: the name the destination's certificate must carry. */
  host?: string;
}

/** What both kinds of page worker get in workerData (plus their own fields). */
export interface PageWorkerShared {
  security: PageChannelSecurity;
  ram: SharedArrayBuffer;
  pageSize: number;
  pageCount: number;
  /** BigUint64Array: checksum of the newest copy of each page (sent on the source, verified on the destination). */
  checksums: SharedArrayBuffer;
  index: number;
  migrationId: Uint8Array;
  /** Path of the batch page hasher (native-hash.ts), or null: hash page by page. */
  nativeHash: string | null;
}

export type PageWorkerEvent =
  | { type: 'listening'; port: number }
  | { type: 'connected' }
  | { type: 'round-sent'; round: number; pages: number; zero: number; bytes: number }
  | { type: 'round-done'; round: number; pages: number; torn: number }
  | { type: 'error'; code: string; message: string; page?: number };
