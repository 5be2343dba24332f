/**
 * The report for a person: one summary line first (status, time, the three downtimes, data sent,
 * rate, integrity; on failure the error), then short sections with units and rounded values. Every
 * field of the JSON report appears somewhere: fields no section names are listed under "Other".
 * The JSON report (--json) keeps exact values; this is only its reading.
 */

import { reportField } from '../report-keys.js';
import { formatBytes } from '../units.js';

type Json = Record<string, unknown>;

/** Bytes in IEC units ("1.5 KiB"), '-' for anything that is not a number. */
export function bytes(n: unknown): string {
  return typeof n === 'number' && Number.isFinite(n) ? formatBytes(n) : '-';
}

/** Milliseconds, rounded to what a person can use: 0.01 below 10, 0.1 below 1000, then seconds. */
export function ms(n: unknown): string {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '-';
  if (Math.abs(n) >= 1000) return `${(n / 1000).toFixed(2)} s`;
  if (Number.isInteger(n)) return `${n} ms`;
  return `${n.toFixed(Math.abs(n) < 10 ? 2 : 1)} ms`;
}

function mbps(n: unknown): string {
  return typeof n === 'number' && Number.isFinite(n) ? `${n.toFixed(n >= 100 ? 0 : 1)} Mbit/s` : '-';
}

/** Bytes per second as the options take them (128M = 128 MiB/s). */
function rate(v: unknown): string {
  if (v === 0) return 'unlimited';
  return typeof v === 'number' ? `${bytes(v)}/s` : plain(v);
}

function plain(v: unknown): string {
  if (v === undefined || v === null) return '-';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : String(Math.round(v * 100) / 100);
  if (Array.isArray(v)) return v.length === 0 ? '-' : v.map(plain).join(', ');
  return String(v);
}

/** How each field is shown when a section does not say: by its name's unit. */
function byName(key: string, v: unknown): string {
  if (typeof v !== 'number') return plain(v);
  if (/(^|-)(ms|time|downtime)$|-ms$|-t$|^gap-(start|end)$|^first-reply$/.test(key)) return ms(v);
  if (/bytes$|^transferred$|^remaining$|^total$|rss|^size$|^initial-bytes$|^loaded$/.test(key))
    return bytes(v);
  if (key === 'mbps') return mbps(v);
  return plain(v);
}

type Row = [label: string, path: string, show?: (v: unknown, r: Json) => string | null];

interface Section {
  title: string;
  rows: Row[];
  /** Whole subtrees this section shows (their fields are not repeated under "Other"). */
  owns?: string[];
}

const SECTIONS: Section[] = [
  {
    title: 'Downtime',
    rows: [
      ['source', 'downtime', (v, r) => `${ms(v)} (limit ${ms(reportField(r, 'parameters.downtime-limit'))})`],
      ['guest-observed', 'guest.observed-downtime', (v) => ms(v)],
      ['service (outside probe)', 'probe.service-downtime', (v) => ms(v)],
      ['expected at switchover', 'expected-downtime', (v) => ms(v)],
    ],
    owns: [
      'downtime-breakdown',
      'downtime-explained',
      'downtime-expected-vs-actual',
      'expected-downtime-history',
    ],
  },
  {
    title: 'RAM',
    rows: [
      ['guest RAM', 'ram.total', bytes],
      ['sent', 'ram.transferred', bytes],
      ['  while running', 'ram.precopy-bytes', bytes],
      ['  while stopped', 'ram.downtime-bytes', bytes],
      ['remaining', 'ram.remaining', bytes],
      ['pages', 'ram.normal', (v, r) => `${plain(v)} sent, ${plain(reportField(r, 'ram.duplicate'))} zero`],
      [
        'lowest remaining',
        'progress.lowest-remaining',
        (v, r) => `${bytes(v)}, ${ms(reportField(r, 'progress.lowest-at-ms'))} in`,
      ],
      [
        'no progress since',
        'progress.no-progress-warning-at-ms',
        (v, r) =>
          `warned at ${ms(v)} (no new low after ${ms(reportField(r, 'progress.no-progress-since-ms'))})`,
      ],
      ['rounds', 'iterations', plain],
      ['rate', 'ram.mbps', mbps],
      ['dirty pages/s', 'ram.dirty-pages-rate', plain],
      [
        'transport',
        'ram.transport',
        (v, r) => `${plain(v)}, checksums ${plain(reportField(r, 'ram.checksum-backend'))}`,
      ],
    ],
    owns: ['ram', 'progress'],
  },
  {
    title: 'Integrity',
    rows: [
      [
        'digests',
        'integrity.match',
        (v, r) =>
          v === undefined
            ? null
            : `${v ? 'match' : 'DIFFER'} (${plain(reportField(r, 'integrity.digest-source'))})`,
      ],
      ['pages verified', 'integrity.pages-verified', plain],
      ['torn copies re-sent', 'integrity.torn-copies', plain],
      [
        'guest self-check',
        'guest.self-check.ok',
        (v, r) =>
          v === undefined
            ? null
            : `${v ? 'clean' : 'BAD'}: ${plain(reportField(r, 'guest.self-check.pages-checked'))} pages, ${plain(reportField(r, 'guest.self-check.bad-pages'))} bad, ${ms(reportField(r, 'guest.self-check.ms'))}`,
      ],
      ['source guest still running', 'guest.running-after-failure', (v) => (v ? 'yes' : 'NO')],
    ],
    owns: ['integrity', 'guest.self-check'],
  },
  {
    title: 'Migration',
    rows: [
      ['capabilities', 'capabilities', plain],
      ['setup', 'setup-time', ms],
      ['max-bandwidth', 'parameters.max-bandwidth', rate],
      [
        'avail-switchover-bandwidth',
        'parameters.avail-switchover-bandwidth',
        (v) => (v === 0 ? 'measured' : rate(v)),
      ],
      ['multifd-channels', 'parameters.multifd-channels', plain],
      ['switchover-policy', 'parameters.switchover-policy', plain],
      [
        'switchover-ack',
        'switchover-ack.enabled',
        (v, r) =>
          !v
            ? 'off'
            : `${reportField(r, 'switchover-ack.acked') ? 'acked' : 'NOT acked'} after ${ms(reportField(r, 'switchover-ack.wait-ms'))}${reportField(r, 'switchover-ack.held-by') ? `, held by ${plain(reportField(r, 'switchover-ack.held-by'))}` : ''}`,
      ],
    ],
    owns: ['parameters', 'switchover-ack'],
  },
  {
    title: 'Convergence',
    rows: [
      [
        'vCPU throttle',
        'cpu-throttle-percentage',
        (v, r) =>
          `${plain(v)} % at the end, highest ${plain(reportField(r, 'convergence.cpu-throttle-max'))} %, slept ${ms(reportField(r, 'convergence.cpu-throttled-ms'))}`,
      ],
      [
        'dirty limit',
        'dirty-limit-throttle-time-per-round',
        (v, r) =>
          `writer held ${ms(reportField(r, 'convergence.dirty-limit-slept-ms'))}; last 4096-write round: slept ${plain(v)} µs, ran ${plain(reportField(r, 'dirty-limit-ring-full-time'))} µs`,
      ],
      ['decisions', 'convergence.decisions', decisionLines],
      [
        'trigger periods',
        'convergence.periods',
        (v) => `${Array.isArray(v) ? v.length : 0} (listed in --json)`,
      ],
    ],
    owns: ['convergence', 'dirty-limit-ring-full-time'],
  },
  {
    title: 'Outside probe',
    rows: [
      ['handover seen', 'probe.handover', (v) => (v ? 'yes' : 'no')],
      [
        'probes sent / answered',
        'probe.sent',
        (v, r) => `${plain(v)} / ${plain(reportField(r, 'probe.replies'))}`,
      ],
      ['interval', 'probe.interval', ms],
      ['longest gap', 'probe.longest-gap', ms],
      ['not covered because', 'probe.not-covered', plain],
    ],
    owns: ['probe'],
  },
  {
    title: 'Processes',
    rows: [
      ['guest heartbeats (source)', 'guest.ticks', plain],
      [
        'clock (guest downtime)',
        'guest.clock',
        (v, r) =>
          `${plain(v)}, offset ${ms(reportField(r, 'guest.clock-offset'))} ± ${ms(reportField(r, 'guest.clock-uncertainty'))}`,
      ],
      ['peak RSS source', 'peak-rss.source', bytes],
      ['peak RSS destination', 'peak-rss.destination', bytes],
      ['destination prealloc', 'dst-prealloc-ms', ms],
      [
        'exit codes',
        'exit-codes.source',
        (v, r) => `source ${plain(v)}, destination ${plain(reportField(r, 'exit-codes.destination'))}`,
      ],
    ],
    owns: ['guest.clock-offset', 'guest.clock-uncertainty', 'peak-rss', 'exit-codes'],
  },
];

/** Raw monotonic clock readings: for tools (the JSON has them), meaningless to read. */
const CLOCK_READINGS = [
  'downtime-start-t',
  // the destination's own report: its checkpoints as monotonic readings
  'checkpoints',
  'devices.*.approved-at',
  'guest.resume-gap',
  'probe.gap-start',
  'probe.gap-end',
  'probe.first-reply',
  'probe.gap-start-target',
  'probe.gap-end-target',
  'probe.resolution-ms',
];

/** A one-line verdict: what happened, how long the guest was away, how much moved, is it intact. */
export function summaryLine(r: Json): string {
  const status = String(r.status ?? 'unknown');
  const parts = [r['total-time'] === undefined ? status : `${status} in ${ms(r['total-time'])}`];
  if (status === 'completed' && r.downtime !== undefined) {
    const d = [`source ${ms(r.downtime)}`];
    if (reportField(r, 'guest.observed-downtime') !== undefined)
      d.push(`guest ${ms(reportField(r, 'guest.observed-downtime'))}`);
    if (reportField(r, 'probe.service-downtime') !== undefined)
      d.push(`service ${ms(reportField(r, 'probe.service-downtime'))}`);
    parts.push(`downtime ${d.join(' / ')}`);
  }
  if (reportField(r, 'ram.transferred') !== undefined)
    parts.push(`${bytes(reportField(r, 'ram.transferred'))} sent at ${mbps(reportField(r, 'ram.mbps'))}`);
  if (status === 'completed') {
    const match = reportField(r, 'integrity.match');
    const clean = reportField(r, 'guest.self-check.ok');
    const bad = match === false || clean === false;
    parts.push(
      bad
        ? `integrity FAILED (digests ${match === false ? 'differ' : 'match'}, self-check ${clean === false ? 'bad' : 'clean'})`
        : `integrity ok${match === undefined ? ' (no digest: no return path)' : ''}`,
    );
  } else {
    const running = reportField(r, 'guest.running-after-failure');
    if (running !== undefined)
      parts.push(running ? 'source guest still running' : 'SOURCE GUEST NOT RUNNING');
  }
  return parts.join(' · ');
}

/** One line per convergence decision: when, what, why. */
function decisionLines(v: unknown): string | null {
  if (!Array.isArray(v) || v.length === 0) return null;
  return v
    .map(
      (d: Json, i) =>
        `${i === 0 ? '' : `${' '.repeat(30)}`}${ms(d['at-ms'])}: ${plain(d.event)}: ${plain(d.reason)}`,
    )
    .join('\n');
}

export function reportTable(report: Json): string {
  const out: string[] = [];
  const failed = report.status !== 'completed';
  if (failed && report['error-code'] !== undefined)
    out.push(`error: ${plain(report['error-code'])}: ${plain(report['error-desc'])}`);
  if (failed && report['destination-error'] !== undefined)
    out.push(`destination: ${plain(report['destination-error'])}`);
  out.unshift(summaryLine(report));
  const shown = new Set([
    'status',
    'total-time',
    'error-code',
    'error-desc',
    'destination-error',
    'downtime',
  ]);
  const owned: string[] = [...CLOCK_READINGS];
  const width = 27;
  for (const s of SECTIONS) {
    const lines: string[] = [];
    for (const [label, path, show] of s.rows) {
      shown.add(path);
      const v = reportField(report, path);
      if (v === undefined) continue;
      const text = show ? show(v, report) : plain(v);
      if (text !== null) lines.push(`  ${label.padEnd(width)} ${text}`);
    }
    owned.push(...(s.owns ?? []));
    if (s.title === 'Downtime') lines.push(...breakdownLines(report));
    if (lines.length > 0) out.push('', s.title, ...lines);
  }
  const other: string[] = [];
  const walk = (prefix: string, v: unknown) => {
    if (shown.has(prefix) || owned.some((o) => covers(o, prefix))) return;
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      for (const [k, x] of Object.entries(v)) walk(prefix ? `${prefix}.${k}` : k, x);
    } else if (v !== undefined) {
      other.push(`  ${prefix.padEnd(width)} ${byName(prefix.split('.').at(-1)!, v)}`);
    }
  };
  walk('', report);
  if (other.length > 0) out.push('', 'Other', ...other);
  return out.join('\n');
}

/**
 * The downtime's events, each with the part since the one before: the pair's `downtime-explained`
 * (checkpoints, the guest's heartbeats and the probe's answers on one clock) or the checkpoints alone.
 */
function breakdownLines(r: Json): string[] {
  const explained = r['downtime-explained'];
  const b = explained ?? r['downtime-breakdown'];
  if (!b || typeof b !== 'object') return [];
  const entries = Object.entries(b as Record<string, number>);
  return [
    explained
      ? '  on one clock (ms from the source stop; + the part since the line before)'
      : '  breakdown (ms from the source stop)',
    ...entries.map(([name, t], i) => {
      const part = i === 0 ? '' : `+${ms(t - entries[i - 1]![1])}`;
      return `    ${ms(t).padStart(10)} ${part.padStart(10)}  ${name}`;
    }),
  ];
}

/** `a.b` covers `a.b` and `a.b.c`; `*` stands for one name (`devices.*.approved-at`). */
function covers(pattern: string, path: string): boolean {
  const p = pattern.split('.');
  const q = path.split('.');
  if (q.length < p.length) return false;
  return p.every((name, i) => name === '*' || name === q[i]);
}
