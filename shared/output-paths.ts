/**
 * Output files (`--json`, `--timeline`, `--dump-ram`), on both ends of a migration:
 *
 * - before it, `checkOutputPaths` refuses a path that cannot be written, so a typo costs a usage error
 *   (exit 2, one line) instead of a whole migration whose report is then lost;
 * - after it, `writeOutputOrWarn` turns a write that still fails (the folder removed meanwhile, a full
 *   disk) into one warning line: the report still reaches stdout and the exit code still says how the
 *   migration ended.
 */
import { constants as fsConstants } from 'node:fs';
import { access, lstat, mkdir, realpath, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { ErrorCode, ParameterError } from './errors.js';

export interface OutputPaths {
  json?: string;
  timeline?: string;
  dumpRam?: string;
}

/** What kind of file an option writes: dumps are created exclusively, timelines are .svg or .png. */
export type OutputKind = 'report' | 'timeline' | 'dump';

/** Kernel pseudo-filesystems: writing there is never an output file (a timeline under /proc spun at 100 % CPU). */
const PSEUDO_FILESYSTEMS = ['/proc', '/sys'];

/** Throws a usage error for the first path given that cannot be written. */
export async function checkOutputPaths(paths: OutputPaths): Promise<void> {
  if (paths.json !== undefined) await checkOutputPath('--json', paths.json, 'report');
  if (paths.timeline !== undefined) await checkOutputPath('--timeline', paths.timeline, 'timeline');
  if (paths.dumpRam !== undefined) await checkOutputPath('--dump-ram', paths.dumpRam, 'dump');
}

/**
 * `path` can be written as `kind`: not empty, not under /proc or /sys, its folder exists and is a
 * writable folder, the path is not a folder, a dump's path does not exist yet, a timeline ends in
 * .svg or .png. A check, not a guarantee: the writers still handle failure (see writeOutputOrWarn).
 */
export async function checkOutputPath(option: string, path: string, kind: OutputKind): Promise<void> {
  const refuse = (why: string) =>
    new ParameterError(ErrorCode.USAGE, `${option}: ${path}: ${why}`, { field: option });
  if (path === '')
    throw new ParameterError(ErrorCode.USAGE, `${option}: the path is empty`, { field: option });
  const absolute = resolve(path);
  const folder = dirname(absolute);
  if (underPseudoFilesystem(absolute)) throw refuse(pseudoFilesystemWhy(absolute));
  if (kind === 'timeline' && !/\.(svg|png)$/i.test(path)) throw refuse('must end in .svg or .png');

  const folderStat = await stat(folder).catch((err: NodeJS.ErrnoException) => err);
  if (folderStat instanceof Error) {
    if (folderStat.code === 'ENOENT') throw refuse(`folder ${folder} does not exist`);
    if (folderStat.code === 'ENOTDIR') throw refuse(`${folder} is not a folder`);
    throw refuse(`folder ${folder} cannot be used (${folderStat.code ?? folderStat.message})`);
  }
  if (!folderStat.isDirectory()) throw refuse(`${folder} is not a folder`);
  // a symlinked folder (e.g. /dev/fd) may still land in procfs
  const realFolder = await realpath(folder);
  if (underPseudoFilesystem(realFolder)) throw refuse(pseudoFilesystemWhy(realFolder));

  const existing = await lstat(absolute).catch(() => null);
  if (kind === 'dump' && existing) throw refuse('exists (dumps are never overwritten: remove it first)');
  const target = existing?.isSymbolicLink() ? await stat(absolute).catch(() => null) : existing;
  if (existing && !target) throw refuse('is a symbolic link to nothing');
  if (target?.isDirectory()) throw refuse('is a folder');
  if (existing?.isSymbolicLink()) {
    // /dev/stdout on a pipe resolves to no path at all: then only the lexical check applies
    const realTarget = await realpath(absolute).catch(() => absolute);
    if (underPseudoFilesystem(realTarget)) throw refuse(pseudoFilesystemWhy(realTarget));
  }
  // an existing file is rewritten in place; a new one (and a timeline's .svg beside its .png) needs the folder
  const writable = existing && kind === 'report' ? absolute : folder;
  try {
    await access(writable, fsConstants.W_OK);
  } catch {
    throw refuse(writable === folder ? `folder ${folder} is not writable` : 'is not writable');
  }
}

function underPseudoFilesystem(absolute: string): boolean {
  return PSEUDO_FILESYSTEMS.some((root) => absolute === root || absolute.startsWith(`${root}/`));
}

function pseudoFilesystemWhy(absolute: string): string {
  const root = PSEUDO_FILESYSTEMS.find((r) => absolute === r || absolute.startsWith(`${r}/`));
  return `is under ${root}, a kernel pseudo-filesystem, not a place for output files`;
}

/**
 * Runs `write` (one output file, after the migration); a failure becomes one warning line on stderr,
 * `PROG: warning: could not write OPTION PATH: REASON`, and `false`, never an exception: the report on
 * stdout and the exit code must still say how the migration ended.
 */
export async function writeOutputOrWarn(
  prog: string,
  option: string,
  path: string,
  write: () => Promise<unknown>,
): Promise<boolean> {
  try {
    await write();
    return true;
  } catch (err) {
    const reason = String((err as Error)?.message ?? err).replace(/\s*\n\s*/g, ' ');
    process.stderr.write(`${prog}: warning: could not write ${option} ${path}: ${reason}\n`);
    return false;
  }
}

/**
 * `pair --dump-ram DIR`: DIR is made when missing (as `mkdir -p`), refused under /proc or /sys or
 * when it is not a writable folder; the dumps inside are then checked like any `--dump-ram` path.
 */
export async function makeOutputFolder(option: string, dir: string): Promise<void> {
  const refuse = (why: string) =>
    new ParameterError(ErrorCode.USAGE, `${option}: ${dir}: ${why}`, { field: option });
  if (dir === '')
    throw new ParameterError(ErrorCode.USAGE, `${option}: the path is empty`, { field: option });
  const absolute = resolve(dir);
  if (underPseudoFilesystem(absolute)) throw refuse(pseudoFilesystemWhy(absolute));
  try {
    await mkdir(absolute, { recursive: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw refuse(code === 'EEXIST' || code === 'ENOTDIR' ? 'is not a folder' : `cannot be made (${code})`);
  }
  const real = await realpath(absolute);
  if (underPseudoFilesystem(real)) throw refuse(pseudoFilesystemWhy(real));
  try {
    await access(absolute, fsConstants.W_OK);
  } catch {
    throw refuse('is not writable');
  }
}
