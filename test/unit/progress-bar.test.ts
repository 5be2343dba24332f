import t from 'tap';
import { ProgressBar, type ProgressBarState, progressFraction } from '../../shared/cli/progress-bar.js';

class FakeStream {
  chunks: string[] = [];
  columns?: number;
  constructor(columns?: number) {
    this.columns = columns;
  }
  write(s: string): boolean {
    this.chunks.push(s);
    return true;
  }
  get text(): string {
    return this.chunks.join('');
  }
  /** What a terminal shows on the line now: the text after the last \r, without ANSI codes. */
  get screen(): string {
    const last = this.text.split('\r').filter((s) => s.replace(/\x1b\[K/g, '').length > 0);
    return (last[last.length - 1] ?? '').replace(/\x1b\[K/g, '').replace(/\n$/, '');
  }
}

const MiB = 2 ** 20;
const base: ProgressBarState = {
  status: 'active',
  remaining: 96 * MiB,
  total: 128 * MiB,
  transferred: 32 * MiB,
  mbps: 812.34,
  dirtyPagesRate: 5120,
  iteration: 1,
  expectedDowntime: 42,
};

t.test('draws one line in place with \\r and erase-to-EOL', async (t) => {
  const s = new FakeStream(200);
  const bar = new ProgressBar({ stream: s, barWidth: 20, ascii: true });
  bar.update(base);
  t.equal(s.chunks.length, 1);
  t.ok(s.chunks[0]!.startsWith('\r'));
  t.ok(s.chunks[0]!.endsWith('\x1b[K'));
  t.notMatch(s.chunks[0]!, /\n/, 'no newline while running');
  t.match(s.screen, /^active \[#####---------------\] {2}25\.0%/);
  t.match(s.screen, /remaining 96\.0 MiB\/128\.0 MiB/);
  t.match(s.screen, /sent 32\.0 MiB/);
  t.match(s.screen, /812\.3 Mbps/);
  t.match(s.screen, /dirty 5120 pages\/s/);
  t.match(s.screen, /iter 1/);
  t.match(s.screen, /exp-downtime 42 ms/);
});

t.test('the bar moves backwards when remaining grows, and marks it', async (t) => {
  const s = new FakeStream(200);
  const bar = new ProgressBar({ stream: s, barWidth: 20, ascii: true });
  bar.update({ ...base, remaining: 16 * MiB });
  t.match(s.screen, /\[##################--\] {2}87\.5% {2}/);
  bar.update({ ...base, remaining: 64 * MiB, iteration: 2 });
  t.match(s.screen, /\[##########----------\] {2}50\.0% v/, 'shorter bar, backwards marker');
  t.match(s.screen, /iter 2/);
  bar.update({ ...base, remaining: 32 * MiB, iteration: 2 });
  t.match(s.screen, /\[###############-----\] {2}75\.0% {2}/, 'marker gone once it advances');
  bar.done();
  t.ok(s.text.endsWith('\n'), 'done ends the line');
  const n = s.chunks.length;
  bar.update(base);
  bar.done();
  t.equal(s.chunks.length, n, 'nothing after done');
});

t.test('total 0 and non-numbers never throw', async (t) => {
  const s = new FakeStream();
  const bar = new ProgressBar({ stream: s });
  t.doesNotThrow(() => bar.update({ ...base, total: 0, remaining: 0 }));
  t.match(s.screen, /--%/);
  t.doesNotThrow(() =>
    bar.update({
      ...base,
      total: 0,
      remaining: 5,
      mbps: Number.NaN,
      expectedDowntime: Number.POSITIVE_INFINITY,
      transferred: -1,
    }),
  );
  t.match(s.screen, /- Mbps/);
  t.doesNotThrow(() => bar.update({ ...base, remaining: 500 * MiB }), 'remaining > total clamps to 0%');
  t.match(s.screen, / {2}0\.0%/);
  t.equal(progressFraction(0, 0), null);
  t.equal(progressFraction(10, 0), null);
  t.equal(progressFraction(0, 10), 1);
  t.doesNotThrow(() => bar.done());
});

t.test('lines never wrap and updates can be throttled', async (t) => {
  const s = new FakeStream(40);
  const bar = new ProgressBar({ stream: s, minIntervalMs: 60_000 });
  bar.update(base);
  t.ok(s.screen.length <= 39, 'truncated to the terminal width');
  bar.update({ ...base, remaining: 1 });
  t.equal(s.chunks.length, 1, 'throttled');
  bar.update({ ...base, status: 'device' });
  t.equal(s.chunks.length, 2, 'a status change always redraws');
  bar.clear();
  t.equal(s.chunks[2], '\r\x1b[K');
  bar.done();
  t.equal(s.chunks.length, 5, 'done redraws the latest state and ends the line');
  t.ok(s.text.endsWith('\n'));
});

t.test('done without any update writes nothing', async (t) => {
  const s = new FakeStream();
  const bar = new ProgressBar({ stream: s });
  bar.done();
  t.equal(s.chunks.length, 0);
});

t.test('done with the final status: a completed bar ends at 100 %, a failed one where it was', async (t) => {
  const s = new FakeStream(200);
  const bar = new ProgressBar({ stream: s, barWidth: 20, ascii: true });
  bar.update({ ...base, remaining: 3 * MiB, status: 'device' });
  bar.done('completed');
  t.match(s.screen, /^completed \[#{20}\] 100\.0% /);
  const f = new FakeStream(200);
  const failed = new ProgressBar({ stream: f, barWidth: 20, ascii: true });
  failed.update(base);
  failed.done('failed');
  t.match(f.screen, /^failed \[#####-+\] {2}25\.0%/);
});
