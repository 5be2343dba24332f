/**
 * max-bandwidth enforcement and bandwidth measurement, per 100 ms window as QEMU's migration-stats.c:
 * the byte budget of a window is max-bandwidth / 10; the bandwidth estimate is the bytes sent in the
 * last window over its length (no smoothing).
 */
export const WINDOW_MS = 100;

export class RateLimiter {
  #windowStart: number;
  #windowBytes = 0;
  #maxBytesPerSecond: number;

  constructor(maxBytesPerSecond: number, now: number) {
    this.#maxBytesPerSecond = maxBytesPerSecond;
    this.#windowStart = now;
  }

  /** Starts a fresh window (the iteration phase begins; setup traffic is not rate-limited). */
  restart(now: number): void {
    this.#windowStart = now;
    this.#windowBytes = 0;
  }

  /** 0 = unlimited (switchover sets this). */
  setLimit(maxBytesPerSecond: number): void {
    this.#maxBytesPerSecond = maxBytesPerSecond;
  }

  account(bytes: number): void {
    this.#windowBytes += bytes;
  }

  exhausted(): boolean {
    return this.#maxBytesPerSecond > 0 && this.#windowBytes >= this.#maxBytesPerSecond / (1000 / WINDOW_MS);
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
    return { bytes, ms };
  }
}
