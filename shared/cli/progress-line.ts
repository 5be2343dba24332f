/**
 * Live progress for a terminal-less consumer: one parseable line per update,
 * `progress key=value ...` (values without spaces). Remaining bytes can go up between lines
 * (the guest dirties pages faster than a round sends them); consumers must not assume monotony.
 */
export interface ProgressLine {
  status: string;
  remaining: number;
  transferred: number;
  mbps: number;
  dirtyPagesRate: number;
  iteration: number;
  expectedDowntime: number;
  elapsedMs: number;
  /** QEMU's cpu-throttle-percentage (auto-converge); 0 when not throttling. */
  cpuThrottlePercentage?: number;
}

export function formatProgressLine(p: ProgressLine): string {
  return [
    'progress',
    `status=${p.status}`,
    `elapsed-ms=${Math.round(p.elapsedMs)}`,
    `remaining=${p.remaining}`,
    `transferred=${p.transferred}`,
    `mbps=${p.mbps}`,
    `dirty-pages-rate=${p.dirtyPagesRate}`,
    `iteration=${p.iteration}`,
    `expected-downtime=${Math.round(p.expectedDowntime)}`,
    ...(p.cpuThrottlePercentage ? [`cpu-throttle-percentage=${p.cpuThrottlePercentage}`] : []),
  ].join(' ');
}

/** Parses a line produced by formatProgressLine (for tests and wrappers); null if it is not one. */
export function parseProgressLine(line: string): Record<string, string> | null {
  if (!line.startsWith('progress ')) return null;
  const out: Record<string, string> = {};
  for (const kv of line.slice(9).split(' ')) {
    const i = kv.indexOf('=');
    if (i > 0) out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}
