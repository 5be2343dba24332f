/**
 * `npm start`'s runner supervises its two sides:
 *  - every option is checked before anything starts: a bad --device is one line, exit 2, at once;
 *  - a source that fails after the destination started ends the pair (the destination is stopped,
 *    the source's error line shown even with --quiet, its exit code returned);
 *  - one SIGINT/SIGTERM is one graceful cancel (report `cancelled`, the source guest running), a
 *    second one ends both sides at once; under a real terminal (script(1)), Ctrl-C reaches the
 *    runner only, not the sides as well;
 *  - the work folder is made by mkdtemp (random name, 0700) and is gone however the runner ends.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { ROOT } from '../../scripts/lib/spawn-side.js';
import { bounded, readJsonFile, TIMEOUT, waitFor } from '../helpers/pair.js';

t.setTimeout(180_000);

/**
 * The runners' TMPDIR, one for the file: each run's work folder must appear there and be gone after
 * it. One folder for all tests because tsx keeps its compiled files under TMPDIR too: a fresh one
 * per test made every run compile everything again (a 4 s pair took 11 s).
 */
const TMP = await mkdtemp(join(tmpdir(), 'switchover-tmp-'));
t.teardown(() => rm(TMP, { recursive: true, force: true }));

const mode = async (path: string) => (await stat(path)).mode & 0o777;
/** 32 MiB at 8 MB/s: still migrating seconds after it started. */
const SLOW = ['--ram', '32M', '--max-bandwidth', '8M', '--probe-interval', '0'];

interface Running {
  child: ChildProcess;
  exited: Promise<number | string>;
  seen: Map<string, number>;
  stopWatching: () => Promise<void>;
  output: () => string;
}

/** Ends `child` at teardown if it still runs, and records the pair work folders seen in `tmp`. */
function supervise(t: Test, child: ChildProcess, tmp: string): Running {
  let output = '';
  for (const s of [child.stdout, child.stderr])
    s?.on('data', (c: Buffer) => {
      output += c.toString();
    });
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)),
  );
  const seen = new Map<string, number>();
  let watching = true;
  const watch = (async () => {
    while (watching) {
      for (const name of await pairFolders(tmp)) {
        if (!seen.has(name)) seen.set(name, await mode(join(tmp, name)).catch(() => -1));
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  const stopWatching = async () => {
    watching = false;
    await watch;
  };
  t.teardown(async () => {
    await stopWatching();
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await bounded(exited, 5000);
  });
  return { child, exited, seen, stopWatching, output: () => output };
}

/** `npm start`'s runner with its temp folder in `tmp`. */
function startPair(t: Test, tmp: string, args: string[]): Running {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts/run-pair.ts'), ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, TMPDIR: tmp },
  });
  return supervise(t, child, tmp);
}

async function pairFolders(tmp: string): Promise<string[]> {
  return (await readdir(tmp)).filter((n) => n.startsWith('switchover-pair-'));
}

function assertMkdtempFolders(t: Test, seen: Map<string, number>): void {
  t.equal(seen.size, 1, `one work folder was made (${[...seen.keys()].join(', ')})`);
  for (const [name, m] of seen) {
    t.match(name, /^switchover-pair-[A-Za-z0-9]{6}$/, `${name}: a mkdtemp name, not a guessable one`);
    t.equal(m, 0o700, `${name} is 0700`);
  }
}

/** Process ids of `pid`'s descendants (Linux procfs). */
function descendantsOf(pid: number): number[] {
  let direct: number[] = [];
  try {
    direct = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {}
  return direct.flatMap((c) => [c, ...descendantsOf(c)]);
}

/** Running (a zombie waiting for a reaper does not count). */
function alive(pid: number): boolean {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return '';
  }
}

/** The Node processes among `pid`'s descendants that run a side's entry. */
function sidesOf(pid: number): number[] {
  return descendantsOf(pid).filter((p) => /(source|destination)\/main\.ts/.test(cmdline(p)));
}

async function assertSidesGone(t: Test, sides: number[]): Promise<void> {
  const gone = await waitFor(() => sides.every((p) => !alive(p)), 10_000);
  t.ok(gone, 'no side outlives the pair');
  for (const p of sides) if (alive(p)) process.kill(p, 'SIGKILL');
}

t.test('a bad --device: one line, exit 2 within 2 s, nothing started', async (t) => {
  const tmp = TMP;
  // tsx keeps its compiled files under TMPDIR: one run first, so the timed one starts warm, as
  // every run after a user's first does (a cold start here took ~2 s more)
  await startPair(t, tmp, ['--help']).exited;
  const started = Date.now();
  const pair = startPair(t, tmp, ['--device', 'prep=abc']);
  const code = await bounded(pair.exited, 30_000);
  const took = Date.now() - started;
  await pair.stopWatching();
  t.equal(code, 2, 'usage exit code');
  // the figure; measured 0.65-0.75 s in CI runs and 0.8 s from a fresh clone (tsx loading included)
  t.ok(took < 2000, `within 2 s (took ${took} ms, tsx loading included)`);
  const lines = pair.output().trim().split('\n');
  t.equal(lines.length, 1, `one line: ${pair.output()}`);
  t.match(lines[0], /^switchover: MIG_ERR_USAGE: --device: .* \(see 'npm start -- --help'\)$/);
  t.equal(pair.seen.size, 0, 'no work folder was made');
});

t.test('a source that fails after the destination started ends the pair', async (t) => {
  const tmp = TMP;
  // the source's metrics port is taken: it fails after the runner started the destination
  const busy = net.createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
  t.teardown(() => busy.close());
  const port = (busy.address() as net.AddressInfo).port;
  const pair = startPair(t, tmp, ['--ram', '32M', '--metrics-port', String(port), '--quiet']);
  const code = await bounded(pair.exited, 30_000);
  await pair.stopWatching();
  t.not(code, TIMEOUT, 'the pair ended on its own (it used to wait for the destination forever)');
  t.equal(code, 2, "with the source's usage exit code");
  t.match(
    pair.output(),
    /\[source\] switchover-source: MIG_ERR_USAGE: --metrics-port: cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE/,
    'its error line shown under --quiet',
  );
  t.same(await pairFolders(tmp), [], 'no work folder is left');
});

t.test('a normal run: a mkdtemp work folder, gone after the run', async (t) => {
  const tmp = TMP;
  const pair = startPair(t, tmp, ['--ram', '32M', '--dirty-rate', '0', '--quiet']);
  const code = await bounded(pair.exited, 40_000);
  await pair.stopWatching();
  t.equal(code, 0, `the pair exits 0 ${pair.output().slice(0, 400)}`);
  t.match(pair.output(), /^completed in .* · integrity ok$/m, '--quiet still prints the report');
  t.notMatch(pair.output(), /^progress /m, 'but no progress');
  assertMkdtempFolders(t, pair.seen);
  t.same(await pairFolders(tmp), [], 'no work folder is left');
});

t.test('SIGTERM mid-run cancels gracefully; a second one ends the pair at once', async (t) => {
  for (const signals of [1, 2]) {
    const tmp = TMP;
    const json = join(tmp, 'report.json');
    const pair = startPair(t, tmp, [...SLOW, '--json', json]);
    t.ok(await waitFor(() => /^progress /m.test(pair.output()), 30_000), 'the migration started');
    const sides = sidesOf(pair.child.pid!);
    t.equal(sides.length, 2, `the pair runs two sides (${sides.join(', ')})`);
    if (signals === 2) {
      // a source that cannot finish its cancel (stopped): the second signal must end the pair anyway
      for (const pid of sides) if (/source\/main\.ts/.test(cmdline(pid))) process.kill(pid, 'SIGSTOP');
    }
    pair.child.kill('SIGTERM');
    if (signals === 2) {
      await new Promise((r) => setTimeout(r, 300)); // a second keypress, not a copy of the first
      pair.child.kill('SIGTERM');
    }
    const code = await bounded(pair.exited, 10_000);
    await pair.stopWatching();
    if (signals === 1) {
      t.equal(code, 1, 'one SIGTERM: the migration is cancelled, exit 1');
      const report = await readJsonFile(json);
      t.equal(report?.status, 'cancelled', 'the report says cancelled');
      t.equal(report?.guest?.['running-after-failure'], true, 'and the source guest was running');
    } else {
      t.ok(code === 143 || code === 'SIGTERM', `two: the pair ended as a SIGTERM does (${String(code)})`);
    }
    assertMkdtempFolders(t, pair.seen);
    t.same(await pairFolders(tmp), [], 'no work folder is left');
    await assertSidesGone(t, sides);
  }
});

t.test('Ctrl-C on npm start under a terminal: cancelled, the source guest running', async (t) => {
  const tmp = TMP;
  const json = join(tmp, 'report.json');
  // through npm, as a user runs it: npm forwards the SIGINT it gets too, so the runner sees two
  const command = ['npm', 'start', '--', ...SLOW, '--json', json].map((a) => `'${a}'`).join(' ');
  // script(1) gives the runner a pseudo-terminal; the ETX byte written to it is the terminal's
  // Ctrl-C: the line discipline sends SIGINT to the terminal's foreground process group
  const child = spawn('script', ['-qefc', command, '/dev/null'], {
    cwd: ROOT,
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, TMPDIR: tmp },
  });
  const pair = supervise(t, child, tmp);
  t.ok(await waitFor(() => /destination listening on/.test(pair.output()), 30_000), 'the pair started');
  t.ok(await waitFor(() => sidesOf(child.pid!).length === 2, 10_000), 'both sides run');
  const migrating = await waitFor(
    () => /\[destination\] .* migration [0-9a-f]+ from /.test(pair.output()),
    30_000,
  );
  t.ok(migrating, 'the source is migrating');
  await new Promise((r) => setTimeout(r, 500));
  const sides = sidesOf(child.pid!);
  child.stdin!.write('\x03');
  const code = await bounded(pair.exited, 15_000);
  await pair.stopWatching();
  t.not(code, TIMEOUT, 'the pair ended after the Ctrl-C');
  // the runner exits 1; npm, having got the SIGINT too, then ends as that signal (script: 128 + 2)
  t.equal(code, 130, 'npm ends as the SIGINT it was sent');
  const report = await readJsonFile(json);
  t.equal(
    report?.status,
    'cancelled',
    `the report says cancelled (${report?.['error-desc'] ?? 'no report'})`,
  );
  t.equal(report?.guest?.['running-after-failure'], true, 'and the source guest was running');
  t.same(await pairFolders(tmp), [], 'no work folder is left');
  await assertSidesGone(t, sides);
});
