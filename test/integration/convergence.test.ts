/**
 * How a hard migration ends, two real processes over loopback: an 8 MiB guest dirtying 64 MiB/s
 * behind an 8 MiB/s cap never converges on its own (bandwidth.test.ts shows it failing at --timeout).
 * Here it completes, verified byte for byte, with auto-converge (QEMU's vCPU throttle), with
 * dirty-limit (QEMU 8.1's per-vCPU quota) and with a completion timeout whose action is `pause`; and
 * a progress timeout aborts a migration whose link a relay cuts to a trickle. Each report says what
 * fired, when and why.
 */
import { execFile } from 'node:child_process';
import t from 'tap';
import { startCorruptingRelay } from '../helpers/corrupting-relay.js';
import { assertOneLineError, assertVerifiedMigration, type Report, runMigration } from '../helpers/pair.js';

t.setTimeout(150_000);

/** A guest that cannot converge: 64 MiB/s of writes over all of its 8 MiB, 8 MiB/s link (1 s rounds). */
const HARD = ['--max-bandwidth', '8M', '--dirty-rate', '64M', '--dirty-pattern', 'uniform'];

function decisions(r: Report | null): { event: string; action: string; value?: number; reason: string }[] {
  return r?.convergence?.decisions ?? [];
}

t.test('auto-converge: the vCPU throttle steps up until the guest converges', async (t) => {
  t.setTimeout(60_000);
  // a steep schedule (80 %, then +15) so that it converges in seconds, not QEMU's minute
  const r = await runMigration(t, {
    ram: '8M',
    capabilities: 'return-path,multifd',
    source: [
      ...HARD,
      '--capabilities',
      'return-path,multifd,auto-converge',
      '--cpu-throttle-initial',
      '80',
      '--cpu-throttle-increment',
      '15',
      // converging all along: must not fire (it did when a round's end, where the estimate reads 0
      // before the next sync, counted as the low every later sample had to beat)
      '--progress-timeout',
      '6s',
    ],
    timeoutMs: 50_000,
  });
  assertVerifiedMigration(t, r);
  const src = r.srcReport;
  const steps = decisions(src).filter((d) => d.event === 'auto-converge');
  t.ok(steps.length >= 1, `${steps.length} throttle steps`, { decisions: decisions(src) });
  t.equal(steps[0]?.value, 80, 'the first step is cpu-throttle-initial');
  if (steps[1]) t.equal(steps[1].value, 95, 'the next adds cpu-throttle-increment');
  t.match(steps[0]?.reason, /for the second time/, "the reason names QEMU's rule");
  t.ok(src?.convergence?.['cpu-throttled-ms'] > 0, 'the vCPU slept');
  t.equal(src?.['cpu-throttle-percentage'], steps.at(-1)?.value, 'cpu-throttle-percentage is the last step');
  t.ok(
    r.srcStderr.some((l) => /^switchover-source: auto-converge: /.test(l)),
    'a progress line for the decision',
  );
  t.ok((src?.convergence?.periods ?? []).length >= 2, 'the trigger periods are in the report');
});

t.test('dirty-limit: the writer is held to vcpu-dirty-limit and the guest converges', async (t) => {
  t.setTimeout(60_000);
  const r = await runMigration(t, {
    ram: '8M',
    source: [...HARD, '--capabilities', 'return-path,dirty-limit', '--vcpu-dirty-limit', '2'],
    timeoutMs: 50_000,
  });
  assertVerifiedMigration(t, r);
  const src = r.srcReport;
  const fired = decisions(src).filter((d) => d.event === 'dirty-limit');
  t.equal(fired.length, 1, 'the limit is set once', { decisions: decisions(src) });
  t.equal(fired[0]?.value, 2, 'at vcpu-dirty-limit MB/s');
  t.ok(src?.convergence?.['dirty-limit-slept-ms'] > 0, 'the writer was made to wait');
  t.type(
    src?.['dirty-limit-throttle-time-per-round'],
    'number',
    "QEMU's dirty-limit-throttle-time-per-round",
  );
  t.type(src?.['dirty-limit-ring-full-time'], 'number', "QEMU's dirty-limit-ring-full-time");
  t.equal(src?.['cpu-throttle-percentage'], undefined, 'no CPU throttle with dirty-limit');
});

t.test("auto-converge and dirty-limit together: QEMU's error, exit 2, before any connection", async (t) => {
  t.setTimeout(20_000);
  // nothing listens on port 9 (discard): the refusal must come before the source tries it
  const out = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      [
        '--import',
        'tsx',
        'source/main.ts',
        '--connect',
        '127.0.0.1:9',
        '--capabilities',
        'return-path,auto-converge,dirty-limit',
      ],
      { timeout: 15_000 },
      (err, _stdout, stderr) => resolve({ code: (err as { code?: number } | null)?.code ?? 0, stderr }),
    );
  });
  t.equal(out.code, 2, 'exit 2 (usage)');
  t.match(
    out.stderr,
    /MIG_ERR_CAPABILITY: dirty-limit conflicts with auto-converge either of then available currently/,
  );
  t.equal(out.stderr.trim().split('\n').length, 1, 'one line');
});

t.test('completion timeout with action pause: stopped and finished in stop-and-copy', async (t) => {
  t.setTimeout(60_000);
  const r = await runMigration(t, {
    ram: '8M',
    source: [...HARD, '--completion-timeout-per-gib', '4s', '--completion-timeout-action', 'pause'],
    timeoutMs: 50_000,
  });
  assertVerifiedMigration(t, r);
  const src = r.srcReport;
  const fired = decisions(src).filter((d) => d.event === 'completion-timeout');
  t.equal(fired.length, 1, 'the completion timeout fired once', { decisions: decisions(src) });
  t.equal(fired[0]?.action, 'pause');
  t.match(fired[0]?.reason, /completion timeout 4 s per GiB = 4 s/);
  // the downtime runs from the pause: at least the time to send what was left at 8 MiB/s… or unlimited
  t.ok(src?.downtime > 0, `downtime ${src?.downtime} ms (from the pause to the destination's start)`);
  t.ok(src?.['total-time'] >= 4000, 'not before the timeout');
});

t.test('progress timeout on a link cut to a trickle: abort, the guest runs on', async (t) => {
  t.setTimeout(60_000);
  let relay: Awaited<ReturnType<typeof startCorruptingRelay>> | null = null;
  t.teardown(() => relay?.close());
  const r = await runMigration(t, {
    ram: '16M',
    // the main channel carries the pages here, so the relay holds the whole stream
    source: ['--dirty-rate', '8M', '--max-bandwidth', '0', '--progress-timeout', '2s'],
    dumpRam: false,
    timeoutMs: 40_000,
    connectVia: async (d) => {
      // 4 MiB through, then 2 KB/s: the first pass never ends
      relay = await startCorruptingRelay({
        target: { host: d.host, port: d.port },
        trickleAfter: 4 * 1048576,
        trickleBytesPerSec: 2000,
      });
      return relay.address;
    },
  });
  const src = r.srcReport;
  t.equal(src?.status, 'failed', 'failed', { stderr: r.srcStderr.filter((l) => !l.startsWith('progress')) });
  t.equal(src?.['error-code'], 'MIG_ERR_PROGRESS_TIMEOUT');
  const fired = decisions(src).filter((d) => d.event === 'progress-timeout');
  t.equal(fired.length, 1);
  t.equal(fired[0]?.action, 'abort');
  t.match(fired[0]?.reason, /no new low/);
  t.equal(src?.guest?.['running-after-failure'], true, 'the source guest still runs');
  assertOneLineError(t, r.srcStderr, /MIG_ERR_PROGRESS_TIMEOUT/);
});
