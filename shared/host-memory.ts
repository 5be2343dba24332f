/**
 * How much guest RAM this host can honestly hold. A guest is allocated and touched up front (THP,
 * prealloc), so a size beyond what is available does not fail cleanly later: the allocation throws
 * deep inside, or the kernel's OOM killer ends the process mid-migration. Both the command line
 * (`--ram`) and a destination asked by its source use this bound.
 */
import { freemem, totalmem } from 'node:os';
import { PAGE_SIZE } from './guest/layout.js';

/** Left for the process itself (workers, rings, buffers) beside the guest. */
const HEADROOM = 256 * 1024 * 1024;
/** The smallest guest the layout supports (a version table, a data page) and then some. */
export const MIN_GUEST_RAM = 64 * PAGE_SIZE;

export interface RamCap {
  bytes: number;
  /** Why the cap is what it is, for error messages. */
  why: string;
}

/**
 * min(75 % of total memory, available memory − headroom), in whole pages. On Linux, libuv's free
 * memory is MemAvailable: page cache the kernel can drop counts as available.
 */
export function guestRamCap(totalBytes = totalmem(), availableBytes = freemem()): RamCap {
  const total = Math.floor(totalBytes * 0.75);
  const available = availableBytes - HEADROOM;
  const bytes = Math.max(0, Math.floor(Math.min(total, available) / PAGE_SIZE) * PAGE_SIZE);
  const why =
    available < total
      ? `${mib(availableBytes)} MiB available on this host, less ${mib(HEADROOM)} MiB headroom`
      : `75 % of this host's ${mib(totalBytes)} MiB`;
  return { bytes, why };
}

function mib(n: number): number {
  return Math.floor(n / (1024 * 1024));
}
