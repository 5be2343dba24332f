/**
 * Assembles the source's report (report.ts has the shape, README "Report fields" the definitions)
 * from what the migration measured and what the destination sent back (RP RESUMED): QEMU's
 * query-migrate names first, then ours.
 */
import type { SaveHandlers } from '../shared/handlers.js';
import { type Capabilities, enabledCapabilities, type Parameters } from '../shared/options.js';
import type { ResumedBody } from '../shared/protocol/rp-bodies.js';
import { kebabCaseKeys } from '../shared/report-keys.js';
import type { TraceRecord } from '../shared/trace.js';
import { TraceEvent } from '../shared/trace.js';
import type { ClockEstimate } from './clock-offset.js';
import type { WatermarkReport } from './progress-watermark.js';
import type { RamSaver } from './ram/ram-save.js';
import { type MigrationReport, round2 } from './report.js';
import type { ConvergenceMeter } from './switchover.js';

export interface ReportFacts {
  status: string;
  error: { code: string; message: string } | null;
  /** ms: start of setup, end of setup, completion (or now), and the measured downtime. */
  setupTime: number;
  totalTime: number;
  downtime: number | undefined;
  transferred: number;
  ram: RamSaver;
  pageSize: number;
  capabilities: Capabilities;
  parameters: Parameters & { 'switchover-policy': string };
  meter: ConvergenceMeter;
  acked: boolean;
  guestTicks: number;
  guestTicksAtStart: number;
  digestSource: string;
  clock: ClockEstimate | null;
  records: readonly TraceRecord[];
  devices: readonly SaveHandlers[];
  /** The destination's RESUMED bodies, merged. */
  destination: ResumedBody;
  /** The progress watermark: lowest remaining, when, and when the no-progress warning came. */
  progress: WatermarkReport | undefined;
  /** cpu-throttle-percentage, dirty-limit-* (QEMU's names) and `convergence` (ours), when in use. */
  convergence: Record<string, unknown>;
}

export function buildReport(f: ReportFacts): MigrationReport {
  const ok = f.status === 'completed';
  const { ram, meter, pageSize } = f;
  const c = ram.counters;
  const dst = f.destination;
  const report: MigrationReport = {
    status: f.status,
    'total-time': round2(f.totalTime),
    'setup-time': round2(f.setupTime),
    'expected-downtime': round2(meter.expectedDowntime),
    ram: {
      transferred: f.transferred,
      remaining: ok ? 0 : ram.pendingEstimate().mustPrecopy,
      total: ram.sentChecksums.length * pageSize,
      duplicate: c.duplicate,
      normal: c.normal,
      'normal-bytes': c.normal * pageSize,
      mbps: round2(ok ? (f.transferred * 8) / ((f.totalTime - f.setupTime) / 1000) / 1e6 : meter.mbps),
      'dirty-pages-rate': ok ? 0 : ram.tracker.dirtyPagesRate,
      'dirty-sync-count': ram.tracker.syncCount,
      'precopy-bytes': c.precopyBytes,
      'downtime-bytes': c.downtimeBytes,
      transport: ram.transport,
      'checksum-backend': ram.checksumBackend,
    },
    iterations: ram.tracker.syncCount,
    capabilities: enabledCapabilities(f.capabilities),
    parameters: { ...f.parameters },
    guest: {
      ticks: f.guestTicks,
      'ticks-at-start': f.guestTicksAtStart,
      ...kebabCaseKeys(dst.guest),
      ...observed(dst.gap, f.clock),
    },
    integrity: { 'digest-source': f.digestSource || null, ...dst.integrity },
  };
  if (ok) report.downtime = round2(f.downtime ?? 0);
  const dstDigest = dst.integrity?.['digest-destination'];
  if (dstDigest) report.integrity.match = dstDigest === f.digestSource;
  if (f.error && !ok) {
    report['error-desc'] = f.error.message;
    report['error-code'] = f.error.code;
  }
  Object.assign(report, meter.reportFields(f.capabilities['switchover-ack'], f.acked));
  report['downtime-breakdown'] = breakdown(f.records, dst.checkpoints, f.clock);
  report['downtime-start-t'] = f.records.find((r) => r.name === 'src-downtime-start')?.t;
  report['peak-rss'] = process.resourceUsage().maxRSS * 1024;
  report.devices = deviceReport(f.devices, dst.devices);
  if (f.progress) report.progress = f.progress;
  Object.assign(report, f.convergence);
  if (ok)
    report['downtime-expected-vs-actual'] = {
      expected: report['expected-downtime'],
      actual: report.downtime,
      error: round2((report.downtime ?? 0) - report['expected-downtime']),
    };
  return report;
}

/**
 * Checkpoints named as QEMU's vmstate_downtime_checkpoint trace points, in ms from
 * src-downtime-start. Destination times are moved onto the source clock by the measured offset.
 */
function breakdown(
  records: readonly TraceRecord[],
  dst: Record<string, number> | undefined,
  clock: ClockEstimate | null,
): Record<string, number> | undefined {
  const src = Object.fromEntries(
    records.filter((r) => r.event === TraceEvent.CHECKPOINT).map((r) => [String(r.name), r.t]),
  );
  const start = src['src-downtime-start'];
  if (start === undefined) return undefined;
  const offset = clock?.offset ?? 0;
  const all: [string, number][] = [
    ...Object.entries(src),
    ...Object.entries(dst ?? {}).map(([k, t]): [string, number] => [k, t - offset]),
  ];
  all.sort((a, b) => a[1] - b[1]);
  return Object.fromEntries(all.map(([k, t]) => [k, round2(t - start)]));
}

/**
 * guest.observed-downtime: the guest's own gap, from its last heartbeat on the source (source clock)
 * to its first on the destination (destination clock, corrected by the measured offset).
 */
function observed(g: ResumedBody['gap'], clock: ClockEstimate | null): Record<string, number | string> {
  if (!g?.gapStartMs || !g.gapEndMs || !clock) return {};
  return {
    'observed-downtime': round2(g.gapEndMs - clock.offset - g.gapStartMs),
    clock: clock.kind,
    'clock-offset': round2(clock.offset),
    'clock-uncertainty': round2(clock.uncertainty),
  };
}

/** devices.<id>.{transferred, initial-bytes, prep-ms}: source counters plus the destination's measurements. */
function deviceReport(
  devices: readonly SaveHandlers[],
  dst: ResumedBody['devices'],
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const h of devices) {
    const d = h as { transferred?: number; config?: { size: number } };
    if (d.transferred === undefined) continue;
    const remote = dst?.[h.idstr];
    out[h.idstr] = {
      transferred: d.transferred,
      'initial-bytes': d.config?.size ?? 0,
      'prep-ms': typeof remote?.['prep-ms'] === 'number' ? round2(remote['prep-ms']) : null,
    };
  }
  return out;
}
