/**
 * Output files (`--dump-ram`, `--json`, `--timeline`) and the pair's work folder:
 *  - a RAM dump is private (0600) and always a new file: an existing file or a symlink at the path is
 *    refused, and the file behind it is left untouched;
 *  - a path that cannot be written is a usage error before anything starts (exit 2, one error line,
 *    no guest, within a few seconds), including paths under /proc and /sys;
 *  - a write that fails after the migration (its folder removed meanwhile) is one warning line: the
 *    report still reaches stdout and the exit code still says the migration completed;
 *  - `npm start`'s work folder is made by mkdtemp (random name, 0700) and is gone when the runner
 *    ends, normally or on SIGTERM (which also stops its sides).
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { lstat, mkdir, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { ROOT } from '../../scripts/lib/spawn-side.js';
import { ErrorCode } from '../../shared/errors.js';
import { writeRamDump } from '../../shared/guest/dump.js';
import { checkOutputPath } from '../../shared/output-paths.js';
import {
  assertOneLineError,
  bounded,
  runMigration,
  startSide,
  TIMEOUT,
  tempDir,
  waitExit,
  waitFor,
  waitProgress,
} from '../helpers/pair.js';

t.setTimeout(120_000);

/** A refused start: well inside this, although tsx alone takes about a second to load the entry. */
const FAST_FAIL_MS = 8000;

const mode = async (path: string) => (await stat(path)).mode & 0o777;
const GUEST_STARTED = / guest service on /;

t.test('writeRamDump: a new private file; never an existing file or a symlink', async (t) => {
  const dir = await tempDir(t);
  const bytes = new Uint8Array(8192).fill(7);
  const dump = join(dir, 'guest.ram');
  await writeRamDump(dump, bytes);
  t.equal(await mode(dump), 0o600, 'the dump is 0600');
  t.same(await readFile(dump), Buffer.from(bytes), 'the dump holds the bytes');

  const usage = { code: ErrorCode.USAGE, message: /exists \(dumps are never overwritten: remove it first\)/ };
  await t.rejects(writeRamDump(dump, new Uint8Array(4096)), usage, 'an existing dump is not overwritten');
  t.same(await readFile(dump), Buffer.from(bytes), 'the existing file is untouched');

  const target = join(dir, 'precious');
  await writeFile(target, 'precious data');
  const link = join(dir, 'link.ram');
  await symlink(target, link);
  await t.rejects(writeRamDump(link, bytes), usage, 'a symlink at the path is refused');
  t.equal(await readFile(target, 'utf8'), 'precious data', 'the file behind the symlink is untouched');

  const dangling = join(dir, 'dangling.ram');
  const nowhere = join(dir, 'nowhere');
  await symlink(nowhere, dangling);
  await t.rejects(writeRamDump(dangling, bytes), usage, 'a dangling symlink is refused');
  await t.rejects(lstat(nowhere), { code: 'ENOENT' }, 'nothing was created where it pointed');
});

t.test('checkOutputPath: what is refused and why', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'file');
  await writeFile(file, '');
  await symlink(join(dir, 'nowhere'), join(dir, 'dangling.json'));
  const refused = (option: string, path: string, kind: 'report' | 'timeline' | 'dump', why: RegExp) =>
    t.rejects(
      checkOutputPath(option, path, kind),
      { code: ErrorCode.USAGE, message: why },
      `${path}: ${why}`,
    );
  await refused('--json', join(dir, 'missing', 'r.json'), 'report', /folder .*missing does not exist$/);
  await refused('--json', join(file, 'r.json'), 'report', /file is not a folder$/);
  await refused('--json', dir, 'report', /is a folder$/);
  await refused('--json', join(dir, 'dangling.json'), 'report', /symbolic link to nothing/);
  await refused('--json', '', 'report', /the path is empty/);
  await refused('--timeline', join(dir, 'chart.pdf'), 'timeline', /must end in \.svg or \.png$/);
  await refused('--timeline', '/proc/x.svg', 'timeline', /under \/proc/);
  await refused('--timeline', '/dev/fd/x.svg', 'timeline', /under \/proc/); // a symlink into procfs
  await refused('--json', '/sys/x.json', 'report', /under \/sys/);
  await refused('--dump-ram', file, 'dump', /exists \(dumps are never overwritten/);
  await t.resolves(checkOutputPath('--json', file, 'report'), 'an existing file may be rewritten');
  await t.resolves(checkOutputPath('--timeline', join(dir, 'c.PNG'), 'timeline'), '.png in any case');
  await t.resolves(checkOutputPath('--dump-ram', join(dir, 'new.ram'), 'dump'), 'a new dump path');
});

/** Starts one side with `args`, expects a refusal: exit 2, one MIG_ERR_USAGE line, no guest. */
async function expectRefused(
  t: Test,
  role: 'source' | 'destination',
  args: string[],
  message: RegExp,
): Promise<void> {
  const address = role === 'source' ? ['--connect', '127.0.0.1:9'] : ['--listen', '127.0.0.1:0'];
  const started = Date.now();
  const side = startSide(t, role, [...address, '--ram', '32M', ...args]);
  const code = await waitExit(side, FAST_FAIL_MS);
  const elapsed = Date.now() - started;
  t.equal(code, 2, `${role} exits 2 (usage) ${side.stderrLines.slice(0, 3).join(' | ')}`);
  t.ok(elapsed < FAST_FAIL_MS, `refused before anything started (${elapsed} ms)`);
  const line = assertOneLineError(t, side.stderrLines, /MIG_ERR_USAGE/);
  t.match(line, message, 'the line names the option, the path and the reason');
  t.notOk(
    side.stderrLines.some((l) => GUEST_STARTED.test(l)),
    'no guest was started',
  );
  if (role === 'destination') t.same(side.stdoutLines, [], 'the destination never listened');
}

t.test('a dump onto an existing file or a symlink is refused before migrating', async (t) => {
  const dir = await tempDir(t);
  const existing = join(dir, 'existing.ram');
  await writeFile(existing, 'keep me');
  const target = join(dir, 'target');
  await writeFile(target, 'keep me too');
  const link = join(dir, 'link.ram');
  await symlink(target, link);
  const exists =
    /^switchover-\w+: MIG_ERR_USAGE: --dump-ram: .*: exists \(dumps are never overwritten: remove it first\)$/;
  await expectRefused(t, 'source', ['--dump-ram', existing], exists);
  await expectRefused(t, 'destination', ['--dump-ram', link], exists);
  t.equal(await readFile(existing, 'utf8'), 'keep me', 'the existing file is untouched');
  t.equal(await readFile(target, 'utf8'), 'keep me too', 'the file behind the symlink is untouched');
  t.ok((await lstat(link)).isSymbolicLink(), 'the symlink is still a symlink');
});

t.test('--json into a missing folder and --timeline under /proc fail fast, exit 2', async (t) => {
  const dir = await tempDir(t);
  const missing = join(dir, 'no', 'such', 'dir');
  const json = join(missing, 'x.json');
  const noFolder = new RegExp(
    `^switchover-\\w+: MIG_ERR_USAGE: --json: ${json}: folder ${missing} does not exist$`,
  );
  await expectRefused(t, 'source', ['--json', json], noFolder);
  await expectRefused(t, 'destination', ['--json', json], noFolder);
  await expectRefused(
    t,
    'source',
    ['--timeline', '/proc/x.svg'],
    /--timeline: \/proc\/x\.svg: is under \/proc/,
  );
});

t.test('a --json folder removed during the migration: warning, report on stdout, exit 0', async (t) => {
  t.setTimeout(45_000);
  const dir = await tempDir(t);
  const doomed = join(dir, 'doomed');
  await mkdir(doomed);
  const srcJson = join(doomed, 'source.json');
  const dstJson = join(doomed, 'destination.json');
  let removedWhileActive = false;
  // 32 MiB at 16 MB/s: about 2 s of precopy, time to remove the folder once the migration runs
  const r = await runMigration(t, {
    ram: '32M',
    source: ['--max-bandwidth', '16M', '--dirty-rate', '0', '--json', srcJson],
    destination: ['--json', dstJson],
    timeoutMs: 40_000,
    during: async ({ source }) => {
      const progress = await waitProgress(source, 20_000);
      await rm(doomed, { recursive: true, force: true });
      removedWhileActive = progress !== null && source.child.exitCode === null;
    },
  });
  t.ok(removedWhileActive, 'the folder was removed while the source migrated');
  t.equal(r.srcCode, 0, 'the source still exits 0: the migration completed');
  t.equal(r.dstCode, 0, 'the destination still exits 0');
  t.match(r.srcStdout.join('\n'), /^status\s+completed$/m, 'the source report is on stdout');
  t.match(r.srcStdout.join('\n'), /^downtime\s+\d/m, 'in full (downtime included)');
  const warning = (lines: string[], side: string, path: string) =>
    lines.filter((l) => l.startsWith(`switchover-${side}: warning: could not write --json ${path}: ENOENT`));
  t.equal(warning(r.srcStderr, 'source', srcJson).length, 1, 'one warning line on the source');
  t.equal(warning(r.dstStderr, 'destination', dstJson).length, 1, 'one warning line on the destination');
  t.notOk(
    r.srcStderr.some((l) => / MIG_ERR_/.test(l)),
    'no error line on the source',
  );
  t.equal(r.dumpsEqual, true, 'the RAM dumps (another folder) were written and match');
  t.equal(await mode(join(r.dir, 'source.ram')), 0o600, "the source's dump is 0600");
  t.equal(await mode(join(r.dir, 'destination.ram')), 0o600, "the destination's dump is 0600");
});

/** `npm start`'s runner with its temp folder in `tmp`; records the pair work folders seen while it runs. */
function startPair(t: Test, tmp: string, args: string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts/run-pair.ts'), ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, TMPDIR: tmp },
  });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)),
  );
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await bounded(exited, 5000);
  });
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
  return { child, exited, seen, stopWatching, stderr: () => stderr };
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

t.test('the pair runner: a mkdtemp work folder, gone after the run', async (t) => {
  t.setTimeout(45_000);
  const tmp = await tempDir(t, 'switchover-tmp-');
  const pair = startPair(t, tmp, ['--ram', '32M', '--dirty-rate', '0', '--quiet']);
  const code = await bounded(pair.exited, 40_000);
  await pair.stopWatching();
  t.not(code, TIMEOUT, 'the pair finished in time');
  t.equal(code, 0, `the pair exits 0 ${pair.stderr().slice(0, 400)}`);
  assertMkdtempFolders(t, pair.seen);
  t.same(await pairFolders(tmp), [], 'no work folder is left');
});

t.test('the pair runner: SIGTERM mid-run removes the work folder and stops the sides', async (t) => {
  t.setTimeout(45_000);
  const tmp = await tempDir(t, 'switchover-tmp-');
  // 32 MiB at 8 MB/s: the migration is still running when the signal comes
  const pair = startPair(t, tmp, ['--ram', '32M', '--max-bandwidth', '8M', '--probe-interval', '0']);
  const migrating = await waitFor(() => /^progress /m.test(pair.stderr()), 30_000);
  t.ok(migrating, 'the migration started');
  const sides = childrenOf(pair.child.pid!);
  t.ok(sides.length >= 2, `the pair runs its sides (${sides.join(', ')})`);
  pair.child.kill('SIGTERM');
  const code = await bounded(pair.exited, 10_000);
  await pair.stopWatching();
  t.not(code, TIMEOUT, 'the pair ended in time');
  t.ok(code === 143 || code === 'SIGTERM', `the pair ended as a SIGTERM does (${String(code)})`);
  assertMkdtempFolders(t, pair.seen);
  t.same(await pairFolders(tmp), [], 'no work folder is left');
  const gone = await waitFor(() => sides.every((pid) => !alive(pid)), 10_000);
  t.ok(gone, 'no side outlives the pair');
  for (const pid of sides) if (alive(pid)) process.kill(pid, 'SIGKILL');
});

/** Direct children of `pid` (Linux procfs). */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/** Running (a zombie waiting for a reaper does not count). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

t.test('the pair runner: a source that fails on its options ends the pair (exit 2, no hang)', async (t) => {
  t.setTimeout(45_000);
  const tmp = await tempDir(t, 'switchover-tmp-');
  // the runner does not know device specs: only the source refuses this one, after the destination started
  const pair = startPair(t, tmp, ['--ram', '32M', '--device', 'prep=abc', '--quiet']);
  const code = await bounded(pair.exited, 30_000);
  await pair.stopWatching();
  t.not(code, TIMEOUT, 'the pair ended on its own (it used to wait for the destination forever)');
  t.equal(code, 2, 'with the source usage error exit code');
  t.match(
    pair.stderr(),
    /\[source\] switchover-source: MIG_ERR_USAGE: --device: /,
    'its error line shown under --quiet',
  );
  t.same(await pairFolders(tmp), [], 'no work folder is left');
});
