/**
 * What a user reads: a `pair` run reports the three downtimes and the breakdown, writes a timeline
 * chart with the downtime window marked, and (not on a terminal) prints line-based progress that
 * parses.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import t, { type Test } from 'tap';
import { ROOT } from '../../scripts/lib/spawn-side.js';
import { parseProgressLine } from '../../shared/cli/progress-line.js';
import { bounded, TIMEOUT, tempDir } from '../helpers/pair.js';

t.test('a pair run reports three downtimes, a breakdown, a timeline and parseable progress', async (t) => {
  t.setTimeout(120_000);
  const dir = await tempDir(t);
  const json = join(dir, 'report.json');
  const svg = join(dir, 'timeline.svg');
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(ROOT, 'scripts/run-pair.ts'),
      '--ram',
      '64M',
      '--dirty-rate',
      '8M',
      '--json',
      json,
      '--timeline',
      svg,
    ],
    { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const progress: Record<string, string>[] = [];
  createInterface({ input: child.stderr! }).on('line', (l) => {
    const p = parseProgressLine(l);
    if (p) progress.push(p);
  });
  const code = await bounded(new Promise((r) => child.on('exit', r)), 100_000);
  t.not(code, TIMEOUT, 'pair finished in time');
  t.equal(code, 0, 'pair exits 0');
  const r = JSON.parse(await readFile(json, 'utf8'));
  t.equal(r.status, 'completed');
  t.ok(r.downtime > 0, `source downtime ${r.downtime} ms`);
  t.ok(r.guest['observed-downtime'] > 0, `guest-observed downtime ${r.guest['observed-downtime']} ms`);
  t.equal(r.guest.clock, 'shared', 'one host: one clock');
  t.ok(r.probe?.['service-downtime'] > 0, `service downtime ${r.probe?.['service-downtime']} ms`);
  t.ok(r.probe.interval > 0 && r.probe.interval < 7, `the probe ran about every 5 ms (${r.probe.interval})`);
  t.same(
    r.probe['resolution-ms'],
    { 'gap-start': 5, 'gap-end': 1 },
    'the report says how precise each edge is',
  );
  const b = r['downtime-breakdown'];
  for (const name of [
    'src-downtime-start',
    'src-vm-stopped',
    'src-iterable-saved',
    'src-non-iterable-saved',
    'dst-loadvm-completed',
    'dst-vm-started',
    'src-downtime-end',
  ]) {
    t.type(b[name], 'number', `breakdown has ${name}`);
  }
  t.ok(Math.abs(b['src-downtime-end'] - r.downtime) < 1, 'the breakdown ends at the downtime');
  t.ok(
    Array.isArray(r['expected-downtime-history']) && r['expected-downtime-history'].length > 0,
    'expected-downtime history',
  );
  const chart = await readFile(svg, 'utf8');
  t.match(chart, /<svg/, 'the timeline is an SVG');
  t.match(chart, /downtime/, 'the timeline marks the downtime window');
  t.ok(progress.length >= 3, `${progress.length} progress lines`);
  for (const p of progress) {
    for (const k of [
      'status',
      'elapsed-ms',
      'remaining',
      'transferred',
      'mbps',
      'dirty-pages-rate',
      'iteration',
      'expected-downtime',
    ]) {
      if (!Number.isFinite(Number(p[k])) && k !== 'status')
        t.fail(`progress field ${k}=${p[k]} is not a number`);
    }
  }
  const transferred = progress.map((p) => Number(p.transferred));
  t.ok(
    transferred.every((x, i) => i === 0 || x >= transferred[i - 1]!),
    'transferred never goes backwards',
  );
});

/** Runs `npm start`'s script with args; resolves its exit code and stderr. */
async function runPairCli(t: Test, args: string[]): Promise<{ code: unknown; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts/run-pair.ts'), ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const code = await bounded(new Promise((r) => child.on('exit', r)), 100_000);
  return { code, stderr };
}

t.test('--probe-interval 0 runs no outside probe; a bad period is a usage error', async (t) => {
  t.setTimeout(120_000);
  const dir = await tempDir(t);
  const json = join(dir, 'report.json');
  const off = await runPairCli(t, [
    '--ram',
    '32M',
    '--dirty-rate',
    '0',
    '--probe-interval',
    '0',
    '--json',
    json,
  ]);
  t.equal(off.code, 0, 'pair exits 0');
  const r = JSON.parse(await readFile(json, 'utf8'));
  t.equal(r.status, 'completed');
  t.equal(r.probe, undefined, 'no probe figures when no probe ran');
  t.type(r.guest['observed-downtime'], 'number', 'the guest still reports what it saw');

  const bad = await runPairCli(t, ['--ram', '32M', '--probe-interval', 'soon']);
  t.equal(bad.code, 2, 'bad usage exits 2');
  t.match(
    bad.stderr.split('\n')[0],
    /^switchover: MIG_ERR_USAGE: --probe-interval: 'soon' is not a period of 0\.\.60000 ms/,
    'the first line names the option and the value (usage follows)',
  );
});
