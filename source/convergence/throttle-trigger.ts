/**
 * QEMU's convergence throttles, as arithmetic only (migration/ram.c): when a dirty-bitmap sync closes
 * a period of at least 1000 ms, `migration_trigger_throttle` compares the bytes the guest dirtied in
 * the period with the bytes sent in it; the second time (not necessarily in a row) the dirtied bytes
 * exceed `throttle-trigger-threshold` % of the sent bytes, it fires and the counter starts over. With
 * auto-converge a firing steps the vCPU throttle (`mig_throttle_guest_down`); with dirty-limit it
 * puts every vCPU under the `vcpu-dirty-limit` quota (`migration_dirty_limit_guest`, once).
 *
 * Kept free of clocks and guests so that unit tests can replay recorded period sequences and check
 * every throttle value against QEMU's integer arithmetic.
 */

/** QEMU's period: a sync must come more than this long after the previous period closed. */
export const THROTTLE_PERIOD_MS = 1000;
/** QEMU's cpu_throttle_set clamps to CPU_THROTTLE_PCT_MIN..CPU_THROTTLE_PCT_MAX. */
const PCT_MIN = 1;
const PCT_MAX = 99;

export interface ThrottleParameters {
  'throttle-trigger-threshold': number;
  'cpu-throttle-initial': number;
  'cpu-throttle-increment': number;
  'cpu-throttle-tailslow': boolean;
  'max-cpu-throttle': number;
}

/** One closed period, as migration_trigger_throttle sees it. */
export interface PeriodSample {
  /** Bytes newly found dirty by the syncs of the period (QEMU num_dirty_pages_period × page size). */
  bytesDirty: number;
  /** Bytes sent in the period (QEMU migration_transferred_bytes() − bytes_xfer_prev). */
  bytesSent: number;
}

/** What a firing decided (returned so the caller can log, report and apply it). */
export type ThrottleStep =
  | ({ kind: 'cpu-throttle'; from: number; to: number } & PeriodVerdict)
  | ({ kind: 'dirty-limit' } & PeriodVerdict);

/** The period that fired, for the decision's reason. */
export interface PeriodVerdict {
  bytesDirty: number;
  bytesSent: number;
  bytesThreshold: number;
}

/**
 * The trigger's state across periods: QEMU's dirty_rate_high_cnt, the period's start, and the bytes
 * sent when it started. `onSync` is called at every dirty sync; it closes a period only when more
 * than THROTTLE_PERIOD_MS have passed (as migration_bitmap_sync does), and returns the step taken.
 */
export class ThrottleTrigger {
  #highCount = 0;
  #periodStartMs: number | null = null;
  #sentAtStart = 0;
  #dirtyInPeriod = 0;
  /** Current vCPU throttle percentage (0 = not throttling): QEMU's cpu_throttle_get_percentage. */
  throttle = 0;
  /** Whether the dirty limit is in service (dirtylimit_in_service). */
  dirtyLimitOn = false;

  constructor(
    private readonly mode: 'auto-converge' | 'dirty-limit',
    private readonly params: ThrottleParameters,
  ) {}

  /**
   * The period starts at the first sync (QEMU: time_last_bitmap_sync set on the first sync). Returns
   * the period it closed and what that decided, or null while the period is still open.
   */
  onSync(
    nowMs: number,
    newlyDirtyBytes: number,
    sentTotal: number,
  ): { period: PeriodSample; step: ThrottleStep | null } | null {
    if (this.#periodStartMs === null) {
      this.#periodStartMs = nowMs;
      this.#sentAtStart = sentTotal;
    }
    this.#dirtyInPeriod += newlyDirtyBytes;
    if (!(nowMs > this.#periodStartMs + THROTTLE_PERIOD_MS)) return null;
    const period = { bytesDirty: this.#dirtyInPeriod, bytesSent: sentTotal - this.#sentAtStart };
    const step = this.closePeriod(period);
    this.#periodStartMs = nowMs;
    this.#sentAtStart = sentTotal;
    this.#dirtyInPeriod = 0;
    return { period, step };
  }

  /** migration_trigger_throttle on one closed period. */
  closePeriod(p: PeriodSample): ThrottleStep | null {
    const threshold = this.params['throttle-trigger-threshold'];
    // integer arithmetic as QEMU's uint64_t: bytes_xfer_period * threshold / 100
    const bytesThreshold = Math.floor((p.bytesSent * threshold) / 100);
    if (!(p.bytesDirty > bytesThreshold)) return null;
    if (++this.#highCount < 2) return null;
    this.#highCount = 0;
    if (this.mode === 'dirty-limit') {
      // migration_dirty_limit_guest: the quota is set once and stays (the parameter cannot change here)
      if (this.dirtyLimitOn) return null;
      this.dirtyLimitOn = true;
      return { kind: 'dirty-limit', bytesDirty: p.bytesDirty, bytesSent: p.bytesSent, bytesThreshold };
    }
    const from = this.throttle;
    this.throttle = nextThrottle(from, this.params, p.bytesDirty, bytesThreshold);
    return {
      kind: 'cpu-throttle',
      from,
      to: this.throttle,
      bytesDirty: p.bytesDirty,
      bytesSent: p.bytesSent,
      bytesThreshold,
    };
  }

  /** Periods that exceeded the threshold since the last firing (0 or 1). */
  get highCount(): number {
    return this.#highCount;
  }
}

/**
 * mig_throttle_guest_down: start at cpu-throttle-initial; then add cpu-throttle-increment, or with
 * tailslow only what brings the guest's CPU share to the level where it would dirty the threshold
 * (never more than the increment); capped at max-cpu-throttle, and cpu_throttle_set's 1..99.
 */
export function nextThrottle(
  current: number,
  params: ThrottleParameters,
  bytesDirtyPeriod: number,
  bytesDirtyThreshold: number,
): number {
  if (current === 0) return clampPct(params['cpu-throttle-initial']);
  let increment = params['cpu-throttle-increment'];
  if (params['cpu-throttle-tailslow']) {
    const cpuNow = 100 - current;
    // QEMU: cpu_ideal = cpu_now * (threshold * 1.0 / dirty), stored in a uint64_t (truncated)
    const cpuIdeal = Math.trunc(cpuNow * (bytesDirtyThreshold / bytesDirtyPeriod));
    increment = Math.min(cpuNow - cpuIdeal, increment);
  }
  return clampPct(Math.min(current + increment, params['max-cpu-throttle']));
}

function clampPct(pct: number): number {
  return Math.max(PCT_MIN, Math.min(PCT_MAX, pct));
}
