/**
 * QEMU's MigrationInfo (qapi/migration.json, query-migrate) from one of our reports: QEMU's members
 * under QEMU's names, the rest of the report under a downstream name (QEMU reserves `__RFQDN_` for
 * downstream extensions), so a tool written for QEMU reads what it knows and ignores the rest.
 */

/** Our downstream prefix for names QEMU does not have (commands, events, members). */
export const DOWNSTREAM = '__org.switchover_';

const RAM_MEMBERS = [
  'transferred',
  'remaining',
  'total',
  'duplicate',
  'normal',
  'normal-bytes',
  'dirty-pages-rate',
  'mbps',
  'dirty-sync-count',
  'precopy-bytes',
  'downtime-bytes',
] as const;

const TOP_MEMBERS = [
  'status',
  'total-time',
  'setup-time',
  'downtime',
  'expected-downtime',
  'error-desc',
  'cpu-throttle-percentage',
  'dirty-limit-throttle-time-per-round',
  'dirty-limit-ring-full-time',
] as const;

// biome-ignore lint/suspicious/noExplicitAny: a report is JSON of many shapes
type Json = Record<string, any>;

export function migrationInfo(report: Json, pageSize: number): Json {
  const info: Json = {};
  for (const k of TOP_MEMBERS) if (report[k] !== undefined) info[k] = integral(k, report[k]);
  if (report.ram) {
    const ram: Json = { 'page-size': pageSize };
    for (const k of RAM_MEMBERS) if (report.ram[k] !== undefined) ram[k] = integral(k, report.ram[k]);
    info.ram = ram;
  }
  info[`${DOWNSTREAM}report`] = report;
  return info;
}

/** QEMU's int members are integers (times in ms): round ours, which keep fractions of a ms. */
function integral(key: string, v: unknown): unknown {
  return typeof v === 'number' && key !== 'mbps' ? Math.round(v) : v;
}
