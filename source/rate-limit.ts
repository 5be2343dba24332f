/**
 * max-bandwidth enforcement and bandwidth measurement, per 100 ms window as QEMU's migration-stats.c:
 * the byte budget of a window is max-bandwidth / 10; the bandwidth estimate is the bytes sent in the
 * last window over its length (no smoothing).
 *
 * One difference from QEMU, on purpose: a window that overshoots its budget (a batch is sent whole,
 * and a 1 MiB batch is ten windows' budget at 1 MiB/s) carries the excess into the next windows as
 * debt, so the average rate is the limit. Forgiving it (QEMU resets the count each window) let a
 * 1 KiB/s limit send ~10 MiB/s and 16 MiB/s ~20 MiB/s. Unused budget is not carried: an idle spell
 * must not buy a burst.
 */
export const WINDOW_MS = 100;

export class RateLimiter {
  #windowStart: number;
  /** Bytes sent in the current window (what the window measures). */
  #windowBytes = 0;
  /** Bytes the current window may still send; negative = debt from an earlier overshoot. */
  #credit: number;
  #maxBytesPerSecond: number;

  constructor(maxBytesPerSecond: number, now: number) {
    this.#maxBytesPerSecond = maxBytesPerSecond;
    this.#windowStart = now;
    this.#credit = this.#budget();
  }

  /** Starts a fresh window (the iteration phase begins; setup traffic is not rate-limited). */
  restart(now: number): void {
    this.#windowStart = now;
    this.#windowBytes = 0;
    this.#credit = this.#budget();
  }

  /** 0 = unlimited (switchover sets this). */
  setLimit(maxBytesPerSecond: number): void {
    this.#maxBytesPerSecond = maxBytesPerSecond;
  }

  account(bytes: number): void {
    this.#windowBytes += bytes;
    this.#credit -= bytes;
  }

  exhausted(): boolean {
    return this.#maxBytesPerSecond > 0 && this.#credit <= 0;
  }

  /** ms until the current window ends (0 if it already has). */
  remainingMs(now: number): number {
    return Math.max(0, this.#windowStart + WINDOW_MS - now);
  }

  /** Closes the window if it is at least WINDOW_MS old; returns its bytes and length, or null. */
  roll(now: number): { bytes: number; ms: number } | null {
    const ms = now - this.#windowStart;
    if (ms < WINDOW_MS) return null;
    const bytes = this.#windowBytes;
    this.#windowStart = now;
    this.#windowBytes = 0;
    // a token bucket of one window's budget, filled at the limit for the time that passed
    this.#credit = Math.min(this.#budget(), this.#credit + (this.#maxBytesPerSecond * ms) / 1000);
    return { bytes, ms };
  }

  #budget(): number {
    return this.#maxBytesPerSecond / (1000 / WINDOW_MS);
  }
}
