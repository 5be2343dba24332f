/** `--metrics-port`: a running source serves Prometheus metrics that follow the migration. */
import t from 'tap';
import { startDestination, startSide, waitExit, waitStderrLine } from '../helpers/pair.js';

t.test('a source serves Prometheus metrics while it migrates', async (t) => {
  t.setTimeout(60_000);
  const dst = await startDestination(t, ['--ram', '32M', '--capabilities', 'return-path', '--quiet']);
  const src = startSide(t, 'source', [
    '--connect',
    dst.address,
    '--ram',
    '32M',
    '--capabilities',
    'return-path',
    '--max-bandwidth',
    '8M',
    '--dirty-rate',
    '1M',
    '--metrics-port',
    '0',
    '--quiet',
  ]);
  const line = await waitStderrLine(src, (l) => l.includes('metrics on http://'), 20_000);
  t.ok(line, 'the source prints where its metrics are');
  const url = /(http:\/\/\S+)/.exec(line ?? '')?.[1];
  // served from the start, before the guest has booted or the migration begun
  const early = url ? await (await fetch(url)).text() : '';
  t.match(early, /^switchover_state\{state="(none|setup|active)"\} 1/m, 'served from the start');
  let body = '';
  // remaining is reported once per 100 ms window: poll until a value above zero shows (bounded)
  for (let i = 0; i < 40 && url; i++) {
    body = await (await fetch(url)).text();
    if (/^switchover_remaining_bytes [1-9]/m.test(body)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  t.match(body, /^switchover_remaining_bytes [1-9]\d*/m, 'remaining bytes while active');
  t.match(body, /^switchover_state\{state="active"\} 1/m, 'state gauge says active');
  t.match(body, /^# TYPE switchover_transferred_bytes_total counter$/m, 'transferred is a counter');
  t.match(body, /^switchover_transferred_bytes_total [1-9]\d*/m, 'transferred bytes');
  t.match(body, /^switchover_ack_enabled 0$/m, 'the ACK metrics are there (capability off)');
  t.match(body, /^switchover_dirty_pages_rate \d+/m, 'dirty rate');
  t.equal(await waitExit(src, 40_000), 0, 'the migration completes');
});
