/**
 * The migration report: QEMU query-migrate names (qapi/migration.json, MigrationInfo) plus ours. Every field is defined in
 * README.md ("Report fields"). Times are ms, sizes bytes, mbps megabits per second.
 */
export interface RamReport {
  transferred: number;
  remaining: number;
  total: number;
  duplicate: number;
  normal: number;
  'normal-bytes': number;
  mbps: number;
  'dirty-pages-rate': number;
  'dirty-sync-count': number;
  'precopy-bytes': number;
  'downtime-bytes': number;
  /** Ours: 'main-channel' or 'page-channels' (multifd). */
  transport: string;
  /** Ours: which page hasher ran, 'native' (the addon) or 'js'. */
  'checksum-backend': string;
}

export interface MigrationReport {
  status: string;
  'error-desc'?: string;
  'error-code'?: string;
  'total-time': number;
  'setup-time': number;
  downtime?: number;
  'expected-downtime': number;
  ram: RamReport;
  iterations: number;
  capabilities: string[];
  parameters: Record<string, number | string | boolean>;
  guest: Record<string, unknown>;
  integrity: Record<string, unknown>;
  [extra: string]: unknown;
}

export function round2(n: number): number {
  return Math.round(n * 100) / 100;
}
