/**
 * Integration helpers: a real destination and a real source, each a separate Node process started
 * with scripts/lib/spawn-side.ts, talking over loopback TCP (the destination listens on port 0).
 *
 * Every wait here is bounded: when a deadline passes, both processes get SIGKILL and the helper
 * reports `timedOut`. Every process and temp directory is registered with `t.teardown`, so a failed
 * or thrown assertion never leaves a process or a RAM dump behind.
 */
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { type Side, type SpawnOptions, spawnSide } from '../../scripts/lib/spawn-side.js';

export type Role = 'source' | 'destination';
export type Expect = 'completed' | 'failed' | 'cancelled';
// biome-ignore lint/suspicious/noExplicitAny: a parsed JSON report, read field by field in assertions
export type Report = Record<string, any>;

/** Exit code, or the signal name when a process was killed (what spawnSide reports). */
export type ExitCode = number | string;

export const ERROR_LINE = /^switchover-(source|destination): MIG_ERR_[A-Z_]+: /;
export const STACK_LINE = /^\s+at /;

/** A temp directory removed at teardown. */
export async function tempDir(t: Test, prefix = 'switchover-it-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export interface Started extends Side {
  role: Role;
}

/** Starts one side; it is SIGKILLed (and awaited, bounded) at teardown if it still runs. */
export function startSide(t: Test, role: Role, args: string[], opts: SpawnOptions = {}): Started {
  const side = spawnSide(role, args, opts);
  t.teardown(async () => {
    side.kill('SIGKILL');
    await bounded(side.exited, 5000);
  });
  return { ...side, role };
}

/** Resolves with the exit code, or SIGKILLs the process at the deadline and resolves 'timeout'. */
export async function waitExit(side: Side, timeoutMs: number): Promise<ExitCode | 'timeout'> {
  const r = await bounded(side.exited, timeoutMs);
  if (r === TIMEOUT) {
    side.kill('SIGKILL');
    await bounded(side.exited, 5000);
    return 'timeout';
  }
  return r;
}

export interface StartedDestination extends Started {
  /** HOST:PORT as printed on the first stdout line. */
  address: string;
  host: string;
  port: number;
}

/**
 * `destination --listen 127.0.0.1:0 ...args`; waits (bounded) for the address line. Throws, with the
 * destination's stderr, if it exits or prints something else first.
 */
export async function startDestination(
  t: Test,
  args: string[],
  opts: SpawnOptions & { timeoutMs?: number } = {},
): Promise<StartedDestination> {
  const side = startSide(t, 'destination', ['--listen', '127.0.0.1:0', ...args], opts);
  const first = await bounded(side.firstLine, opts.timeoutMs ?? 20_000);
  const m = typeof first === 'string' ? /^(.*):(\d+)$/.exec(first) : null;
  if (!m) {
    side.kill('SIGKILL');
    await bounded(side.exited, 5000);
    throw new Error(
      `destination did not print its address (${first === TIMEOUT ? 'timeout' : JSON.stringify(first)}); stderr: ${side.stderrLines.join(' | ')}`,
    );
  }
  return { ...side, address: first as string, host: m[1]!, port: Number(m[2]) };
}

/** Resolves with the first stderr line that satisfies `pred` (lines already seen count), or null at the deadline. */
export async function waitStderrLine(
  side: Side,
  pred: (line: string) => boolean,
  timeoutMs: number,
): Promise<string | null> {
  const deadline = Date.now() + timeoutMs;
  let seen = 0;
  for (;;) {
    for (; seen < side.stderrLines.length; seen++) {
      const l = side.stderrLines[seen]!;
      if (pred(l)) return l;
    }
    if (side.child.exitCode !== null || side.child.signalCode !== null || Date.now() > deadline) {
      // one last look at lines that arrived with the exit
      for (; seen < side.stderrLines.length; seen++)
        if (pred(side.stderrLines[seen]!)) return side.stderrLines[seen]!;
      return null;
    }
    await sleep(10);
  }
}

export interface MigrationOptions {
  /** Guest RAM, given to both sides (the destination preallocates it). */
  ram?: string;
  /** --capabilities for both sides (default 'return-path': integrity and self-check come back on it). */
  capabilities?: string;
  /** Extra arguments for the source only. */
  source?: string[];
  /** Extra arguments for the destination only. */
  destination?: string[];
  /** Override --capabilities on the destination (capability mismatch cases). */
  destinationCapabilities?: string;
  /** Override --ram on the destination (size mismatch cases). */
  destinationRam?: string;
  /** Write --dump-ram on both sides and compare them (default true). */
  dumpRam?: boolean;
  /** Overall bound for both processes; both are SIGKILLed when it passes (default 40 s). */
  timeoutMs?: number;
  /** Source connects here instead of the destination (a relay); gets the destination address. */
  connectVia?: (destination: StartedDestination) => Promise<string> | string;
  /** Called once the destination listens, before the source starts (e.g. stray connections). */
  beforeSource?: (destination: StartedDestination) => Promise<void> | void;
  /** Called once both processes run: inject faults (signals, kills). */
  during?: (ctx: { source: Started; destination: StartedDestination }) => Promise<void> | void;
  /** Expected outcome; tests read it, the runner only records it. */
  expect?: Expect;
}

export interface MigrationResult {
  srcCode: ExitCode | 'timeout';
  dstCode: ExitCode | 'timeout';
  srcReport: Report | null;
  dstReport: Report | null;
  srcStderr: string[];
  dstStderr: string[];
  srcStdout: string[];
  dstStdout: string[];
  /** Both dumps exist and are byte-identical; null if either file is missing (or dumps were off). */
  dumpsEqual: boolean | null;
  srcDumpExists: boolean;
  dstDumpExists: boolean;
  /** Either process had to be killed at the overall deadline. */
  timedOut: boolean;
  /** Wall time from starting the source to both exits, ms. */
  elapsedMs: number;
  dir: string;
}

/**
 * Runs one migration: a destination (prealloc --ram, --capabilities, --json, --dump-ram) and a source
 * connecting to it (or to `connectVia`), waits for both to exit within `timeoutMs`, reads both JSON
 * reports and compares the RAM dumps.
 */
export async function runMigration(t: Test, opts: MigrationOptions = {}): Promise<MigrationResult> {
  const dir = await tempDir(t);
  const ram = opts.ram ?? '32M';
  const caps = opts.capabilities ?? 'return-path';
  const dumps = opts.dumpRam ?? true;
  const files = {
    srcJson: join(dir, 'source.json'),
    dstJson: join(dir, 'destination.json'),
    srcRam: join(dir, 'source.ram'),
    dstRam: join(dir, 'destination.ram'),
  };
  const timeoutMs = opts.timeoutMs ?? 40_000;
  const deadline = Date.now() + timeoutMs;
  const destination = await startDestination(
    t,
    [
      '--ram',
      opts.destinationRam ?? ram,
      '--capabilities',
      opts.destinationCapabilities ?? caps,
      '--json',
      files.dstJson,
      '--quiet',
      ...(dumps ? ['--dump-ram', files.dstRam] : []),
      ...(opts.destination ?? []),
    ],
    { timeoutMs: Math.min(20_000, timeoutMs) },
  );
  await opts.beforeSource?.(destination);
  const connect = opts.connectVia ? await opts.connectVia(destination) : destination.address;
  const started = Date.now();
  const source = startSide(t, 'source', [
    '--connect',
    connect,
    '--ram',
    ram,
    '--capabilities',
    caps,
    '--json',
    files.srcJson,
    ...(dumps ? ['--dump-ram', files.srcRam] : []),
    ...(opts.source ?? []),
  ]);
  const both = Promise.all([source.exited, destination.exited]);
  const during = opts.during ? Promise.resolve(opts.during({ source, destination })) : Promise.resolve();
  const finished = await bounded(Promise.all([both, during]), Math.max(1, deadline - Date.now()));
  const timedOut = finished === TIMEOUT;
  const hung = new Set<Side>();
  if (timedOut) {
    for (const s of [source, destination]) {
      if (s.child.exitCode === null && s.child.signalCode === null) hung.add(s);
      s.kill('SIGKILL');
    }
    await bounded(both, 5000);
  }
  const code = (s: Side): ExitCode | 'timeout' =>
    hung.has(s) ? 'timeout' : (s.child.exitCode ?? s.child.signalCode ?? -1);
  const [srcReport, dstReport] = await Promise.all([
    readJsonFile(files.srcJson),
    readJsonFile(files.dstJson),
  ]);
  const [srcDumpExists, dstDumpExists] = await Promise.all([
    fileExists(files.srcRam),
    fileExists(files.dstRam),
  ]);
  let dumpsEqual: boolean | null = null;
  if (srcDumpExists && dstDumpExists) {
    const [a, b] = await Promise.all([readFile(files.srcRam), readFile(files.dstRam)]);
    dumpsEqual = a.length > 0 && a.equals(b);
  }
  return {
    srcCode: code(source),
    dstCode: code(destination),
    srcReport,
    dstReport,
    srcStderr: source.stderrLines,
    dstStderr: destination.stderrLines,
    srcStdout: source.stdoutLines,
    dstStdout: destination.stdoutLines,
    dumpsEqual,
    srcDumpExists,
    dstDumpExists,
    timedOut,
    elapsedMs: Date.now() - started,
    dir,
  };
}

/**
 * The one-line-error rule: among the lines that are not progress lines, exactly one looks like
 * `switchover-(source|destination): MIG_ERR_X: message`, it matches `codeRegex`, and no line looks
 * like a stack frame. Returns the error line (or undefined).
 */
export function assertOneLineError(t: Test, stderrLines: string[], codeRegex: RegExp): string | undefined {
  const lines = stderrLines.filter((l) => !l.startsWith('progress '));
  const errors = lines.filter((l) => ERROR_LINE.test(l));
  const stack = lines.filter((l) => STACK_LINE.test(l));
  t.equal(errors.length, 1, 'exactly one error line on stderr', { found: errors, stderr: lines });
  t.equal(stack.length, 0, 'no stack trace on stderr', { found: stack });
  const line = errors[0];
  if (line !== undefined) t.match(line, codeRegex, `the error line names ${codeRegex}`);
  return line;
}

/** No error line and no stack trace (a side that succeeded). */
export function assertNoErrorLine(t: Test, stderrLines: string[]): void {
  const lines = stderrLines.filter((l) => !l.startsWith('progress '));
  t.same(
    lines.filter((l) => ERROR_LINE.test(l) || STACK_LINE.test(l)),
    [],
    'no error line and no stack trace on stderr',
  );
}

/** The source's first progress line satisfying `pred` (default: any), or null at the deadline or exit. */
export async function waitProgress(
  side: Side,
  timeoutMs: number,
  pred: (p: Record<string, string>) => boolean = () => true,
): Promise<Record<string, string> | null> {
  const line = await waitStderrLine(
    side,
    (l) => {
      const p = parseProgress(l);
      return p !== null && pred(p);
    },
    timeoutMs,
  );
  return line === null ? null : parseProgress(line);
}

/** Sends a signal to a live process by pid (SIGSTOP/SIGCONT included); false if it is gone. */
export function signal(side: Side, sig: NodeJS.Signals): boolean {
  if (side.child.exitCode !== null || side.child.signalCode !== null || side.child.pid === undefined)
    return false;
  try {
    process.kill(side.child.pid, sig);
    return true;
  } catch {
    return false;
  }
}

/** Parses `progress key=value ...` into a record (null for other lines). */
export function parseProgress(line: string): Record<string, string> | null {
  if (!line.startsWith('progress ')) return null;
  const out: Record<string, string> = {};
  for (const kv of line.slice('progress '.length).split(' ')) {
    const i = kv.indexOf('=');
    if (i > 0) out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}

export const TIMEOUT: unique symbol = Symbol('timeout');

/** The promise's value, or TIMEOUT after `ms` (the timer never keeps the process alive). */
export function bounded<T>(p: Promise<T>, ms: number): Promise<T | typeof TIMEOUT> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<typeof TIMEOUT>((resolve) => {
    timer = setTimeout(() => resolve(TIMEOUT), ms);
    timer.unref();
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `pred` every 10 ms; true once it holds, false at the deadline. */
export async function waitFor(pred: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) return false;
    await sleep(10);
  }
  return true;
}

export async function readJsonFile(path: string): Promise<Report | null> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as Report;
  } catch {
    return null;
  }
}

export async function fileExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Sets environment variables for the rest of test `t` (children started meanwhile inherit them:
 * that is how test-only fault hooks reach the page workers) and removes them at its end.
 */
export function withEnv(t: Test, vars: Record<string, string>): void {
  for (const [k, v] of Object.entries(vars)) process.env[k] = v;
  t.teardown(() => {
    for (const k of Object.keys(vars)) delete process.env[k];
  });
}

/**
 * The outcome every successful migration must show: both processes exit 0, the migration completed,
 * the RAM dumps are byte-identical, the image digests match and the resumed guest finds its memory
 * consistent. Failure messages carry each side's non-progress stderr.
 */
export function assertVerifiedMigration(t: Test, r: MigrationResult): void {
  const errors = (lines: string[]) => lines.filter((l) => !l.startsWith('progress')).join(' | ');
  t.equal(r.srcCode, 0, `source exits 0 (${errors(r.srcStderr)})`);
  t.equal(r.dstCode, 0, `destination exits 0 (${errors(r.dstStderr)})`);
  t.equal(r.srcReport?.status, 'completed', 'the migration completed');
  t.equal(r.dumpsEqual, true, 'source and destination RAM are byte-identical');
  t.equal(r.srcReport?.integrity?.match, true, 'image digests match');
  t.equal(r.dstReport?.guest?.['self-check']?.ok, true, 'the guest finds its memory consistent');
}
