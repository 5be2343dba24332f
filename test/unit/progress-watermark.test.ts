/** The progress watermark: new lows are progress; a stall warns once, after the set time. */
import t from 'tap';
import { ProgressWatermark } from '../../source/progress-watermark.js';

t.test('warns once, warnAfterMs after the last new low', async (t) => {
  const w = new ProgressWatermark(30_000);
  t.equal(w.observe(0, 1000), false);
  t.equal(w.observe(5_000, 400), false, 'a new low');
  t.equal(w.observe(20_000, 900), false, 'above the low: no progress, not yet long enough');
  t.equal(w.observe(34_999, 401), false, 'still under 30 s since the low at 5 s');
  t.equal(w.observe(35_000, 500), true, '30 s without a new low: warn');
  t.equal(w.observe(60_000, 500), false, 'once');
  t.same(w.report(), {
    'lowest-remaining': 400,
    'lowest-at-ms': 5000,
    'no-progress-warning-at-ms': 35_000,
    'no-progress-since-ms': 5000,
  });
  w.observe(40_000, 100);
  t.match(
    w.report(),
    { 'lowest-at-ms': 40_000, 'no-progress-since-ms': 5000 },
    'a later low: the warning keeps its own facts',
  );
});

t.test('a migration that keeps making lows never warns; 0 turns the warning off', async (t) => {
  const w = new ProgressWatermark(1000);
  for (let i = 0; i < 100; i++) t.equal(w.observe(i * 500, 10_000 - i), false);
  t.notOk('no-progress-warning-at-ms' in w.report()!);
  const off = new ProgressWatermark(0);
  off.observe(0, 10);
  t.equal(off.observe(1e9, 10), false);
  t.equal(new ProgressWatermark(1000).report(), undefined, 'no sample, no report');
});
