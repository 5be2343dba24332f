/**
 * The arithmetic of the two throttles a migration source puts on its vCPU, kept free of worker
 * globals so it can be tested alone (vcpu-worker.ts applies it):
 *
 * - CPU throttle (QEMU's cpu-throttle, used by auto-converge): the vCPU runs one time slice, then
 *   sleeps pct/(100-pct) slices, so it runs (100-pct) % of wall time.
 * - Dirty limit (QEMU 8.1's dirty-limit): a token bucket on page writes; only a writing vCPU waits.
 *   QEMU reports it per "round", one fill of the vCPU's KVM dirty ring.
 */

/** QEMU's CPU_THROTTLE_TIMESLICE_NS (10 ms): a throttled vCPU runs this long between sleeps. */
export const THROTTLE_SLICE_MS = 10;
/** Entries in one vCPU's KVM dirty ring (QEMU's default dirty-ring-size): one dirty-limit round. */
export const DIRTY_RING_ENTRIES = 4096;

/** How long a vCPU throttled at `percent` sleeps after each slice it ran (0 when off). */
export function sleepAfterSliceMs(percent: number): number {
  if (percent <= 0) return 0;
  return (percent / (100 - percent)) * THROTTLE_SLICE_MS;
}

/** Bucket size in bytes: one period's worth of the limit, but never less than one page (or nothing fits). */
export function bucketCapacity(limitBytesPerSecond: number, periodMs: number, pageSize: number): number {
  return Math.max(pageSize, (limitBytesPerSecond * periodMs) / 1000);
}

/** Tokens (bytes) after refilling at the limit from `lastMs` to `nowMs`, capped at the capacity. */
export function refillTokens(
  tokens: number,
  lastMs: number,
  nowMs: number,
  limitBytesPerSecond: number,
  capacity: number,
): number {
  return Math.min(capacity, tokens + (Math.max(0, nowMs - lastMs) * limitBytesPerSecond) / 1000);
}

/** Pages the tokens pay for now. */
export function affordablePages(tokens: number, pageSize: number): number {
  return Math.max(0, Math.floor(tokens / pageSize));
}

/** Ms to wait until the tokens pay for `pages` page writes (0 when they already do). */
export function sleepForPagesMs(
  tokens: number,
  pages: number,
  pageSize: number,
  limitBytesPerSecond: number,
): number {
  const missing = pages * pageSize - tokens;
  return missing <= 0 ? 0 : (missing * 1000) / limitBytesPerSecond;
}

export interface RoundFigures {
  /** µs the dirty limit slept in the round: QEMU's dirty-limit-throttle-time-per-round. */
  throttleUs: number;
  /** µs the vCPU ran (wall time less throttle sleeps and stops) to fill the ring: dirty-limit-ring-full-time. */
  ringFullUs: number;
}

/** Counts page writes into dirty-ring rounds and times each round. */
export class DirtyRingRound {
  #writes = 0;
  #startMs: number;
  #limitSleptMs = 0;
  #notRunningMs = 0;

  constructor(nowMs: number) {
    this.#startMs = nowMs;
  }

  /** Starts counting afresh (a new limit: figures from the old one do not describe it). */
  reset(nowMs: number): void {
    this.#writes = 0;
    this.#startMs = nowMs;
    this.#limitSleptMs = 0;
    this.#notRunningMs = 0;
  }

  /** Time the vCPU did not run (a throttle sleep or a stop); `byLimit` when the dirty limit slept. */
  paused(ms: number, byLimit: boolean): void {
    this.#notRunningMs += ms;
    if (byLimit) this.#limitSleptMs += ms;
  }

  /** Counts `pages` writes; returns the figures when they filled the ring, else null. */
  wrote(pages: number, nowMs: number): RoundFigures | null {
    this.#writes += pages;
    if (this.#writes < DIRTY_RING_ENTRIES) return null;
    const figures = {
      throttleUs: this.#limitSleptMs * 1000,
      ringFullUs: Math.max(0, nowMs - this.#startMs - this.#notRunningMs) * 1000,
    };
    const carry = this.#writes - DIRTY_RING_ENTRIES;
    this.reset(nowMs);
    this.#writes = carry;
    return figures;
  }
}
