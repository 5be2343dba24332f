/**
 * The outside probe (scripts/probe.ts, a separate process) against a GuestService in this process:
 * the guest stops answering for ~150 ms in the middle of a ~600 ms run, and the probe must report
 * that silence as the service downtime.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ROOT } from '../../scripts/lib/spawn-side.js';
import { GuestService } from '../../shared/guest/service.js';

const now = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(2);
  }
}

t.test('probe measures a 150 ms service stop as service-downtime', { timeout: 60_000 }, async (t) => {
  let running = true;
  let tick = 0;
  const svc = new GuestService({ isRunning: () => running, tick: () => (running ? ++tick : tick) });
  const { port } = await svc.start('127.0.0.1', 0);
  const dir = await mkdtemp(join(tmpdir(), 'probe-test-'));
  const untilFile = join(dir, 'stop');
  const jsonFile = join(dir, 'probe.json');

  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      'scripts/probe.ts',
      '--target',
      `127.0.0.1:${port}`,
      '--interval',
      '1',
      '--duration',
      '20000',
      '--until-file',
      untilFile,
      '--json',
      jsonFile,
    ],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const exited = new Promise<number | string>((resolve) =>
    child.on('exit', (code, signal) => resolve(code ?? signal ?? -1)),
  );
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    await svc.close();
    await rm(dir, { recursive: true, force: true });
  });

  // The probe is up once the guest has answered a few of its requests.
  await waitFor(() => svc.answered >= 5, 20_000, 'the probe to start sending');
  await sleep(225);
  running = false;
  const offAt = now();
  await sleep(155);
  while (now() - offAt < 152) await sleep(1);
  running = true;
  const offFor = now() - offAt;
  await sleep(225);
  await writeFile(untilFile, '');

  let bound: NodeJS.Timeout | undefined;
  const code = await Promise.race([
    exited,
    new Promise<string>((r) => {
      bound = setTimeout(() => r('timeout'), 10_000);
    }),
  ]);
  clearTimeout(bound);
  t.equal(code, 0, `probe exits 0 (stderr: ${stderr.trim()})`);
  const lines = stdout.trim().split('\n');
  t.equal(lines.length, 1, 'exactly one line on stdout');
  const r = JSON.parse(lines[0]!);
  t.comment(`guest off for ${offFor.toFixed(1)} ms; probe: ${lines[0]}`);

  t.ok(r['service-downtime'] >= 150, `service-downtime ${r['service-downtime']} >= 150`);
  t.ok(r['service-downtime'] < 300, `service-downtime ${r['service-downtime']} < 300`);
  t.ok(r.replies > 100, `replies ${r.replies}`);
  t.ok(r.sent >= r.replies, 'sent >= replies');
  t.ok(r.interval > 0 && r.interval < 5, `achieved interval ${r.interval} ms`);
  t.equal(r['stop-reason'], 'until-file');
  t.ok(r['gap-end'] > r['gap-start'], 'gap end after gap start');
  t.ok(
    Math.abs(r['gap-end'] - r['gap-start'] - r['service-downtime']) < 0.01,
    'gap-end − gap-start = downtime',
  );
  t.ok(
    r['gap-start'] <= offAt + 5 && r['gap-end'] >= offAt + offFor - 5,
    'the gap is where the guest was stopped (same monotonic clock)',
  );
  t.ok(r['tick-after-gap'] >= r['tick-before-gap'], 'guest tick did not go back');
  t.ok(r.duration >= 500 && r.duration < 5000, `probe ran ${r.duration} ms`);
  t.same(JSON.parse(await readFile(jsonFile, 'utf8')), r, '--json file has the same result');
});

t.test('probe: bad options exit 2 with a one-line error and usage', { timeout: 30_000 }, async (t) => {
  const run = (args: string[]) =>
    new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const c = spawn(process.execPath, ['--import', 'tsx', 'scripts/probe.ts', ...args], {
        cwd: ROOT,
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      c.stderr.setEncoding('utf8').on('data', (d: string) => {
        stderr += d;
      });
      const timer = setTimeout(() => c.kill('SIGKILL'), 20_000);
      c.on('exit', (code) => {
        clearTimeout(timer);
        resolve({ code, stderr });
      });
    });
  const [noTarget, badInterval] = await Promise.all([
    run([]),
    run(['--target', '127.0.0.1:9', '--interval', 'fast']),
  ]);
  t.equal(noTarget.code, 2);
  t.match(
    noTarget.stderr,
    /^probe: MIG_ERR_USAGE: --target HOST:PORT is required \(see 'npm run probe -- --help'\)\n$/,
  );
  t.equal(badInterval.code, 2);
  t.match(badInterval.stderr, /^probe: MIG_ERR_USAGE: --interval: 'fast'/);
});
