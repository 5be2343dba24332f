/**
 * max-bandwidth per 100 ms window: an overshoot is paid back in later windows (the average is the
 * limit even when one batch is worth ten windows), unused budget is not saved up, and each window
 * measures what it sent.
 */
import t from 'tap';
import { RateLimiter } from '../../source/rate-limit.js';

/** Sends `batch` bytes whenever allowed, for `seconds`, window by window; returns bytes sent. */
function simulate(limit: number, batch: number, seconds: number): number {
  const r = new RateLimiter(limit, 0);
  let sent = 0;
  for (let now = 0; now < seconds * 1000; now += 100) {
    r.roll(now);
    while (!r.exhausted()) {
      r.account(batch);
      sent += batch;
    }
  }
  return sent;
}

t.test('the average is the limit, whatever the batch size', async (t) => {
  for (const [limit, batch] of [
    [1 << 20, 1 << 20],
    [1 << 20, 4096],
    [1024, 1 << 20],
    [16 << 20, 1 << 20],
    [128 << 20, 1 << 20],
  ] as const) {
    const seconds = Math.max(10, Math.ceil((batch * 20) / limit));
    const rate = simulate(limit, batch, seconds) / seconds;
    t.ok(
      Math.abs(rate - limit) <= limit * 0.05 + batch / seconds,
      `limit ${limit} B/s, batch ${batch}: ${rate.toFixed(0)} B/s`,
    );
  }
});

t.test('an idle spell does not buy a burst', async (t) => {
  const r = new RateLimiter(1000, 0);
  r.roll(5000); // five idle seconds
  r.account(100);
  t.ok(r.exhausted(), 'one window of budget (100 B), not five seconds of it');
});

t.test('a window reports what it sent; 0 = unlimited', async (t) => {
  const r = new RateLimiter(0, 0);
  r.account(5000);
  t.notOk(r.exhausted());
  t.equal(r.roll(50), null, 'a window closes after 100 ms');
  t.same(r.roll(120), { bytes: 5000, ms: 120 });
});
