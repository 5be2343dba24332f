/**
 * vCPU control words in a small SharedArrayBuffer. The host writes CMD and waits on STATE; the vCPU
 * polls CMD between bursts of writes and acknowledges in STATE. Stopping is a handshake: the final
 * dirty sync may only run after the vCPU has said STOPPED (a flag it may not have seen yet is not enough).
 */
export const CTL = { CMD: 0, STATE: 1 } as const;
export const VcpuCmd = { RUN: 0, STOP: 1, EXIT: 2 } as const;
export const VcpuState = { BOOTING: 0, RUNNING: 1, STOPPED: 2, EXITED: 3 } as const;

export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}
