/**
 * Small pieces of the scenario runner: bounded waits, report and dump reading, the engine's trace
 * lines (SWITCHOVER_TRACE=1 JSON on stderr, `t` = monotonic ms shared by every process on the host),
 * the source's phase at a given time, and the trigger that recognises the targeted phase live.
 */
import { readFile, stat } from 'node:fs/promises';
import type { Report } from './outcome.js';
import type { Scenario } from './scenarios.js';

export interface Trace {
  event: string;
  t: number;
  [k: string]: unknown;
}

export const now = () => Number(process.hrtime.bigint()) / 1e6;
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const r1 = (n: number) => Math.round(n);

export async function bounded<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<'timeout'>((r) => {
    timer = setTimeout(() => r('timeout'), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

export async function readJson(path: string): Promise<Report | null> {
  try {
    return JSON.parse(await readFile(path, 'utf8'));
  } catch {
    return null;
  }
}

export const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );

export async function sameBytes(a: string, b: string): Promise<boolean | null> {
  if (!(await exists(a)) || !(await exists(b))) return null;
  return (await readFile(a)).equals(await readFile(b));
}

export function parseTrace(lines: string[]): Trace[] {
  const out: Trace[] = [];
  for (const l of lines) {
    if (!l.startsWith('{')) continue;
    try {
      out.push(JSON.parse(l));
    } catch {}
  }
  return out;
}

/** The source's phase at time t, from its trace (state changes, ACK-wait detection). */
export function phaseAt(trace: Trace[], t: number, ackCap: boolean): string {
  let state = 'none';
  let underThreshold = false;
  let acked = false;
  for (const e of trace) {
    if (e.t > t) break;
    if (e.event === 'mig:state') state = String(e.to);
    if (e.event === 'mig:dirty-sync' && Number(e.pending) <= Number(e.threshold)) underThreshold = true;
    if (e.event === 'mig:switchover-ack') acked = true;
  }
  if (state === 'active') return ackCap && underThreshold && !acked ? 'ack-wait' : 'iteration';
  return state === 'device' ? 'switchover' : state;
}

export function matches(sc: Scenario, line: string): boolean {
  const tr = sc.trigger;
  if (tr.on === 'progress') {
    const m = /^progress status=active elapsed-ms=(\d+)/.exec(line);
    return !!m && Number(m[1]) >= tr.elapsedMs;
  }
  if (!line.startsWith('{')) return false;
  if (tr.on === 'state') return line.includes('"mig:state"') && line.includes(`"to":"${tr.to}"`);
  if (tr.on === 'page-channels') return line.includes('"mig:page-channels"');
  if (tr.on === 'ack-wait' && line.includes('"mig:dirty-sync"')) {
    const e = JSON.parse(line) as Trace;
    return Number(e.pending) <= Number(e.threshold);
  }
  return false;
}
