/** Which kernel clock this process reads (see bootId). */
import { readFileSync } from 'node:fs';

/**
 * The kernel's boot id: two processes with the same one read the same CLOCK_MONOTONIC (network
 * namespaces included), so no estimate is needed. SWITCHOVER_SEPARATE_CLOCKS=1 forces the estimate
 * (to exercise the two-host path on one machine).
 */
export function bootId(): string {
  if (process.env.SWITCHOVER_SEPARATE_CLOCKS === '1') return `separate-${process.pid}`;
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return `unknown-${process.pid}`;
  }
}
