/**
 * Page channels: the per-round sync (RP ROUND_DONE) is what keeps an older copy of a page from
 * landing after a newer one. This test is built so that a source which starts round R+1 before the
 * destination confirmed round R fails it every time, not just sometimes:
 *
 * - SWITCHOVER_TEST_PIN_SLICES=2 (source/slice-claim.ts): in round R, page worker i sends exactly
 *   the slices s with (s + R) % 2 === i, so every slice changes channel from one round to the next
 *   and the slow channel carries half of every round, the final one included.
 * - SWITCHOVER_TEST_CHANNEL_DELAY=1:MS (destination/page-worker.ts): channel 1 pauses MS after
 *   every batch it placed, so its copies queue and land late.
 * - the vCPU sweeps a 4 MiB range (4 slices) as fast as it can: every page of it is dirty in every
 *   round, the stop-and-copy round included.
 *
 * With the sync, each round waits for the slow channel and everything matches. Without it, the
 * source runs rounds while channel 1 still holds older ones: a page's older copy (channel 1) lands
 * after its newer one (channel 0), or its newest copy is still queued at EOF, and the destination
 * refuses to resume (image digest, stale page 0 against the CPU registers, a page never received
 * or left torn, whichever it meets first). Checked by hand, 5 runs of 5 failing each: round done
 * once every worker reported 'round-sent' instead of on ROUND_DONE; the same for precopy rounds
 * only (the final round still waiting for ROUND_DONE, so nothing is left queued at EOF and only
 * the stale overwrite can be what fails).
 */
import t from 'tap';
import { assertVerifiedMigration, runMigration, withEnv } from '../helpers/pair.js';

const CHANNELS = 2;
const SLOW_MS = 100;

t.test('a stale copy on a slow channel never overwrites a newer one (pinned slices)', async (t) => {
  t.setTimeout(60_000);
  const env: Record<string, string> = {
    SWITCHOVER_TEST_PIN_SLICES: String(CHANNELS),
    SWITCHOVER_TEST_CHANNEL_DELAY: `1:${SLOW_MS}`,
  };
  // children inherit the environment: the pinning reaches the source's page workers, the delay the
  // destination's (each side ignores the other's variable)
  withEnv(t, env);
  const r = await runMigration(t, {
    ram: '32M',
    capabilities: 'return-path,multifd',
    source: [
      '--dirty-pattern',
      'sequential',
      '--dirty-range',
      '4M',
      '--dirty-rate',
      'max',
      '--max-bandwidth',
      '0',
      // rounds paced by the slow channel leave 100 ms windows without bytes, which would measure a
      // bandwidth of 0 and never let the remainder fit: assume a bandwidth for the decision instead
      '--avail-switchover-bandwidth',
      '1G',
      '--multifd-channels',
      String(CHANNELS),
    ],
    destination: [],
    timeoutMs: 40_000,
  });
  t.equal(r.timedOut, false, 'both sides exit in time');
  assertVerifiedMigration(t, r);
  t.ok(r.srcReport?.iterations >= 2, `more than one round ran (${r.srcReport?.iterations})`);
});
