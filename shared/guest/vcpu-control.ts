/**
 * vCPU control words in a small SharedArrayBuffer. The host writes CMD and waits on STATE; the vCPU
 * polls CMD between bursts of writes and acknowledges in STATE. Stopping is a handshake: the final
 * dirty sync may only run after the vCPU has said STOPPED (a flag it may not have seen yet is not enough).
 * The host also sets the vCPU's throttles here, and the vCPU publishes its throttle statistics here.
 */
export const CTL = {
  CMD: 0,
  STATE: 1,
  PATTERN: 2,
  RANGE_PAGES: 3,
  /** Host: CPU throttle percent, 0 = off (read by the vCPU every loop turn). */
  CPU_THROTTLE: 4,
  /** Host: dirty-limit period in ms. */
  DIRTY_LIMIT_PERIOD_MS: 5,
  /** Host: bumped after the limit and period are written, so the vCPU never reads half a change. */
  DIRTY_LIMIT_EPOCH: 6,
} as const;
/** Float64 indexes (byte = index × 8), after the Int32 words. */
export const CTL_F64 = {
  /** Host: the workload's page writes per second (Infinity = max). */
  RATE: 4,
  /** Host: dirty limit in bytes per second, 0 = off. */
  DIRTY_LIMIT: 5,
  /** vCPU statistics from here on. */
  CPU_THROTTLED_MS: 6,
  DIRTY_LIMIT_SLEPT_MS: 7,
  DIRTY_LIMIT_THROTTLE_US_PER_ROUND: 8,
  DIRTY_LIMIT_RING_FULL_US: 9,
  /** Data page writes by the workload since the vCPU booted. */
  PAGES_WRITTEN: 10,
} as const;
export const CONTROL_BYTES = 128;
const PATTERNS = ['uniform', 'hot', 'sequential'] as const;

/**
 * The workload lives in the control words, not in the worker's start data, so a destination can
 * boot its vCPU long before it knows what the guest runs (booting a worker costs hundreds of ms).
 */
export function writeWorkload(
  control: SharedArrayBuffer,
  w: { pagesPerSecond: number; pattern: string; rangePages: number },
): void {
  const words = new Int32Array(control);
  Atomics.store(words, CTL.PATTERN, Math.max(0, PATTERNS.indexOf(w.pattern as (typeof PATTERNS)[number])));
  Atomics.store(words, CTL.RANGE_PAGES, w.rangePages);
  new Float64Array(control)[CTL_F64.RATE] = w.pagesPerSecond;
}

export function readWorkload(control: SharedArrayBuffer): {
  pagesPerSecond: number;
  pattern: (typeof PATTERNS)[number];
  rangePages: number;
} {
  const words = new Int32Array(control);
  return {
    pattern: PATTERNS[Atomics.load(words, CTL.PATTERN)] ?? 'uniform',
    rangePages: Atomics.load(words, CTL.RANGE_PAGES),
    pagesPerSecond: new Float64Array(control)[CTL_F64.RATE]!,
  };
}

/**
 * Sets the dirty limit. Then wakes the vCPU on CMD: a vCPU asleep for tokens re-reads the limit now.
 * The vCPU checks CMD again after any wake, so a wake with no command change does nothing else.
 */
export function writeDirtyLimit(control: SharedArrayBuffer, bytesPerSecond: number, periodMs: number): void {
  const words = new Int32Array(control);
  new Float64Array(control)[CTL_F64.DIRTY_LIMIT] = bytesPerSecond;
  Atomics.store(words, CTL.DIRTY_LIMIT_PERIOD_MS, periodMs);
  Atomics.add(words, CTL.DIRTY_LIMIT_EPOCH, 1);
  Atomics.notify(words, CTL.CMD);
}

/** Sets the CPU throttle and wakes a sleeping vCPU, so a lower setting (or off) applies at once. */
export function writeCpuThrottle(control: SharedArrayBuffer, percent: number): void {
  const words = new Int32Array(control);
  Atomics.store(words, CTL.CPU_THROTTLE, percent);
  Atomics.notify(words, CTL.CMD);
}

export interface ThrottleStats {
  cpuThrottlePercent: number;
  cpuThrottledMs: number;
  dirtyLimitSleptMs: number;
  dirtyLimitThrottleUsPerRound: number;
  dirtyLimitRingFullUs: number;
  pagesWritten: number;
}

export function readThrottleStats(control: SharedArrayBuffer): ThrottleStats {
  const f64 = new Float64Array(control);
  return {
    cpuThrottlePercent: Atomics.load(new Int32Array(control), CTL.CPU_THROTTLE),
    cpuThrottledMs: f64[CTL_F64.CPU_THROTTLED_MS]!,
    dirtyLimitSleptMs: f64[CTL_F64.DIRTY_LIMIT_SLEPT_MS]!,
    dirtyLimitThrottleUsPerRound: f64[CTL_F64.DIRTY_LIMIT_THROTTLE_US_PER_ROUND]!,
    dirtyLimitRingFullUs: f64[CTL_F64.DIRTY_LIMIT_RING_FULL_US]!,
    pagesWritten: f64[CTL_F64.PAGES_WRITTEN]!,
  };
}

export const VcpuCmd = { RUN: 0, STOP: 1, EXIT: 2 } as const;
export const VcpuState = { BOOTING: 0, RUNNING: 1, STOPPED: 2, EXITED: 3 } as const;

export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}
