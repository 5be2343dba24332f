/**
 * KubeVirt's progress watermark: a migration makes progress while `remaining` keeps reaching new
 * lows. One that has not gone below its lowest for `warnAfterMs` is not converging at this link
 * rate and dirty rate; the user is told once, and the report keeps since when.
 */
export interface WatermarkReport {
  /** Lowest `remaining` seen (bytes). */
  'lowest-remaining': number;
  /** When it was first reached, ms from the start of the migration. */
  'lowest-at-ms': number;
  /** When the warning was given (ms from the start), if it was. */
  'no-progress-warning-at-ms'?: number;
  /** The low it had not gone below since then: reached at this time (ms from the start). */
  'no-progress-since-ms'?: number;
}

export class ProgressWatermark {
  #lowest = Number.POSITIVE_INFINITY;
  #lowestAt = 0;
  #warnedAt: number | null = null;
  #stalledSince = 0;

  /** `warnAfterMs` 0: never warn. Times are ms from the start of the migration. */
  constructor(private readonly warnAfterMs: number) {}

  /** Records one progress sample; true exactly once, when the stall first reaches warnAfterMs. */
  observe(atMs: number, remaining: number): boolean {
    if (remaining < this.#lowest) {
      this.#lowest = remaining;
      this.#lowestAt = atMs;
      return false;
    }
    if (this.warnAfterMs <= 0 || this.#warnedAt !== null) return false;
    if (atMs - this.#lowestAt < this.warnAfterMs) return false;
    this.#warnedAt = atMs;
    this.#stalledSince = this.#lowestAt;
    return true;
  }

  /**
   * Starts the series over from `remaining` at `atMs`, counted as progress: the measure changed (the
   * first pass's remainder gives way to the dirty set each round starts with).
   */
  rebase(atMs: number, remaining: number): void {
    this.#lowest = remaining;
    this.#lowestAt = atMs;
  }

  get lowest(): number {
    return this.#lowest;
  }

  get lowestAtMs(): number {
    return this.#lowestAt;
  }

  report(): WatermarkReport | undefined {
    if (!Number.isFinite(this.#lowest)) return undefined;
    return {
      'lowest-remaining': this.#lowest,
      'lowest-at-ms': Math.round(this.#lowestAt),
      ...(this.#warnedAt === null
        ? {}
        : {
            'no-progress-warning-at-ms': Math.round(this.#warnedAt),
            'no-progress-since-ms': Math.round(this.#stalledSince),
          }),
    };
  }
}
