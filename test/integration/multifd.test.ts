/**
 * Page channels (multifd): real processes, pages moved by worker threads on their own TCP
 * connections. The hot-range case is a randomized stress: the same pages are sent again and again
 * on whichever channel claims them, with channel 0 lagging. It does not reliably catch a broken
 * per-round sync (a backed-up channel stops claiming); multifd-stale.test.ts is the deterministic
 * proof of that.
 */
import t from 'tap';
import { assertVerifiedMigration, runMigration, startSide, waitExit, withEnv } from '../helpers/pair.js';

const cases: {
  name: string;
  ram: string;
  source: string[];
  channels: number;
  env?: Record<string, string>;
}[] = [
  {
    name: 'a paused guest moves on 2 channels',
    ram: '64M',
    source: ['--dirty-rate', '0', '--max-bandwidth', '0'],
    channels: 2,
  },
  {
    name: 'pages rewritten hard while they travel on 4 channels never arrive stale',
    ram: '64M',
    source: [
      '--dirty-pattern',
      'hot',
      '--dirty-range',
      '2M',
      '--dirty-rate',
      'max',
      '--max-bandwidth',
      '64M',
    ],
    channels: 4,
    // channel 0 lags (pauses after every batch): its copies land late, as on a congested path
    env: { SWITCHOVER_TEST_CHANNEL_DELAY: '0:20' },
  },
  {
    // The source names the last round (FINAL_ROUND) and sends device state and EOF without waiting
    // for it; with every page channel slow, device sections reach the destination long before the
    // last pages do. The cpu device checks its registers against guest page 0 (dirtied by every
    // heartbeat, so it is in the last round): loading it before that round lands is 'stale control page'.
    name: 'device state loads only after the last round landed on every channel',
    ram: '16M',
    source: ['--dirty-rate', '1M', '--max-bandwidth', '0'],
    channels: 2,
    env: { SWITCHOVER_TEST_CHANNEL_DELAY: '*:40' },
  },
  {
    name: 'a sequential sweep with max-bandwidth shared by the page workers',
    ram: '64M',
    source: [
      '--dirty-pattern',
      'sequential',
      '--dirty-range',
      '8M',
      '--dirty-rate',
      '16M',
      '--max-bandwidth',
      '32M',
    ],
    channels: 2,
  },
];

for (const c of cases) {
  t.test(c.name, async (t) => {
    t.setTimeout(90_000);
    // children inherit the environment: the fault injection reaches the destination's page workers
    withEnv(t, c.env ?? {});
    const r = await runMigration(t, {
      ram: c.ram,
      capabilities: 'return-path,multifd',
      source: [...c.source, '--multifd-channels', String(c.channels)],
      destination: ['--multifd-channels', String(c.channels)],
      timeoutMs: 60_000,
    });
    assertVerifiedMigration(t, r);
    t.ok(r.srcReport?.iterations >= 2, 'more than one round ran');
  });
}

t.test('multifd without return-path is refused on both sides (rounds are confirmed on it)', async (t) => {
  t.setTimeout(60_000);
  for (const role of ['source', 'destination'] as const) {
    const where = role === 'source' ? ['--connect', '127.0.0.1:9'] : ['--listen', '127.0.0.1:0'];
    const side = startSide(t, role, [...where, '--ram', '16M', '--capabilities', 'multifd']);
    t.equal(await waitExit(side, 30_000), 2, `${role} exits 2 (usage)`);
    t.ok(
      side.stderrLines.some((l) => l.includes("Capability 'multifd' requires capability 'return-path'")),
      `${role} names the rule`,
    );
  }
});
