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
  /** µs the dirty limit sleeps the vCPU per ring-full of writes: QEMU's dirty-limit-throttle-time-per-round. */
  throttleUs: number;
  /** µs the vCPU takes to fill its ring at its current (limited) dirty rate: dirty-limit-ring-full-time. */
  ringFullUs: number;
}

/**
 * QEMU's dirty-limit figures, estimated once per period as QEMU's dirtylimit code does from each
 * vCPU's measured dirty rate (not by waiting for a ring to fill: at the default 1 MB/s one
 * 4096-entry ring takes 16 s, longer than most migrations under the limit last). Over the period:
 * ring-full time = the wall time per DIRTY_RING_ENTRIES writes, throttle time per round = the limit's
 * sleep per DIRTY_RING_ENTRIES writes. Time the vCPU was stopped does not count.
 */
export class DirtyRingEstimate {
  #writes = 0;
  #startMs: number;
  #limitSleptMs = 0;
  #stoppedMs = 0;

  constructor(
    nowMs: number,
    private periodMs: number,
  ) {
    this.#startMs = nowMs;
  }

  /** Starts a new period (a new limit: figures from the old one do not describe it). */
  reset(nowMs: number, periodMs = this.periodMs): void {
    this.periodMs = periodMs;
    this.#writes = 0;
    this.#startMs = nowMs;
    this.#limitSleptMs = 0;
    this.#stoppedMs = 0;
  }

  /** Time the vCPU did not run: asleep for the dirty limit (`byLimit`), or otherwise not running. */
  paused(ms: number, byLimit: boolean): void {
    if (byLimit) this.#limitSleptMs += ms;
    else this.#stoppedMs += ms;
  }

  /** Counts `pages` writes; at the end of a period with writes, returns its figures (else null). */
  wrote(pages: number, nowMs: number): RoundFigures | null {
    this.#writes += pages;
    const wallMs = nowMs - this.#startMs - this.#stoppedMs;
    if (nowMs - this.#startMs < this.periodMs || this.#writes === 0) return null;
    const perRing = DIRTY_RING_ENTRIES / this.#writes;
    const figures = {
      throttleUs: Math.round(this.#limitSleptMs * perRing * 1000),
      ringFullUs: Math.round(Math.max(0, wallMs) * perRing * 1000),
    };
    this.reset(nowMs);
    return figures;
  }
}
