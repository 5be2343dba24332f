import t from 'tap';
import {
  affordablePages,
  bucketCapacity,
  DIRTY_RING_ENTRIES,
  DirtyRingEstimate,
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

t.test('dirty ring figures: per period, scaled to one 4096-write ring', async (t) => {
  t.equal(DIRTY_RING_ENTRIES, 4096);
  const est = new DirtyRingEstimate(1000, 500);
  t.equal(est.wrote(1024, 1100), null, 'the period is not over');
  est.paused(300, true);
  est.paused(100, false);
  // 2048 writes in 500 ms of which 100 stopped: 400 ms of wall per 2048 writes → 800 ms per ring,
  // 300 ms of limit sleep per 2048 writes → 600 ms per ring
  t.same(est.wrote(1024, 1500), { throttleUs: 600_000, ringFullUs: 800_000 });
  t.equal(est.wrote(0, 2100), null, 'a period without writes says nothing');
  est.reset(3000, 100);
  t.same(est.wrote(4096, 3100), { throttleUs: 0, ringFullUs: 100_000 }, 'a reset can change the period');
});
