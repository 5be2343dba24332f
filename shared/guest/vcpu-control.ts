/**
 * vCPU control words in a small SharedArrayBuffer. The host writes CMD and waits on STATE; the vCPU
 * polls CMD between bursts of writes and acknowledges in STATE. Stopping is a handshake: the final
 * dirty sync may only run after the vCPU has said STOPPED (a flag it may not have seen yet is not enough).
 */
export const CTL = { CMD: 0, STATE: 1, PATTERN: 2, RANGE_PAGES: 3 } as const;
/** Float64 index (byte 32) of the workload's page writes per second (Infinity = max). */
export const CTL_RATE_F64 = 4;
export const CONTROL_BYTES = 64;
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
  new Float64Array(control)[CTL_RATE_F64] = w.pagesPerSecond;
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
    pagesPerSecond: new Float64Array(control)[CTL_RATE_F64]!,
  };
}
export const VcpuCmd = { RUN: 0, STOP: 1, EXIT: 2 } as const;
export const VcpuState = { BOOTING: 0, RUNNING: 1, STOPPED: 2, EXITED: 3 } as const;

export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}
