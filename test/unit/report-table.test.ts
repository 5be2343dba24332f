/**
 * The human report: the summary line first (status, time, the three downtimes, data, rate,
 * integrity), the error right after it on failure, units and rounded values, no 'undefined', and
 * every field of the JSON report shown somewhere except raw clock readings. Report keys are kebab-case.
 */
import t from 'tap';
import { reportTable, summaryLine } from '../../shared/cli/report-table.js';
import { kebabCaseKeys } from '../../shared/report-keys.js';

// a pair report of a 64 MiB run (npm start -- --ram 64M --json), camelCase keys as they came before
const COMPLETED: Record<string, unknown> = {
  status: 'completed',
  'total-time': 1757.35,
  'setup-time': 532.05,
  'expected-downtime': 5.8,
  ram: {
    transferred: 112272989,
    remaining: 0,
    total: 67108864,
    duplicate: 0,
    normal: 27277,
    'normal-bytes': 111726592,
    mbps: 733.03,
    'dirty-pages-rate': 0,
    'dirty-sync-count': 9,
    'precopy-bytes': 112029280,
    'downtime-bytes': 135760,
    transport: 'page-channels',
    'checksum-backend': 'native',
  },
  iterations: 9,
  capabilities: ['return-path', 'multifd'],
  parameters: {
    'downtime-limit': 300,
    'max-bandwidth': 134217728,
    'avail-switchover-bandwidth': 0,
    'multifd-channels': 2,
    'switchover-policy': 'floor',
  },
  guest: {
    ticks: 5262,
    'self-check': { ok: true, pagesChecked: 16367, badPages: 0, firstBad: [], ms: 313.48273300006986 },
    'observed-downtime': 45.01,
    clock: 'shared',
    'clock-offset': 0,
    'clock-uncertainty': 0,
    'resume-gap': { gapStartMs: 26118600.154334, gapEndMs: 26118645.16416 },
  },
  integrity: {
    'digest-source': '7abd1a6fe2c208d8',
    'pages-verified': 27084,
    'digest-destination': '7abd1a6fe2c208d8',
    'torn-copies': 193,
    'checksum-backend': 'native',
    match: true,
  },
  downtime: 59.86,
  'switchover-ack': { enabled: false, acked: false, 'wait-ms': 0, devices: [], 'held-by': null },
  'expected-downtime-history': [300, 300, 300],
  'downtime-breakdown': {
    'src-downtime-start': 0,
    'src-vm-stopped': 2.84,
    'dst-switchover-start': 3.75,
    'src-iterable-saved': 6.76,
    'src-non-iterable-saved': 9.54,
    'dst-loadvm-completed': 11.13,
    'dst-vm-started': 48.62,
    'src-downtime-end': 59.86,
  },
  'downtime-start-t': 26118599.773931,
  'peak-rss': { source: 303845376, destination: 248008704 },
  devices: {},
  'downtime-expected-vs-actual': { expected: 5.8, actual: 59.86, error: 54.06 },
  'dst-prealloc-ms': 174,
  probe: {
    'service-downtime': 54.876,
    interval: 4.815,
    'resolution-ms': { 'gap-start': 5, 'gap-end': 1 },
    replies: 548,
    sent: 9738,
    'longest-gap': 111.886,
    handover: true,
    'gap-start': 26118593.02,
    'gap-end': 26118647.896,
    'gap-start-target': '127.0.0.1:32783',
    'gap-end-target': '127.0.0.1:34319',
    'first-reply': 26116902.275999997,
  },
  'exit-codes': { source: 0, destination: 0 },
};

t.test('a completed run: the verdict on the first line', async (t) => {
  const text = reportTable(kebabCaseKeys(COMPLETED));
  const first = text.split('\n')[0]!;
  t.equal(first, summaryLine(kebabCaseKeys(COMPLETED)));
  t.match(
    first,
    /^completed in 1\.76 s · downtime source 59\.9 ms \/ guest 45\.0 ms \/ service 54\.9 ms · 107 MiB sent at 733 Mbit\/s · integrity ok$/,
  );
  t.notMatch(text, /undefined|NaN/, 'no undefined or NaN');
  t.notMatch(text, /\d\.\d{3,}/, 'no unrounded values');
  t.match(text, /^ {2}sent\s+107 MiB$/m, 'bytes with units');
  t.match(text, /^ {2}max-bandwidth\s+128 MiB\/s$/m, 'rates with units');
  t.notMatch(text, /^Other$/m, 'every field of this report has its place');
  t.notMatch(text, /26118/, 'raw clock readings are left to the JSON');
});

t.test('a failed run: the error right after the verdict', async (t) => {
  const failed = {
    status: 'failed',
    'total-time': 812.5,
    'error-code': 'MIG_ERR_PEER_CLOSED',
    'error-desc': 'main channel closed',
    ram: { transferred: 1048576, mbps: 10.3333 },
    guest: { 'running-after-failure': true },
    'destination-error': 'MIG_ERR_TRUNCATED: main channel closed by the source',
    'some-new-field': 4.56789,
  };
  const lines = reportTable(failed).split('\n');
  t.equal(lines[0], 'failed in 812.5 ms · 1.0 MiB sent at 10.3 Mbit/s · source guest still running');
  t.equal(lines[1], 'error: MIG_ERR_PEER_CLOSED: main channel closed');
  t.equal(lines[2], 'destination: MIG_ERR_TRUNCATED: main channel closed by the source');
  t.match(
    lines.join('\n'),
    /^Other\n {2}some-new-field\s+4\.57$/m,
    'a field no section names is still shown',
  );
  t.notMatch(lines.join('\n'), /undefined/);
});

t.test('report keys are kebab-case', async (t) => {
  const keys: string[] = [];
  const walk = (v: unknown) => {
    if (v && typeof v === 'object' && !Array.isArray(v))
      for (const [k, x] of Object.entries(v)) {
        keys.push(k);
        walk(x);
      }
  };
  walk(kebabCaseKeys(COMPLETED));
  t.same(
    keys.filter((k) => /[A-Z]/.test(k)),
    [],
    'no camelCase key left',
  );
  t.match(kebabCaseKeys(COMPLETED), {
    guest: { 'self-check': { 'pages-checked': 16367, 'bad-pages': 0, 'first-bad': [] } },
  });
});
