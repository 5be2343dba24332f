import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { renderTimeline, type TimelineData, timelineSpec } from '../../shared/cli/timeline.js';

const MiB = 2 ** 20;
const data: TimelineData = {
  title: 'test timeline',
  samples: [0, 100, 200, 300, 400, 500, 600, 700].map((t, i) => ({
    t,
    remaining: [64, 48, 32, 16, 20, 10, 4, 0][i]! * MiB,
    transferredRate: 100e6 + i * 1e6,
    dirtyRate: 20e6,
  })),
  iterations: [0, 400, 550],
  ackAt: 610,
  downtime: { start: 640, end: 700 },
};

function hasRsvg(): boolean {
  try {
    execFileSync('rsvg-convert', ['--version'], { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

t.test('renders SVG (and PNG when rsvg-convert exists) with the downtime and ACK labels', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'timeline-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));

  const svgOnly = await renderTimeline(data, join(dir, 'only.svg'));
  t.equal(svgOnly.svg, join(dir, 'only.svg'));
  t.equal(svgOnly.png, undefined);
  const svg = await readFile(svgOnly.svg, 'utf8');
  t.ok(svg.length > 1000, 'non-empty');
  t.match(svg, /^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  t.match(svg, />downtime 60 ms</, 'downtime window labelled');
  t.match(svg, />ACK</, 'ACK labelled');
  t.match(svg, /remaining \(MiB\)/);
  t.match(svg, /bandwidth \(MB\/s\)/);
  t.match(svg, /dirty rate \(MB\/s\)/);
  t.match(svg, />test timeline</);

  const res = await renderTimeline(data, join(dir, 'sub', 'chart.png'));
  t.equal(res.svg, join(dir, 'sub', 'chart.svg'), 'SVG written next to the PNG');
  t.ok((await stat(res.svg)).size > 1000);
  if (hasRsvg()) {
    t.equal(res.png, join(dir, 'sub', 'chart.png'));
    const png = await readFile(res.png!);
    t.same([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'PNG signature');
  } else {
    t.equal(res.png, undefined);
    t.match(res.note, /rsvg-convert/);
  }
});

t.test('minimal data renders; no downtime means no downtime label', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'timeline-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const res = await renderTimeline({ samples: [], iterations: [] }, join(dir, 'empty.svg'));
  const svg = await readFile(res.svg, 'utf8');
  t.match(svg, /<svg/);
  t.notMatch(svg, />downtime/);
  t.notMatch(svg, />ACK</);
});

t.test('bad input is a PARAMETER error', async (t) => {
  t.throws(() => timelineSpec({ samples: [], iterations: [], downtime: { start: 5, end: 1 } }), {
    code: 'MIG_ERR_PARAMETER',
  });
  t.throws(
    () =>
      timelineSpec({
        samples: [{ t: 0, remaining: Number.NaN, transferredRate: 0, dirtyRate: 0 }],
        iterations: [],
      }),
    { code: 'MIG_ERR_PARAMETER' },
  );
});

t.test('the ACK wait is a band with its length; a short downtime is still drawn and labelled', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'timeline-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const long = {
    ...data,
    samples: data.samples.map((s) => ({ ...s, t: s.t * 100 })),
    iterations: [0, 40_000],
    ackWait: { start: 50_000, end: 61_000 },
    ackAt: 61_000,
    noProgressAt: 30_000,
    downtime: { start: 64_000, end: 64_008.4 },
  };
  const spec = JSON.stringify(timelineSpec(long));
  // 8.4 ms in a 70 s chart is far below a pixel: the band is widened to MIN_BAND_PX (4 px of 760)
  const widened = (4 / 760) * 70_000;
  t.match(
    spec,
    new RegExp(`"end":${(64_004.2 + widened / 2).toFixed(0).slice(0, 4)}`),
    'the band is widened',
  );
  const res = await renderTimeline(long, join(dir, 'long.svg'));
  const svg = await readFile(res.svg, 'utf8');
  t.match(svg, />downtime 8\.4 ms</, 'labelled with its true length');
  t.match(svg, />ACK \(waited 11000 ms\)</, 'the ACK says how long it was waited for');
  t.match(svg, />no progress</, 'the no-progress warning is marked');
});

t.test('convergence decisions are marked and labelled', async (t) => {
  const dir = t.testdir();
  const data = {
    samples: [
      { t: 0, remaining: 16 * 2 ** 20, transferredRate: 8e6, dirtyRate: 60e6 },
      { t: 9000, remaining: 1 * 2 ** 20, transferredRate: 8e6, dirtyRate: 2e6 },
    ],
    iterations: [2000, 4000],
    decisions: [
      { t: 4000, label: 'throttle 20 %' },
      { t: 8000, label: 'dirty limit 1 MB/s' },
    ],
  };
  const svg = await readFile((await renderTimeline(data, join(dir, 'd.svg'))).svg, 'utf8');
  t.match(svg, />throttle 20 %</);
  t.match(svg, />dirty limit 1 MB\/s</);
  t.match(svg, /teal: convergence decision/, 'the legend says what the rules are');
  t.throws(() => timelineSpec({ ...data, decisions: [{ t: Number.NaN, label: 'x' }] }), {
    message: /decisions\[0\]\.t is not a finite number/,
  });
});
