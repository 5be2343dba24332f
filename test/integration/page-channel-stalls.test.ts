/**
 * Page channels that stop being read must never leave the source's guest stopped. A fake destination
 * (test/helpers/fake-destination.ts) stops reading its page channels (a) during precopy and (b) when
 * the final round starts (guest stopped), keeping its main channel and return path healthy; (c)
 * SIGINT arrives during (b). Each ends `failed` (stall-timeout) or `cancelled` within stall-timeout +
 * 1 s of the stall, with the report written and the source guest running.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { monotonicMs } from '../../shared/guest/vcpu-control.js';
import { startFakeDestination } from '../helpers/fake-destination.js';
import { BUSY_GUEST } from '../helpers/guests.js';
import { type Report, startSide, tempDir, waitExit } from '../helpers/pair.js';

const STALL_MS = 2000;
/** A guest that rewrites a 96 MiB range as fast as it can: the final round is far larger than socket buffers. */
const BUSY = BUSY_GUEST;

async function source(t: Parameters<typeof startSide>[0], port: number, args: string[]) {
  const dir = await tempDir(t);
  const json = join(dir, 'source.json');
  const side = startSide(t, 'source', [
    '--connect',
    `127.0.0.1:${port}`,
    '--capabilities',
    'return-path,multifd',
    '--stall-timeout',
    String(STALL_MS),
    '--max-bandwidth',
    '0',
    '--json',
    json,
    '--quiet',
    ...args,
  ]);
  return { side, report: async (): Promise<Report> => JSON.parse(await readFile(json, 'utf8')) };
}

t.test(
  '(a) page channels stop being read during precopy: failed within the stall timeout, guest running',
  async (t) => {
    t.setTimeout(60_000);
    const fake = await startFakeDestination(t, { stallPageChannels: { afterBytes: 16 << 20 } });
    const src = await source(t, fake.port, ['--ram', '256M', '--dirty-rate', '0']);
    await fake.stalled;
    const code = await waitExit(src.side, 20_000);
    const after = monotonicMs() - fake.stalledAt()!;
    t.equal(code, 1, 'source exits 1');
    t.ok(
      after < STALL_MS + 1000 + 1500,
      `ended ${after.toFixed(0)} ms after the stall (stall-timeout ${STALL_MS} ms; process exit included)`,
    );
    const r = await src.report();
    t.equal(r.status, 'failed');
    t.equal(r['error-code'], 'MIG_ERR_TIMEOUT', r['error-desc']);
    t.match(r['error-desc'], /page channel|stall/);
    t.equal(r.guest['running-after-failure'], true, 'the guest runs on the source');
  },
);

t.test(
  'page channels that never connect: failed by their deadline (stall-timeout), guest running',
  async (t) => {
    t.setTimeout(60_000);
    const fake = await startFakeDestination(t, { stallPageChannels: 'never-connect' });
    const src = await source(t, fake.port, ['--ram', '64M', '--dirty-rate', '1M']);
    await fake.stalled;
    const code = await waitExit(src.side, 20_000);
    const after = monotonicMs() - fake.stalledAt()!;
    t.equal(code, 1, 'source exits 1');
    t.ok(after < STALL_MS + 1000 + 1500, `ended ${after.toFixed(0)} ms after the ports were announced`);
    const r = await src.report();
    t.equal(r['error-code'], 'MIG_ERR_TIMEOUT', r['error-desc']);
    t.match(r['error-desc'], /0 of 2 connected/);
    t.equal(r.guest['running-after-failure'], true);
  },
);

t.test('(b) page channels stop being read when the final round starts: failed, guest resumed', async (t) => {
  t.setTimeout(60_000);
  const fake = await startFakeDestination(t, { stallPageChannels: 'at-switchover' });
  const src = await source(t, fake.port, [...BUSY, '--downtime-limit', '100000']);
  await fake.stalled;
  const code = await waitExit(src.side, 20_000);
  const after = monotonicMs() - fake.stalledAt()!;
  t.equal(code, 1, 'source exits 1');
  t.notOk(fake.sawEof(), 'it failed inside the final round, not after EOF');
  t.ok(after < STALL_MS + 1000 + 1500, `ended ${after.toFixed(0)} ms after the stall`);
  const r = await src.report();
  t.equal(r.status, 'failed');
  t.equal(r['error-code'], 'MIG_ERR_TIMEOUT', r['error-desc']);
  t.equal(r.guest['running-after-failure'], true, 'the stopped guest was resumed on the source');
});

t.test('(c) SIGINT while the final round is stalled: cancelled within a second, guest resumed', async (t) => {
  t.setTimeout(60_000);
  const fake = await startFakeDestination(t, { stallPageChannels: 'at-switchover' });
  const src = await source(t, fake.port, [...BUSY, '--downtime-limit', '100000', '--stall-timeout', '30000']);
  await fake.stalled;
  await new Promise((r) => setTimeout(r, 300)); // the final round is under way and stuck
  t.notOk(fake.sawEof(), 'the source is stuck in the final round (no EOF yet), not waiting for SHUT');
  const sentAt = monotonicMs();
  src.side.kill('SIGINT');
  const code = await waitExit(src.side, 20_000);
  const took = monotonicMs() - sentAt;
  t.equal(code, 1, 'source exits 1');
  t.ok(
    took < 1000 + 1500,
    `exited ${took.toFixed(0)} ms after SIGINT (report, guest check and exit included)`,
  );
  const r = await src.report();
  t.equal(r.status, 'cancelled');
  t.equal(r['error-code'], 'MIG_ERR_CANCELLED');
  t.equal(r.guest['running-after-failure'], true, 'the stopped guest was resumed on the source');
});
