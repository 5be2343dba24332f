import t from 'tap';
import { basePeriod, gapsOver, longestGap } from '../../scripts/lib/gaps.js';

t.test('empty input: no gap, no endpoints', async (t) => {
  t.same(longestGap([]), { gap: 0, start: null, end: null });
  t.equal(basePeriod([], 5), 5);
  t.same(gapsOver([], 1), []);
});

t.test('a single reply: gap 0 at that reply', async (t) => {
  t.same(longestGap([42.5]), { gap: 0, start: 42.5, end: 42.5 });
  t.equal(basePeriod([42.5], 5), 5);
});

t.test('the longest gap between consecutive replies, with its endpoints', async (t) => {
  t.same(longestGap([0, 1, 2, 3, 160, 161, 162]), { gap: 157, start: 3, end: 160 });
  t.same(longestGap([10, 11]), { gap: 1, start: 10, end: 11 });
  t.same(longestGap([5, 5, 5]), { gap: 0, start: 5, end: 5 }, 'identical times');
});

t.test('ties: the earliest gap wins', async (t) => {
  t.same(longestGap([0, 10, 11, 21]), { gap: 10, start: 0, end: 10 });
});

t.test('unsorted input is sorted (and not modified)', async (t) => {
  const times = [161, 3, 0, 160, 2, 1];
  t.same(longestGap(times), { gap: 157, start: 3, end: 160 });
  t.same(times, [161, 3, 0, 160, 2, 1]);
});

t.test('non-finite times are a PARAMETER error', async (t) => {
  t.throws(() => longestGap([1, Number.NaN]), { code: 'MIG_ERR_PARAMETER' });
  t.throws(() => longestGap([Number.POSITIVE_INFINITY]), { code: 'MIG_ERR_PARAMETER' });
});

t.test('basePeriod and gapsOver', async (t) => {
  t.equal(basePeriod([0, 1, 2, 3, 4], 1), 1);
  t.equal(basePeriod([0, 3], 3), 3);
  t.equal(basePeriod([0, 5, 10, 100, 105], 5), 5, 'a silent spell is left out');
  t.same(gapsOver([0, 1, 50, 51, 120], 10), [
    { gap: 49, start: 1, end: 50 },
    { gap: 69, start: 51, end: 120 },
  ]);
});
