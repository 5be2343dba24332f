/**
 * `npm run bench:converge [-- --runs N] [--quick] [--only none,auto-converge,dirty-limit,pause,stepping]`
 * — how a migration that cannot converge ends, one row per choice, each run as two real processes
 * over loopback (`npm start`'s pair), against the raw-TCP baseline measured in the same run.
 *
 * Workload (the issue's): a 1 GiB guest rewriting its 256 MiB hot set as fast as its vCPU can, behind
 * `--max-bandwidth 64M`: it never gets its remainder under the 300 ms downtime limit at that rate.
 * `--quick`: 256 MiB guest, 64 MiB hot set, 16 MiB/s, shorter timeouts. No outside probe.
 *
 *   none           no help: `--timeout` (120 s; quick 40 s) ends it with MIG_ERR_NOT_CONVERGING
 *   auto-converge  QEMU's vCPU throttle, QEMU defaults (20 %, +10 %, up to 99 %)
 *   dirty-limit    QEMU 8.1's per-vCPU dirty quota, default 1 MB/s
 *   pause          completion timeout 30 s per GiB (quick 15 s), action pause (KubeVirt's suspend)
 *   stepping       Nova's downtime steps: 6 steps up to hot set ÷ link rate × 1.5 (6000 ms), one every
 *                  10 s (quick 5 s)
 * Every row but `none` has a `--timeout` safety bound (300 s; quick 120 s); every run writes
 * `--dump-ram` and, when it completed, its two files are compared byte for byte. Runs are interleaved
 * (run 1 of every row, then run 2, ...), each paired with a raw-TCP measurement taken just before it,
 * and killed at a hard deadline well above its --timeout. Prints a table and a legend; writes every
 * run's raw figures to bench/results/converge-<timestamp>.json.
 *
 * Exit 0 when every run ended as a result: `none` failing (expected), and a policy row that did not
 * converge within its safety bound (MIG_ERR_NOT_CONVERGING: printed as a note, the table shows it).
 * Exit 1 when a run that should complete did not end as a result — completed but not verified (the
 * dumps differ, integrity.match or the self-check failed), another error code, no report, killed at the
 * hard deadline — with why on stderr. 2 bad usage.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { scriptArgs } from '../../shared/cli/script-args.js';
import { sameFiles } from '../lib/same-files.js';
import { ROOT } from '../lib/spawn-side.js';
import { activeDamon, machineNote } from './machine.js';
import { measureRawTcp } from './raw-tcp.js';
import { fmt, type Spread, spread, table, writeResult } from './stats.js';

const PROG = 'bench:converge';
const ROW_NAMES = ['none', 'auto-converge', 'dirty-limit', 'pause', 'stepping'] as const;
type RowName = (typeof ROW_NAMES)[number];

const values = scriptArgs(
  PROG,
  `usage: npm run bench:converge [-- --runs N] [--quick] [--only LIST] [--dirty-rate RATE]

How a migration that cannot converge ends: a 1 GiB guest rewriting a 256 MiB hot set as fast as it
can, behind a 64 MiB/s link (--quick: 256 MiB, 64 MiB, 16 MiB/s), one row per choice: none (it
times out), auto-converge, dirty-limit, pause (completion timeout, action pause), stepping (downtime
steps). Two real processes over loopback against raw TCP measured in the same run; outcome, times,
downtimes (also as computed for the modelled link), throttle reached, decisions and the guest
progress lost. Table + legend; JSON under bench/results/. Exit 1 when a run that should complete
did not complete verified for another reason than not converging within its safety bound.
  --runs N     runs per row, interleaved (default 3)
  --quick      the smaller guest and link, shorter timeouts
  --only LIST  rows to run (default ${ROW_NAMES.join(',')})
  --dirty-rate RATE  the guest's write rate (default max: as fast as the vCPU can; e.g. 256M, a
               writer auto-converge can slow below the link)`,
  {
    runs: { type: 'string', default: '3' },
    quick: { type: 'boolean', default: false },
    'dirty-rate': { type: 'string', default: 'max' },
    only: { type: 'string', default: ROW_NAMES.join(',') },
  },
);

function usageError(message: string): never {
  process.stderr.write(`${PROG}: MIG_ERR_USAGE: ${message} (see 'npm run ${PROG} -- --help')\n`);
  process.exit(2);
}

const DIRTY_RATE = values['dirty-rate'];
if (DIRTY_RATE !== 'max' && !/^\d+(\.\d+)?[KMG]?$/i.test(DIRTY_RATE))
  usageError(`--dirty-rate: '${DIRTY_RATE}' is not a rate (examples: max, 256M)`);
const RUNS = Number(values.runs);
if (!Number.isInteger(RUNS) || RUNS < 1 || RUNS > 100)
  usageError(`--runs: '${values.runs}' is not a whole number 1..100`);
const QUICK = values.quick;
const ONLY = values.only
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
for (const name of ONLY)
  if (!(ROW_NAMES as readonly string[]).includes(name))
    usageError(`--only: unknown row '${name}' (rows: ${ROW_NAMES.join(', ')})`);
if (ONLY.length === 0) usageError('--only: no row given');

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
const RAM = QUICK ? 256 * MiB : GiB;
const HOT = QUICK ? 64 * MiB : 256 * MiB;
/** The modelled link: --max-bandwidth, bytes/s (the engine's M is binary). */
const LINK = QUICK ? 16 * MiB : 64 * MiB;
const NONE_TIMEOUT_MS = QUICK ? 40_000 : 120_000;
/** The safety bound of the rows that should complete by themselves. */
const SAFETY_TIMEOUT_MS = QUICK ? 120_000 : 180_000;
const COMPLETION_PER_GIB_MS = QUICK ? 15_000 : 30_000;
/** Downtime stepping's maximum covers sending the whole hot set at the link rate, × 1.5. */
const STEP_MAX_MS = Math.ceil(((HOT / LINK) * 1.5 * 1000) / 100) * 100;
const STEP_COUNT = 6;
const STEP_DELAY_MS = QUICK ? 5_000 : 10_000;
/** Without `none` in --only: one short unthrottled run gives the guest's reference tick rate. */
const REFERENCE_TIMEOUT_MS = 20_000;
/**
 * A run's hard deadline beyond its --timeout: guest boot and destination preallocation before it,
 * the RAM dumps, the destination's self-check and the pair's own bounded waits after it.
 */
const DEADLINE_MARGIN_MS = QUICK ? 120_000 : 240_000;
/** At the deadline: SIGTERM (the pair cancels the migration), then a second (it ends both sides), then SIGKILL. */
const CANCEL_GRACE_MS = 10_000;
const END_GRACE_MS = 5_000;

const SIZE = (bytes: number) => `${bytes / MiB}M`;
const workload = [
  '--ram',
  SIZE(RAM),
  '--dirty-range',
  SIZE(HOT),
  '--dirty-rate',
  DIRTY_RATE,
  '--max-bandwidth',
  SIZE(LINK),
  '--probe-interval',
  '0',
];

interface Row {
  name: RowName;
  args: string[];
  /** False for `none`: its expected end is MIG_ERR_NOT_CONVERGING. */
  shouldComplete: boolean;
  timeoutMs: number;
}

const rowArgs: Record<RowName, string[]> = {
  none: ['--capabilities', 'return-path,multifd', '--timeout', String(NONE_TIMEOUT_MS)],
  'auto-converge': [
    '--capabilities',
    'return-path,multifd,auto-converge',
    '--timeout',
    String(SAFETY_TIMEOUT_MS),
  ],
  'dirty-limit': [
    '--capabilities',
    'return-path,multifd,dirty-limit',
    '--timeout',
    String(SAFETY_TIMEOUT_MS),
  ],
  pause: [
    '--capabilities',
    'return-path,multifd',
    '--completion-timeout-per-gib',
    String(COMPLETION_PER_GIB_MS),
    '--completion-timeout-action',
    'pause',
    '--timeout',
    String(SAFETY_TIMEOUT_MS),
  ],
  stepping: [
    '--capabilities',
    'return-path,multifd',
    '--downtime-max',
    String(STEP_MAX_MS),
    '--downtime-steps',
    String(STEP_COUNT),
    '--downtime-step-delay',
    String(STEP_DELAY_MS),
    '--timeout',
    String(SAFETY_TIMEOUT_MS),
  ],
};

const rows: Row[] = ROW_NAMES.filter((n) => ONLY.includes(n)).map((name) => ({
  name,
  args: [...workload, ...rowArgs[name]],
  shouldComplete: name !== 'none',
  timeoutMs: name === 'none' ? NONE_TIMEOUT_MS : SAFETY_TIMEOUT_MS,
}));

// biome-ignore lint/suspicious/noExplicitAny: reports are JSON read back from the child processes
type Report = Record<string, any>;

/** One pair run as it ended: the merged report (or a stand-in), how it ended, what it printed last. */
interface PairEnd {
  report: Report;
  exit: number | string;
  wallMs: number;
  killedAtDeadline: boolean;
  dumpsEqual: boolean | null;
  stderrTail: string[];
}

const work = await mkdtemp(join(tmpdir(), 'bench-converge-'));
let current: ChildProcess | null = null;

/** Ends the current pair (it is its own process group; the sides end with their runner). */
async function endPair(c: ChildProcess): Promise<void> {
  const alive = () => c.exitCode === null && c.signalCode === null;
  const exited = new Promise<void>((r) => (alive() ? c.once('exit', () => r()) : r()));
  const wait = (ms: number) => Promise.race([exited, new Promise((r) => setTimeout(r, ms).unref())]);
  if (!alive()) return;
  c.kill('SIGTERM'); // the pair cancels the migration (the source reports 'cancelled')
  await wait(CANCEL_GRACE_MS);
  if (!alive()) return;
  c.kill('SIGTERM'); // a second one: the pair kills both sides and exits
  await wait(END_GRACE_MS);
  if (!alive() || c.pid === undefined) return;
  try {
    process.kill(-c.pid, 'SIGKILL');
  } catch {
    // already gone
  }
  await wait(END_GRACE_MS);
}

let interrupted = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const)
  process.on(signal, () => {
    if (interrupted) return;
    interrupted = true;
    process.stderr.write(`${PROG}: ${signal}: stopping the current run and cleaning up\n`);
    void (async () => {
      if (current) await endPair(current);
      await rm(work, { recursive: true, force: true });
      process.exit(signal === 'SIGINT' ? 130 : 143);
    })();
  });

/** After a signal nothing new starts: the handler ends the current pair, cleans up and exits. */
async function untilInterrupted(): Promise<void> {
  if (interrupted) await new Promise(() => {});
}

function runPair(args: string[], deadlineMs: number): Promise<Omit<PairEnd, 'report' | 'dumpsEqual'>> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const c = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts/run-pair.ts'), ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', 'pipe'],
      // its own process group: a terminal's Ctrl-C reaches this script, which ends the pair itself
      detached: true,
    });
    current = c;
    const tail: string[] = [];
    let partial = '';
    c.stderr!.setEncoding('utf8');
    c.stderr!.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      tail.push(...lines);
      if (tail.length > 30) tail.splice(0, tail.length - 30);
    });
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      void endPair(c);
    }, deadlineMs);
    c.on('exit', (code, signal) => {
      clearTimeout(timer);
      current = null;
      if (partial) tail.push(partial);
      resolve({
        exit: code ?? signal ?? -1,
        wallMs: performance.now() - t0,
        killedAtDeadline: killed,
        stderrTail: tail,
      });
    });
  });
}

async function migrate(args: string[], tag: string, deadlineMs: number, dump: boolean): Promise<PairEnd> {
  const json = join(work, `${tag}.json`);
  const dumpDir = join(work, `${tag}-dump`);
  const end = await runPair(
    [...args, '--quiet', '--json', json, ...(dump ? ['--dump-ram', dumpDir] : [])],
    deadlineMs,
  );
  const report: Report = JSON.parse(
    await readFile(json, 'utf8').catch(
      () =>
        `{"status":"no report","error-code":"${end.killedAtDeadline ? 'killed at the hard deadline' : `pair exited ${end.exit} without a report`}"}`,
    ),
  );
  let dumpsEqual: boolean | null = null;
  if (dump && report.status === 'completed')
    dumpsEqual = await sameFiles(join(dumpDir, 'source.ram'), join(dumpDir, 'destination.ram'));
  await rm(dumpDir, { recursive: true, force: true });
  await rm(json, { force: true });
  return { ...end, report, dumpsEqual };
}

/** Why a completed run is not verified (empty = verified). */
function verifyProblems(e: PairEnd): string[] {
  const r = e.report;
  const why: string[] = [];
  if (r.integrity?.match !== true) why.push(`integrity.match ${r.integrity?.match}`);
  if (r.guest?.['self-check']?.ok !== true)
    why.push(`guest self-check ${JSON.stringify(r.guest?.['self-check'] ?? 'missing')}`);
  if (e.dumpsEqual !== true) why.push('source.ram and destination.ram differ (or one is missing)');
  if (r['exit-codes'] && (r['exit-codes'].source !== 0 || r['exit-codes'].destination !== 0))
    why.push(`exit codes ${JSON.stringify(r['exit-codes'])}`);
  return why;
}

/** Figures of one run, derived from its report (see the legend for each). */
interface Figures {
  outcome: string;
  verified: boolean;
  /** dst-loadvm-completed → dst-vm-started: the destination's RAM dump, written inside the downtime. */
  dumpMs: number;
  totalS: number;
  downtimeMs: number;
  observedMs: number;
  downtimeAtLinkMs: number;
  downtimeBytes: number;
  /** dst-switchover-start → dst-loadvm-completed: the final round (and the device state) on loopback. */
  finalRoundMs: number;
  ticks: number;
  tickRate: number;
  rateBps: number;
  ratioToRaw: number;
  decisions: number;
  firstDecisionS: number;
  reached: number;
  cpuThrottledMs: number;
  dirtyLimitSleptMs: number;
}

function figures(e: PairEnd, rawBps: number): Figures {
  const r = e.report;
  const completed = r.status === 'completed';
  const b = r['downtime-breakdown'] ?? {};
  const dumpMs =
    completed && typeof b['dst-vm-started'] === 'number' && typeof b['dst-loadvm-completed'] === 'number'
      ? b['dst-vm-started'] - b['dst-loadvm-completed']
      : 0;
  const totalMs = (r['total-time'] ?? Number.NaN) - dumpMs;
  const downtimeMs = completed ? r.downtime - dumpMs : Number.NaN;
  const observedMs = completed ? (r.guest?.['observed-downtime'] ?? Number.NaN) - dumpMs : Number.NaN;
  const downtimeBytes = completed ? (r.ram?.['downtime-bytes'] ?? 0) : Number.NaN;
  // the final round's window on loopback: SWITCHOVER_START reaching the destination → everything
  // loaded (one clock: the pair runs both sides on one host); without the checkpoints, the raw TCP rate's
  const finalRoundMs =
    typeof b['dst-loadvm-completed'] === 'number' && typeof b['dst-switchover-start'] === 'number'
      ? b['dst-loadvm-completed'] - b['dst-switchover-start']
      : (downtimeBytes / rawBps) * 1000;
  // that window is at least the final round's loopback time: the link would add what it lacks
  const downtimeAtLinkMs = downtimeMs + Math.max(0, (downtimeBytes / LINK) * 1000 - finalRoundMs);
  // the guest's ticks during the migration (the report has them at its start since this version)
  const ticks = (r.guest?.ticks ?? Number.NaN) - (r.guest?.['ticks-at-start'] ?? 0);
  const decisions: Report[] = r.convergence?.decisions ?? [];
  const c = r.convergence ?? {};
  let reached = Number.NaN;
  const last = (event: string) => decisions.filter((d) => d.event === event).at(-1)?.value;
  if (r.capabilities?.includes('auto-converge')) reached = c['cpu-throttle-max'] ?? 0;
  else if (r.capabilities?.includes('dirty-limit')) reached = last('dirty-limit') ?? Number.NaN;
  else if (decisions.some((d) => d.event === 'downtime-step')) reached = last('downtime-step');
  const verified = completed && verifyProblems(e).length === 0;
  return {
    outcome: completed
      ? verified
        ? 'completed+verified'
        : 'completed NOT verified'
      : `${r.status} ${r['error-code'] ?? ''}`.trim(),
    verified,
    dumpMs,
    totalS: totalMs / 1000,
    downtimeMs,
    observedMs,
    downtimeAtLinkMs,
    downtimeBytes,
    finalRoundMs: completed ? finalRoundMs : Number.NaN,
    ticks,
    tickRate: ticks / (totalMs / 1000),
    rateBps: (r.ram?.transferred ?? Number.NaN) / (totalMs / 1000),
    ratioToRaw: (r.ram?.transferred ?? Number.NaN) / (totalMs / 1000) / rawBps,
    decisions: decisions.length,
    firstDecisionS: decisions.length ? decisions[0]!['at-ms'] / 1000 : Number.NaN,
    reached,
    cpuThrottledMs: c['cpu-throttled-ms'] ?? 0,
    dirtyLimitSleptMs: c['dirty-limit-slept-ms'] ?? 0,
  };
}

interface Run {
  run: number;
  rawBps: number;
  args: string[];
  wallMs: number;
  exit: number | string;
  killedAtDeadline: boolean;
  dumpsEqual: boolean | null;
  figures: Figures;
  /** Filled in once the reference tick rate is known. */
  progressLost: number;
  stderrTail: string[];
  report: Report;
}

const started = performance.now();
const rawRates: number[] = [];
const results = rows.map((row) => ({ row, runs: [] as Run[] }));
let reference: { how: string; rate: number; runs: Report[] };
try {
  for (let i = 0; i < RUNS; i++) {
    for (const res of results) {
      const { row } = res;
      await untilInterrupted();
      const rawBps = await measureRawTcp(QUICK ? 256 * MiB : GiB);
      rawRates.push(rawBps);
      await untilInterrupted();
      const e = await migrate(row.args, `${row.name}-${i}`, row.timeoutMs + DEADLINE_MARGIN_MS, true);
      const f = figures(e, rawBps);
      res.runs.push({
        run: i + 1,
        rawBps,
        args: row.args,
        wallMs: Math.round(e.wallMs),
        exit: e.exit,
        killedAtDeadline: e.killedAtDeadline,
        dumpsEqual: e.dumpsEqual,
        figures: f,
        progressLost: Number.NaN,
        stderrTail: e.stderrTail,
        report: e.report,
      });
      process.stderr.write(
        `${row.name} run ${i + 1}/${RUNS}: ${f.outcome}, total ${f.totalS.toFixed(1)} s${f.outcome.startsWith('completed') ? `, downtime ${f.downtimeMs.toFixed(0)} ms (@link ${f.downtimeAtLinkMs.toFixed(0)} ms)` : ''}, ${f.decisions} decisions, raw ${(rawBps / 1e9).toFixed(2)} GB/s, wall ${(e.wallMs / 1000).toFixed(0)} s\n`,
      );
    }
  }
  // the guest's unthrottled progress rate: from `none` when it ran, else from one short reference run
  reference = await referenceRate();
} finally {
  if (!interrupted) await rm(work, { recursive: true, force: true }).catch(() => {});
}

async function referenceRate(): Promise<{ how: string; rate: number; runs: Report[] }> {
  const noneRes = results.find((r) => r.row.name === 'none');
  if (noneRes) {
    const rates = noneRes.runs.map((r) => r.figures.tickRate);
    return {
      how: `median over the ${rates.length} 'none' run(s) of ticks during the migration ÷ total-time`,
      rate: spread(rates).median,
      runs: [],
    };
  }
  const refArgs = [...workload, ...rowArgs.none.slice(0, 2), '--timeout', String(REFERENCE_TIMEOUT_MS)];
  await untilInterrupted();
  const e = await migrate(refArgs, 'reference', REFERENCE_TIMEOUT_MS + DEADLINE_MARGIN_MS, false);
  const f = figures(e, Number.NaN);
  return {
    how: `one reference run of the 'none' configuration with --timeout ${REFERENCE_TIMEOUT_MS / 1000} s (not a row): ticks during the migration ÷ total-time`,
    rate: f.tickRate,
    runs: [{ args: refArgs, status: e.report.status, ticks: f.ticks, totalS: f.totalS, report: e.report }],
  };
}

for (const { runs } of results)
  for (const r of runs) r.progressLost = 1 - r.figures.ticks / (reference.rate * r.figures.totalS);
/**
 * How far the reference itself moves: every run whose guest was never throttled gives an unthrottled
 * rate (ticks ÷ the time its guest ran: all of `none`; pause and stepping up to their downtime, which
 * starts at the pause or the switchover). Their spread is the machine's noise, printed beside the table.
 */
const unthrottled = results.flatMap(({ row, runs }) =>
  runs
    .filter((r) => row.name === 'none' || (['pause', 'stepping'].includes(row.name) && r.report.downtime))
    .map((r) => ({
      row: row.name,
      run: r.run,
      ticksPerS:
        row.name === 'none'
          ? r.figures.tickRate
          : r.figures.ticks / ((r.report['total-time'] - r.report.downtime) / 1000),
    })),
);

/** median (min–max), or '-' when no run has the figure. */
const show = (s: Spread, digits: number, unit = '') =>
  Number.isFinite(s.median) ? `${fmt(s, digits)}${unit}` : '-';
// rounded first (+ 0 turns -0 into 0): a lost share of -0.3 % prints as 0 %, not -0 %
const pct = (xs: number[]) => show(spread(xs.map((x) => Math.round(x * 100) + 0)), 0, ' %');

const header = [
  'row',
  'outcome (runs)',
  'total s',
  'downtime ms',
  'guest observed ms',
  'downtime @link ms (computed)',
  'throttle reached',
  'decisions',
  'first decision s',
  'guest progress lost',
  'MB/s (× raw)',
];
const tableRows = [header];
const summary: Record<string, unknown>[] = [];
const failures: string[] = [];
const notes: string[] = [];
for (const { row, runs } of results) {
  const f = runs.map((r) => r.figures);
  const counts = new Map<string, number>();
  for (const x of f) counts.set(x.outcome, (counts.get(x.outcome) ?? 0) + 1);
  const outcome = [...counts].map(([k, n]) => `${n}× ${k}`).join(', ');
  const s = {
    totalS: spread(f.map((x) => x.totalS)),
    downtimeMs: spread(f.map((x) => x.downtimeMs)),
    observedMs: spread(f.map((x) => x.observedMs)),
    downtimeAtLinkMs: spread(f.map((x) => x.downtimeAtLinkMs)),
    reached: spread(f.map((x) => x.reached)),
    decisions: spread(f.map((x) => x.decisions)),
    firstDecisionS: spread(f.map((x) => x.firstDecisionS)),
    progressLost: spread(runs.map((r) => r.progressLost)),
    rateMBps: spread(f.map((x) => x.rateBps / 1e6)),
    ratioToRaw: spread(f.map((x) => x.ratioToRaw)),
    dumpMs: spread(f.map((x) => x.dumpMs)),
  };
  const fired = f.filter((x) => Number.isFinite(x.reached)).length;
  let reached = '-';
  if (row.name === 'auto-converge') reached = show(s.reached, 0, ' %');
  else if (row.name === 'dirty-limit')
    reached = fired ? `limit ${show(s.reached, 0)} MB/s (fired ${fired}/${f.length})` : 'never fired';
  else if (row.name === 'stepping')
    reached = fired ? `limit ${show(s.reached, 0)} ms` : `never stepped (300 ms)`;
  tableRows.push([
    row.name,
    outcome,
    show(s.totalS, 1),
    show(s.downtimeMs, 0),
    show(s.observedMs, 0),
    show(s.downtimeAtLinkMs, 0),
    reached,
    show(s.decisions, 0),
    show(s.firstDecisionS, 1),
    pct(runs.map((r) => r.progressLost)),
    `${show(s.rateMBps, 1)} (${s.ratioToRaw.median.toFixed(4)})`,
  ]);
  summary.push({ row: row.name, args: row.args, shouldComplete: row.shouldComplete, outcome, ...s, runs });
  for (const r of runs) {
    const x = r.figures;
    const completed = r.report.status === 'completed';
    const why = `${x.outcome}${r.report['error-desc'] ? ` (${r.report['error-desc']})` : ''}`;
    if (completed && !x.verified)
      failures.push(`${row.name} run ${r.run}: completed but not verified: ${verifyProblems(r).join('; ')}`);
    else if (row.shouldComplete && r.report['error-code'] === 'MIG_ERR_NOT_CONVERGING')
      // the policy did not bring it home within the safety bound: a result the table shows, not a failure
      notes.push(
        `${row.name} run ${r.run} did not converge within its ${row.timeoutMs / 1000} s safety bound: ${why}`,
      );
    else if (row.shouldComplete && !completed)
      failures.push(
        `${row.name} run ${r.run}: should complete, ended ${why}${r.killedAtDeadline ? ' — killed at the hard deadline' : ''}; last lines: ${r.stderrTail.slice(-3).join(' | ')}`,
      );
  }
}

const rawSpread = spread(rawRates.map((r) => r / 1e9));
const out = process.stdout;
out.write(
  `bench converge ${QUICK ? '(quick) ' : ''}runs ${RUNS}  raw TCP ${show(rawSpread, 2)} GB/s (one measurement before each migration)\n`,
);
out.write(
  `workload: ${SIZE(RAM)} guest rewriting a ${SIZE(HOT)} hot set ${DIRTY_RATE === 'max' ? 'as fast as its vCPU can' : `at ${DIRTY_RATE}/s`}, --max-bandwidth ${SIZE(LINK)} (the modelled link: ${(LINK / MiB).toFixed(0)} MiB/s), downtime-limit 300 ms, no outside probe; every run with --dump-ram\n`,
);
out.write(`${table(tableRows)}\n`);
const legend = [
  'legend (median (min–max) over runs; a run without the figure is left out):',
  `  outcome        per run: completed+verified (status completed, integrity.match, the guest's self-check, and source.ram = destination.ram byte for byte) or failed with its error-code`,
  `  total s        total-time (setup included) minus the destination's RAM dump (see below)`,
  `  downtime ms    the source's downtime (guest stop → destination's SHUT), on loopback, minus the dump`,
  `  guest observed guest.observed-downtime (last heartbeat on the source → first on the destination), minus the dump`,
  `  downtime @link COMPUTED, not measured: the downtime if the final stop-and-copy round also crossed the ${(LINK / MiB).toFixed(0)} MiB/s`,
  `                 link. On loopback --max-bandwidth holds only while the migration iterates; the final round (ram.downtime-bytes)`,
  `                 goes unlimited (QEMU lifts the limit at completion). So: downtime + max(0, ram.downtime-bytes ÷ link rate − the`,
  `                 final round's window as measured), the window being dst-switchover-start → dst-loadvm-completed (downtime-breakdown;`,
  `                 it also holds the device state, the digest and the load, so the figure may be low by those ms, ~10–30 here).`,
  `                 What ran before the final round stays as measured: for pause, the time from the pause to the final round`,
  `                 already ran at the link rate (the guest stops; iterations go on under the limit)`,
  `  throttle reached  auto-converge: convergence.cpu-throttle-max; dirty-limit: the quota it set (a decision's value) and in how many runs`,
  `                 it fired; stepping: the downtime-limit of the last step taken (steps: 300 → ${STEP_MAX_MS} ms in ${STEP_COUNT}, one every ${STEP_DELAY_MS / 1000} s)`,
  `  decisions / first decision s  convergence.decisions: how many, and the first one's at-ms (from the migration's start)`,
  `  guest progress lost  1 − ticks ÷ (reference rate × total s), ticks = guest.ticks − guest.ticks-at-start (the guest's heartbeat`,
  `                 ticks during the migration): the share of ticks the guest did not get, the downtime included (the source's guest`,
  `                 is stopped from then on). Reference rate = ${reference.rate.toFixed(0)} ticks/s, ${reference.how}`,
  `                 (that guest runs unthrottled, on the same machine, beside a migration at the same link rate).`,
  `                 This guest only writes, so a tick is a burst of page writes: a dirty limit costs it as much as a CPU throttle would;`,
  `                 a guest that mostly reads would lose far less under dirty-limit`,
  `  MB/s (× raw)   ram.transferred ÷ total s (10^6 B/s), and the median of its ratio to the paired raw TCP rate`,
  `  the dump       every run writes --dump-ram; the destination writes its file inside the downtime (dst-loadvm-completed →`,
  `                 dst-vm-started in downtime-breakdown). That interval (median ${show(spread(results.flatMap((r) => r.runs.map((x) => x.figures.dumpMs)).filter((x) => x > 0)), 0)} ms) is taken off total, downtime and`,
  `                 observed downtime; the JSON keeps the reports as measured`,
];
out.write(`${legend.join('\n')}\n`);
const damon = activeDamon();
const note = machineNote(damon);
if (note) out.write(`${note}\n`);
if (unthrottled.length > 1) {
  const u = spread(unthrottled.map((x) => x.ticksPerS));
  out.write(
    `reference check: unthrottled tick rates in this bench (ticks ÷ the time the guest ran, runs whose guest was never throttled): ${unthrottled.map((x) => `${x.row}#${x.run} ${(x.ticksPerS / 1000).toFixed(1)}k`).join(', ')} ticks/s — ${((u.min / u.max) * 100).toFixed(0)}–100 % of each other: the machine's noise; guest-progress-lost figures closer than ${((1 - u.min / u.max) * 100).toFixed(0)} points say nothing\n`,
  );
}
for (const n of notes) out.write(`note: ${n}\n`);
const elapsedS = (performance.now() - started) / 1000;
const file = await writeResult('converge', {
  quick: QUICK,
  runs: RUNS,
  only: ONLY,
  link: { bytesPerSecond: LINK, maxBandwidth: SIZE(LINK) },
  workload: { ram: RAM, hotSet: HOT, dirtyRate: DIRTY_RATE, args: workload },
  stepping: { maxMs: STEP_MAX_MS, steps: STEP_COUNT, delayMs: STEP_DELAY_MS },
  rawTcp: { rates: rawRates, median: spread(rawRates).median },
  reference,
  unthrottled,
  machine: { damon },
  elapsedS,
  summary,
  failures,
  notes,
});
out.write(`took ${(elapsedS / 60).toFixed(1)} min; wrote ${file}\n`);
if (failures.length) {
  for (const f of failures) process.stderr.write(`${PROG}: ${f}\n`);
  process.exit(1);
}
