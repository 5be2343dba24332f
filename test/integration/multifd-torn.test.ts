/**
 * Page channels send pages without copying them first, so a copy the guest writes while it travels
 * fails its checksum on the destination and is dropped (shared/protocol/page-batch-in-place.ts).
 * These cases pin down both sides of that contract with one copy made bad on purpose
 * (SWITCHOVER_TEST_CORRUPT_PAGE, round 1 only):
 * - the guest keeps rewriting that page: a later round brings a good copy, the migration completes
 *   byte for byte and the destination reports the dropped copy;
 * - the guest is paused: no good copy ever follows, so EOF fails with MIG_ERR_CHECKSUM naming the
 *   page, no guest starts, and the source guest keeps running.
 */
import t, { type Test } from 'tap';
import { assertOneLineError, assertVerifiedMigration, runMigration, withEnv } from '../helpers/pair.js';

// a data page inside the 64 KiB range the guest sweeps below (32 MiB guest: pages 1..8 hold the version
// table, data starts at page 9), so the guest rewrites it all the time
const PAGE = 12;

function withCorruptPage(t: Test): void {
  withEnv(t, { SWITCHOVER_TEST_CORRUPT_PAGE: String(PAGE) });
}

t.test('a bad copy of a page the guest rewrites is dropped, and a later good copy lands', async (t) => {
  t.setTimeout(90_000);
  withCorruptPage(t);
  const r = await runMigration(t, {
    ram: '32M',
    capabilities: 'return-path,multifd',
    source: [
      '--dirty-pattern',
      'sequential',
      '--dirty-range',
      '64K',
      '--dirty-rate',
      'max',
      '--max-bandwidth',
      '0',
    ],
    timeoutMs: 60_000,
  });
  assertVerifiedMigration(t, r);
  t.ok(r.dstReport?.integrity?.['torn-copies'] >= 1, 'the destination counted the dropped copy');
});

t.test('a bad copy that no good copy follows fails at EOF with MIG_ERR_CHECKSUM', async (t) => {
  t.setTimeout(90_000);
  withCorruptPage(t);
  const r = await runMigration(t, {
    ram: '32M',
    capabilities: 'return-path,multifd',
    source: ['--dirty-rate', '0', '--max-bandwidth', '0'],
    timeoutMs: 60_000,
    expect: 'failed',
  });
  t.equal(r.dstCode, 1, 'destination exits 1');
  t.equal(r.srcCode, 1, 'source exits 1');
  const line = assertOneLineError(t, r.dstStderr, /^switchover-destination: MIG_ERR_CHECKSUM: /);
  t.match(line, new RegExp(`page ${PAGE}\\b`), 'the error names the page');
  t.equal(r.dstDumpExists, false, 'no guest RAM was handed over on the destination');
  t.equal(r.srcReport?.guest?.['running-after-failure'], true, 'the source guest keeps running');
});
