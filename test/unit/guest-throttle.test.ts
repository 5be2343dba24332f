/**
 * The vCPU under the migration's throttles, on a real guest: a CPU throttle takes its share of the
 * guest's progress, a dirty limit holds a writer to its rate and leaves an idle guest alone, and
 * neither delays a stop. Bands are wide: the machine has 2 noisy cores and other test files run.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { Guest } from '../../shared/guest/guest.js';

const MiB = 1 << 20;

async function startGuest(t: Test, dirtyRate: number): Promise<Guest> {
  const guest = Guest.boot({ ramBytes: 8 * MiB, seed: 1, fill: 'zero' });
  t.teardown(() => guest.shutdown());
  await guest.start({ dirtyRate, pattern: 'uniform', dirtyRange: 4 * MiB });
  return guest;
}

/** What the guest did over `ms`: heartbeat ticks and page writes per second, throttle sleep in ms. */
async function measure(guest: Guest, ms: number) {
  const tick0 = guest.heartbeat().tick;
  const s0 = guest.throttleStats();
  const t0 = performance.now();
  await sleep(ms);
  const s1 = guest.throttleStats();
  const perSecond = 1000 / (performance.now() - t0);
  return {
    ticks: (guest.heartbeat().tick - tick0) * perSecond,
    pages: (s1.pagesWritten - s0.pagesWritten) * perSecond,
    cpuThrottledMs: s1.cpuThrottledMs - s0.cpuThrottledMs,
    dirtyLimitSleptMs: s1.dirtyLimitSleptMs - s0.dirtyLimitSleptMs,
  };
}

const within = (x: number, lo: number, hi: number) => x >= lo && x <= hi;

t.test('settings are checked', async (t) => {
  const guest = Guest.boot({ ramBytes: 8 * MiB, seed: 1, fill: 'zero' });
  for (const bad of [-1, 100, 12.5, Number.NaN]) t.throws(() => guest.setCpuThrottle(bad), RangeError);
  t.throws(() => guest.setDirtyLimit(-1, 100), RangeError);
  t.throws(() => guest.setDirtyLimit(Infinity, 100), RangeError);
  t.throws(() => guest.setDirtyLimit(MiB, 0), RangeError);
  t.throws(() => guest.setDirtyLimit(MiB, 1001), RangeError);
  t.same(
    guest.throttleStats(),
    {
      cpuThrottlePercent: 0,
      cpuThrottledMs: 0,
      dirtyLimitSleptMs: 0,
      dirtyLimitThrottleUsPerRound: 0,
      dirtyLimitRingFullUs: 0,
      pagesWritten: 0,
    },
    'off by default (a destination never sets them)',
  );
});

t.test('CPU throttle at 50 % halves the guest progress; 0 restores it', async (t) => {
  t.setTimeout(15_000);
  const guest = await startGuest(t, Infinity);
  // a just-started worker runs slower (JIT warm-up, the spawn's own work): not a fair baseline
  await sleep(300);
  const free = await measure(guest, 1000);
  guest.setCpuThrottle(50);
  t.equal(guest.throttleStats().cpuThrottlePercent, 50);
  const half = await measure(guest, 1000);
  guest.setCpuThrottle(0);
  const restored = await measure(guest, 700);
  t.comment(
    `ticks/s free ${Math.round(free.ticks)}, at 50 % ${Math.round(half.ticks)}, restored ${Math.round(restored.ticks)}`,
  );
  t.comment(`pages/s free ${Math.round(free.pages)}, at 50 % ${Math.round(half.pages)}`);
  t.ok(free.pages > 0 && free.ticks > 0, 'the unthrottled guest runs');
  // against the unthrottled rate before and after: the machine's load drifts over the three seconds
  const ticksRatio = half.ticks / ((free.ticks + restored.ticks) / 2);
  const pagesRatio = half.pages / ((free.pages + restored.pages) / 2);
  t.ok(within(ticksRatio, 0.3, 0.7), `ticks ratio ${ticksRatio.toFixed(2)}`);
  t.ok(within(pagesRatio, 0.3, 0.7), `pages ratio ${pagesRatio.toFixed(2)}`);
  t.ok(within(half.cpuThrottledMs, 350, 650), `slept ${half.cpuThrottledMs.toFixed(0)} ms of 1000`);
  t.ok(
    restored.ticks / free.ticks >= 0.7,
    `restored ticks ratio ${(restored.ticks / free.ticks).toFixed(2)}`,
  );
  t.ok(
    restored.pages / free.pages >= 0.7,
    `restored pages ratio ${(restored.pages / free.pages).toFixed(2)}`,
  );
  t.ok(restored.cpuThrottledMs < 20, 'off means no more sleeps');
});

t.test('a stop ends a 99 % throttle sleep at once', async (t) => {
  t.setTimeout(10_000);
  const guest = await startGuest(t, Infinity);
  guest.setCpuThrottle(99);
  // one 10 ms slice, then a 990 ms sleep: 100 ms in, the vCPU is asleep
  await sleep(100);
  const t0 = performance.now();
  await guest.stop();
  const stopMs = performance.now() - t0;
  t.comment(`stop took ${stopMs.toFixed(1)} ms`);
  t.ok(stopMs < 100, `stop took ${stopMs.toFixed(1)} ms`);
  t.ok(guest.throttleStats().cpuThrottledMs > 50, 'the vCPU was asleep when stopped');
  t.equal(guest.running, false);
});

t.test('dirty limit holds a max-rate writer to its rate and reports per-round figures', async (t) => {
  t.setTimeout(15_000);
  const guest = await startGuest(t, Infinity);
  guest.setDirtyLimit(4 * MiB, 100);
  // the turn under way when the limit is set still writes freely, and the bucket starts full
  await sleep(150);
  const limited = await measure(guest, 1000);
  const pagesPerSecond = limited.pages;
  t.comment(
    `at 4 MiB/s: ${pagesPerSecond.toFixed(0)} pages/s, slept ${limited.dirtyLimitSleptMs.toFixed(0)} ms`,
  );
  t.ok(within(pagesPerSecond, 0.5 * 1024, 1.6 * 1024), `${pagesPerSecond.toFixed(0)} pages/s, limit 1024`);
  t.ok(limited.dirtyLimitSleptMs > 0, 'the writer slept for tokens');
  // QEMU's figures, per 100 ms period: 4096 writes at 1024 pages/s take 4 s; nearly all of it asleep
  const s = guest.throttleStats();
  t.comment(
    `per ring: limit sleeps ${s.dirtyLimitThrottleUsPerRound.toFixed(0)} µs, fills in ${s.dirtyLimitRingFullUs.toFixed(0)} µs`,
  );
  t.ok(within(s.dirtyLimitRingFullUs, 2e6, 8e6), 'ring-full time ≈ 4 s at the limit');
  t.ok(
    s.dirtyLimitThrottleUsPerRound > 0.8 * s.dirtyLimitRingFullUs,
    'a max-rate writer spends most of a limited ring asleep',
  );

  guest.setDirtyLimit(0, 100);
  const free = await measure(guest, 300);
  t.ok(free.pages > 2 * 8192, `off: ${Math.round(free.pages)} pages/s, beyond the old limit`);
  t.ok(free.dirtyLimitSleptMs < 20, 'off means no more sleeps');
});

t.test('dirty limit does not slow a guest that does not write', async (t) => {
  t.setTimeout(15_000);
  const guest = await startGuest(t, 0);
  const free = await measure(guest, 700);
  guest.setDirtyLimit(4 * MiB, 100);
  const limited = await measure(guest, 700);
  t.comment(`idle ticks/s: ${Math.round(free.ticks)} free, ${Math.round(limited.ticks)} under the limit`);
  t.ok(limited.ticks / free.ticks >= 0.7, `ticks ratio ${(limited.ticks / free.ticks).toFixed(2)}`);
  t.equal(limited.pages, 0);
  t.equal(guest.throttleStats().dirtyLimitSleptMs, 0);
});
