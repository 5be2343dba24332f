/**
 * Small helpers for the switchover-ack integration tests: a real destination and a real source, each
 * a separate Node process (scripts/lib/spawn-side.ts) on loopback TCP, with SWITCHOVER_TRACE=1 so the
 * trace records (JSON lines on stderr) can be asserted.
 *
 * Every wait is bounded. Every process is SIGKILLed (and awaited, bounded) and every temp directory
 * removed in `t.teardown`, so a failed or thrown assertion never leaves anything behind.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { type Side, spawnSide } from '../../scripts/lib/spawn-side.js';

// biome-ignore lint/suspicious/noExplicitAny: a parsed JSON report, read field by field in assertions
export type Report = Record<string, any>;

export interface TraceRec {
  role: 'source' | 'destination';
  event: string;
  t: number;
  [field: string]: unknown;
}

export interface AckSide extends Side {
  role: 'source' | 'destination';
  /** Wall-clock ms when the process was spawned. */
  startedAt: number;
  /** Wall-clock ms when it exited (null while it runs). */
  exitedAt(): number | null;
  /** Trace records parsed so far from stderr (lines that are JSON objects with an `event`). */
  trace(): TraceRec[];
  /** Stderr lines that are not trace records (error lines, usage text). */
  plainStderr(): string[];
}

import { bounded, sleep, TIMEOUT, waitExit } from './pair.js';

export { bounded, sleep, TIMEOUT, waitExit };

/** A temp directory, removed at teardown. */
export async function tempDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'switchover-ack-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function parseTraceLine(line: string): TraceRec | null {
  if (!line.startsWith('{')) return null;
  try {
    const rec = JSON.parse(line) as TraceRec;
    return typeof rec.event === 'string' ? rec : null;
  } catch {
    return null;
  }
}

/** Starts one side with tracing on; SIGKILLed at teardown if it still runs. */
export function start(t: Test, role: 'source' | 'destination', args: string[]): AckSide {
  const side = spawnSide(role, args, { env: { SWITCHOVER_TRACE: '1' } });
  const startedAt = Date.now();
  let exitedAt: number | null = null;
  void side.exited.then(() => {
    exitedAt = Date.now();
  });
  t.teardown(async () => {
    side.kill('SIGKILL');
    await bounded(side.exited, 5000);
  });
  return {
    ...side,
    role,
    startedAt,
    exitedAt: () => exitedAt,
    trace: () => side.stderrLines.map(parseTraceLine).filter((r): r is TraceRec => r !== null),
    plainStderr: () => side.stderrLines.filter((l) => parseTraceLine(l) === null),
  };
}

export interface Destination extends AckSide {
  address: string;
}

/** `destination --listen 127.0.0.1:0 ...args`; waits (bounded) for the HOST:PORT line. */
export async function startDestination(t: Test, args: string[]): Promise<Destination> {
  const side = start(t, 'destination', ['--listen', '127.0.0.1:0', ...args]);
  const first = await bounded(side.firstLine, 20_000);
  if (typeof first !== 'string' || !/^.+:\d+$/.test(first)) {
    side.kill('SIGKILL');
    throw new Error(
      `destination did not print its address (${first === TIMEOUT ? 'timeout' : JSON.stringify(first)}); stderr: ${side.stderrLines.join(' | ')}`,
    );
  }
  return { ...side, address: first };
}

export function running(side: Side): boolean {
  return side.child.exitCode === null && side.child.signalCode === null;
}

export async function readJson(path: string): Promise<Report | null> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as Report;
  } catch {
    return null;
  }
}

/** The last few non-iteration stderr lines, for assertion diagnostics. */
export function tail(side: AckSide, n = 25): string[] {
  return side.stderrLines
    .filter((l) => !l.includes('"mig:iteration"') && !l.includes('"mig:dirty-sync"'))
    .slice(-n);
}

export interface PairOptions {
  /** --capabilities for the destination. */
  dstCaps: string;
  /** --capabilities for the source. */
  srcCaps: string;
  ram?: string;
  dirtyRate?: string;
  devices?: string[];
  extraSource?: string[];
}

export interface Pair {
  dir: string;
  destination: Destination;
  source: AckSide;
  srcJson: string;
  dstJson: string;
}

/**
 * Starts a destination (same --ram as the source, as both QEMU sides get the same machine config) and
 * a source connecting to it: `--ram 32M --dirty-rate 4M --quiet` plus the devices.
 */
export async function startPair(t: Test, o: PairOptions): Promise<Pair> {
  const dir = await tempDir(t);
  const srcJson = join(dir, 'source.json');
  const dstJson = join(dir, 'destination.json');
  const ram = o.ram ?? '32M';
  const destination = await startDestination(t, [
    '--ram',
    ram,
    '--capabilities',
    o.dstCaps,
    '--json',
    dstJson,
    '--quiet',
  ]);
  const source = start(t, 'source', [
    '--connect',
    destination.address,
    '--capabilities',
    o.srcCaps,
    '--ram',
    ram,
    '--dirty-rate',
    o.dirtyRate ?? '4M',
    ...(o.devices ?? []).flatMap((d) => ['--device', d]),
    '--json',
    srcJson,
    '--quiet',
    ...(o.extraSource ?? []),
  ]);
  return { dir, destination, source, srcJson, dstJson };
}

/** Resolves with the first trace record matching `pred` (bounded), or null if the process exits or time runs out. */
export async function waitTrace(
  side: AckSide,
  pred: (r: TraceRec) => boolean,
  timeoutMs: number,
): Promise<TraceRec | null> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = side.trace().find(pred);
    if (hit) return hit;
    if (!running(side) || Date.now() > deadline) return side.trace().find(pred) ?? null;
    await sleep(20);
  }
}
