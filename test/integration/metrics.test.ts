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
  let body = '';
  // remaining is reported once per 100 ms window: poll until a value above zero shows (bounded)
  for (let i = 0; i < 40 && url; i++) {
    body = await (await fetch(url)).text();
    if (/^switchover_ram_remaining_bytes [1-9]/m.test(body)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  t.match(body, /^switchover_ram_remaining_bytes [1-9]\d*/m, 'remaining bytes while active');
  t.match(body, /^switchover_state\{state="active"\} 1/m, 'state gauge says active');
  t.match(body, /^switchover_transferred_bytes \d+/m, 'transferred bytes');
  t.match(body, /^switchover_dirty_pages_rate \d+/m, 'dirty rate');
  t.equal(await waitExit(src, 40_000), 0, 'the migration completes');
});
