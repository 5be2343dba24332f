/**
 * End-to-end migrations between two real processes over loopback TCP (destination on port 0).
 *
 * completed cases: status completed on both sides, exit 0/0, the resumed guest's self-check clean,
 * integrity.match (image digests compared over the return path) and either
 *  - byte-identical --dump-ram files (dumpRam cases), or
 *  - downtime ≤ downtime-limit (downtime cases, modest dirty rates).
 * The two are kept apart on purpose: the destination writes its dump "just before resume"
 * (README, --dump-ram), i.e. inside the downtime, so a downtime measured with dumps on measures the
 * test oracle's file write, not the engine.
 * failed / cancelled cases: exit 1/1, the one-line-error rule on both sides, the source guest still
 * running, the destination guest never started.
 */
import t from 'tap';
import {
  assertNoErrorLine,
  assertOneLineError,
  type Expect,
  runMigration,
  sleep,
  waitProgress,
} from '../helpers/pair.js';

interface Case {
  name: string;
  ram: string;
  /** Source workload and migration options. */
  source: string[];
  destinationCapabilities?: string;
  destinationRam?: string;
  expect: Expect;
  /** completed: compare both --dump-ram files byte for byte. */
  dumpRam?: boolean;
  /** completed: downtime ≤ downtime-limit (only without dumps, see above). */
  downtimeWithinLimit?: boolean;
  /** failed/cancelled: the error code each side must print. */
  sourceError?: RegExp;
  destinationError?: RegExp;
  /** Source error-desc must carry this (the destination's own code behind PEER_FAILED). */
  sourceDesc?: RegExp;
  /** cancelled: SIGINT the source this long after its first progress line. */
  sigintAfterProgressMs?: number;
}

const cases: Case[] = [
  // sizes × patterns × rates, RAM compared byte for byte
  {
    name: '32M idle guest (dirty-rate 0)',
    ram: '32M',
    source: ['--dirty-rate', '0', '--dirty-pattern', 'uniform'],
    expect: 'completed',
    dumpRam: true,
  },
  {
    name: '64M uniform 8M/s',
    ram: '64M',
    source: ['--dirty-rate', '8M', '--dirty-pattern', 'uniform', '--seed', '3'],
    expect: 'completed',
    dumpRam: true,
  },
  {
    name: '64M hot 32M/s',
    ram: '64M',
    source: ['--dirty-rate', '32M', '--dirty-pattern', 'hot', '--seed', '5'],
    expect: 'completed',
    dumpRam: true,
  },
  {
    name: '96M zero-filled RAM, uniform 8M/s (zero pages travel as flags)',
    ram: '96M',
    source: ['--ram-fill', 'zero', '--dirty-rate', '8M', '--dirty-pattern', 'uniform'],
    expect: 'completed',
    dumpRam: true,
  },
  {
    name: '48M sequential over an 8M range at 32M/s, max-bandwidth 32M',
    ram: '48M',
    source: [
      '--dirty-rate',
      '32M',
      '--dirty-pattern',
      'sequential',
      '--dirty-range',
      '8M',
      '--max-bandwidth',
      '32M',
    ],
    expect: 'completed',
    dumpRam: true,
  },
  {
    name: '32M uniform at max dirty rate over a 4M range, unlimited bandwidth',
    ram: '32M',
    source: [
      '--dirty-rate',
      'max',
      '--dirty-pattern',
      'uniform',
      '--dirty-range',
      '4M',
      '--max-bandwidth',
      '0',
    ],
    expect: 'completed',
    dumpRam: true,
  },
  // modest rates: the downtime the source reports stays within the limit (no dumps)
  {
    name: 'downtime: 64M uniform 8M/s',
    ram: '64M',
    source: ['--dirty-rate', '8M', '--dirty-pattern', 'uniform', '--seed', '3'],
    expect: 'completed',
    downtimeWithinLimit: true,
  },
  // refused configurations
  // a capability mismatch: switchover-ack.test.ts (5.) fails it fast on both sides
  {
    name: 'RAM size mismatch: source 64M, destination prepared 32M',
    ram: '64M',
    destinationRam: '32M',
    source: ['--dirty-rate', '8M'],
    expect: 'failed',
    sourceError: /MIG_ERR_PEER_FAILED/,
    sourceDesc: /MIG_ERR_CONFIG_MISMATCH/,
    destinationError: /MIG_ERR_CONFIG_MISMATCH/,
  },
  // the user cancels a slow precopy
  {
    name: 'SIGINT during a slow precopy',
    ram: '64M',
    source: ['--dirty-rate', '8M', '--max-bandwidth', '4M'],
    expect: 'cancelled',
    sigintAfterProgressMs: 300,
    sourceError: /MIG_ERR_CANCELLED/,
    // the source closes its channels: the destination sees the stream end mid-load
    destinationError: /MIG_ERR_(TRUNCATED|PEER_CLOSED)/,
  },
];

t.setTimeout(150_000);

for (const c of cases) {
  t.test(`${c.expect}: ${c.name}`, async (t) => {
    t.setTimeout(25_000);
    if (c.dumpRam && c.downtimeWithinLimit) throw new Error('a case checks dumps or downtime, not both');
    const r = await runMigration(t, {
      ram: c.ram,
      source: c.source,
      destinationCapabilities: c.destinationCapabilities,
      destinationRam: c.destinationRam,
      // failures: dumps on, to show the destination never got as far as "just before resume"
      dumpRam: c.dumpRam ?? c.expect !== 'completed',
      timeoutMs: 15_000,
      during:
        c.sigintAfterProgressMs === undefined
          ? undefined
          : async ({ source }) => {
              if (!(await waitProgress(source, 10_000))) return;
              await sleep(c.sigintAfterProgressMs!);
              source.kill('SIGINT');
            },
    });
    const src = r.srcReport ?? {};
    const dst = r.dstReport ?? {};
    const diag = {
      'source-stderr': r.srcStderr.filter((l) => !l.startsWith('progress ')),
      'destination-stderr': r.dstStderr,
    };
    t.equal(r.timedOut, false, 'both processes exited on their own', { elapsedMs: r.elapsedMs, ...diag });
    t.ok(r.srcReport, 'source wrote its JSON report', diag);
    t.ok(r.dstReport, 'destination wrote its JSON report', diag);
    t.equal(src.status, c.expect, `source status is ${c.expect}`, {
      'error-code': src['error-code'],
      'error-desc': src['error-desc'],
      ...diag,
    });

    if (c.expect === 'completed') {
      t.equal(r.srcCode, 0, 'source exits 0', diag);
      t.equal(r.dstCode, 0, 'destination exits 0', diag);
      assertNoErrorLine(t, r.srcStderr);
      assertNoErrorLine(t, r.dstStderr);
      t.equal(dst.status, 'completed', 'destination status is completed');
      t.equal(src.guest?.['self-check']?.ok, true, 'self-check ok (as reported to the source)');
      t.equal(dst.guest?.['self-check']?.ok, true, 'self-check ok (destination report)');
      t.equal(src.guest?.['self-check']?.['bad-pages'], 0, 'self-check found no bad page');
      t.equal(src.integrity?.match, true, 'integrity.match');
      t.match(src.integrity?.['digest-source'], /^[0-9a-f]{16}$/, 'source digest present');
      t.equal(
        src.integrity?.['digest-destination'],
        src.integrity?.['digest-source'],
        'destination digest equals source digest',
      );
      t.equal(src.ram?.remaining, 0, 'nothing left to send');
      t.type(src.downtime, 'number', 'downtime reported');
      if (c.dumpRam) t.equal(r.dumpsEqual, true, 'source and destination RAM dumps are byte-identical');
      if (c.downtimeWithinLimit) {
        const limit = Number(src.parameters?.['downtime-limit'] ?? 300);
        t.ok(src.downtime <= limit, `downtime ${src.downtime} ms ≤ downtime-limit ${limit} ms`, {
          downtime: src.downtime,
          'expected-downtime': src['expected-downtime'],
          'downtime-bytes': src.ram?.['downtime-bytes'],
          'precopy-bytes': src.ram?.['precopy-bytes'],
          checkpoints: dst.checkpoints,
        });
      }
      return;
    }

    t.equal(r.srcCode, 1, 'source exits 1', diag);
    t.equal(r.dstCode, 1, 'destination exits 1', diag);
    assertOneLineError(t, r.srcStderr, c.sourceError ?? /MIG_ERR_/);
    assertOneLineError(t, r.dstStderr, c.destinationError ?? /MIG_ERR_/);
    t.match(src['error-code'], c.sourceError ?? /MIG_ERR_/, 'source report error-code');
    if (c.sourceDesc)
      t.match(src['error-desc'], c.sourceDesc, 'source error-desc carries the destination reason');
    t.equal(src.guest?.['running-after-failure'], true, 'the source guest still runs');
    t.notOk(src.downtime, 'no downtime reported for a migration that did not complete');
    t.equal(dst.status, 'failed', 'destination report status failed');
    t.match(dst['error-code'], c.destinationError ?? /MIG_ERR_/, 'destination report error-code');
    t.notOk(dst.guest, 'destination guest never started (no self-check in its report)');
    t.equal(r.dstDumpExists, false, 'destination never reached "just before resume" (no RAM dump)');
  });
}
