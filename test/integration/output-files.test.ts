import { lstat, mkdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { ErrorCode } from '../../shared/errors.js';
import { writeRamDump } from '../../shared/guest/dump.js';
import { checkOutputPath } from '../../shared/output-paths.js';
import {
  assertOneLineError,
  runMigration,
  startSide,
  tempDir,
  waitExit,
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
    /^switchover-\w+: MIG_ERR_USAGE: --dump-ram: .*: exists \(dumps are never overwritten: remove it first\) \(see '[^']+ --help'\)$/;
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
    `^switchover-\\w+: MIG_ERR_USAGE: --json: ${json}: folder ${missing} does not exist \\(see '[^']+ --help'\\)$`,
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
  t.match(r.srcStdout.join('\n'), /^completed in .* · downtime source \d/m, 'the source report is on stdout');
  t.match(r.srcStdout.join('\n'), /^Downtime\n {2}source\s+\d/m, 'in full (downtime section included)');
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
