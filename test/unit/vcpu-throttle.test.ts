import t from 'tap';
import {
  affordablePages,
  bucketCapacity,
  DIRTY_RING_ENTRIES,
  DirtyRingRound,
  refillTokens,
  sleepAfterSliceMs,
  sleepForPagesMs,
  THROTTLE_SLICE_MS,
} from '../../shared/guest/vcpu-throttle.js';

const PAGE = 4096;
const MiB = 1 << 20;

t.test('CPU throttle: sleep after each 10 ms slice is pct/(100-pct) slices', async (t) => {
  t.equal(THROTTLE_SLICE_MS, 10);
  t.equal(sleepAfterSliceMs(0), 0, 'off: no sleep');
  t.equal(sleepAfterSliceMs(20), 2.5, '20 %: runs 10 of 12.5 ms');
  t.equal(sleepAfterSliceMs(50), 10, '50 %: sleeps as long as it runs');
  t.equal(sleepAfterSliceMs(99), 990, '99 %: 990 ms per 10 ms slice');
  for (const pct of [20, 50, 99]) {
    const runShare = THROTTLE_SLICE_MS / (THROTTLE_SLICE_MS + sleepAfterSliceMs(pct));
    t.ok(Math.abs(runShare - (100 - pct) / 100) < 1e-12, `${pct} %: runs ${100 - pct} % of wall time`);
  }
});

t.test('bucket capacity is one period of the limit, at least one page', async (t) => {
  t.equal(bucketCapacity(4 * MiB, 100, PAGE), (0.4 * 4 * MiB) / 4, '4 MiB/s × 100 ms');
  t.equal(bucketCapacity(4 * MiB, 1000, PAGE), 4 * MiB);
  t.equal(bucketCapacity(1000, 1, PAGE), PAGE, '1 byte per period: still one page, or no write could pass');
  t.equal(bucketCapacity(PAGE * 1000, 1, PAGE), PAGE);
});

t.test('refill: limit × elapsed, capped at the capacity, never backwards', async (t) => {
  const cap = bucketCapacity(4 * MiB, 100, PAGE);
  t.equal(refillTokens(0, 1000, 1010, 4 * MiB, cap), (4 * MiB) / 100, '10 ms at 4 MiB/s');
  t.equal(refillTokens(PAGE, 0, 50, 4 * MiB, cap), PAGE + (4 * MiB) / 20, 'adds to what is left');
  t.equal(refillTokens(0, 0, 10_000, 4 * MiB, cap), cap, 'a long pause fills only the bucket');
  t.equal(refillTokens(cap, 0, 1, 4 * MiB, cap), cap, 'a full bucket stays full');
  t.equal(refillTokens(100, 50, 40, 4 * MiB, cap), 100, 'a clock read out of order adds nothing');
  t.equal(refillTokens(-PAGE, 0, 1, PAGE * 1000, cap), 0, 'a debt is paid back first');
});

t.test('pages the tokens pay for, and the sleep until they pay for n pages', async (t) => {
  t.equal(affordablePages(PAGE * 3.5, PAGE), 3);
  t.equal(affordablePages(PAGE - 1, PAGE), 0);
  t.equal(affordablePages(-PAGE, PAGE), 0);
  t.equal(sleepForPagesMs(PAGE * 2, 2, PAGE, 4 * MiB), 0, 'enough already');
  t.equal(sleepForPagesMs(0, 1, PAGE, 4 * MiB), 1000 / 1024, 'one page at 1024 pages/s');
  t.equal(sleepForPagesMs(PAGE / 2, 1, PAGE, PAGE * 10), 50, 'only the missing half page');
  t.equal(sleepForPagesMs(0, 100, PAGE, 4 * MiB), (100 * 1000) / 1024);
});

t.test('dirty ring rounds: 4096 writes each, limit sleep and run time of the last round', async (t) => {
  t.equal(DIRTY_RING_ENTRIES, 4096);
  const round = new DirtyRingRound(1000);
  t.equal(round.wrote(4000, 1100), null, 'not full yet');
  round.paused(300, true);
  round.paused(50, false);
  t.same(round.wrote(100, 1500), { throttleUs: 300_000, ringFullUs: 150_000 }, 'ran 500 - 300 - 50 ms');
  // the 4 writes past the ring count towards the next round
  t.equal(round.wrote(4091, 1600), null);
  t.same(round.wrote(1, 1700), { throttleUs: 0, ringFullUs: 200_000 });
  round.wrote(4000, 1800);
  round.reset(2000);
  t.equal(round.wrote(100, 2100), null, 'a reset starts the count afresh');
});
