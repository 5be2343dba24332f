/**
 * Guest workloads several tests share (source command-line arguments).
 *
 * BUSY_GUEST rewrites a 96 MiB range as fast as it can: its final round is far larger than socket
 * buffers and lasts long enough that a message sent at SWITCHOVER_START arrives before EOF.
 */
export const BUSY_GUEST = [
  '--ram',
  '192M',
  '--dirty-pattern',
  'sequential',
  '--dirty-range',
  '96M',
  '--dirty-rate',
  'max',
];
