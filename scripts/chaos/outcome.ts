/**
 * Outcome checks for one chaos run, from facts gathered after both sides ended (reports, exit codes,
 * stderr, RAM dumps, trace lines). Every run is exactly one of:
 *  - migrated-verified: source status completed (exit 0), both --dump-ram files byte-identical, the
 *    destination's self-check ok (exit 0);
 *  - failed-source-intact: the (first) attempt failed or was cancelled, the source guest kept running
 *    (guest['running-after-failure'], or a verified migration of the same guest to the retry
 *    destination, which proves it), and the destination exited non-zero or was killed without ever
 *    starting the guest (no `dst-vm-started` checkpoint, no self-check; a destination that exited
 *    on its own must not have written its RAM dump, which the oracle writes just before resume);
 *  - source-lost-destination-clean (source killed): the destination exited non-zero on its own with
 *    exactly one `switchover-destination: MIG_ERR_X: msg` line (informational lines allowed, no stack
 *    trace) and never started the guest;
 *  - DEFECT: anything else, with the reasons.
 */
import type { Outcome, Scenario } from './scenarios.js';

// biome-ignore lint/suspicious/noExplicitAny: parsed JSON reports, read field by field
export type Report = Record<string, any>;

export const ERROR_LINE = /^switchover-destination: MIG_ERR_[A-Z_]+: /;

export interface SideFacts {
  /** Exit code, the signal name, or null when it never ran. */
  exit: number | string | null;
  killedByUs: boolean;
  /** Still running when the bounded wait after the source's end ran out (then SIGKILLed). */
  hung: boolean;
  /** stderr lines that are neither trace JSON nor progress lines. */
  errorLines: string[];
  report: Report | null;
  startedGuest: boolean;
  dumpExists: boolean;
}

export interface RunFacts {
  sourceKilled: boolean;
  src: SideFacts;
  dst: SideFacts;
  retry: SideFacts | null;
  /** Source dump vs destination dump (null: one missing). */
  srcVsDst: boolean | null;
  srcVsRetry: boolean | null;
}

export interface Classified {
  outcome: Outcome;
  retryOutcome: string;
  problems: string[];
}

function verifyMigrated(src: SideFacts, dst: SideFacts, dumpsEqual: boolean | null): string[] {
  const p: string[] = [];
  if (src.report?.status !== 'completed') p.push(`source status ${src.report?.status}`);
  if (src.exit !== 0) p.push(`source exit ${src.exit}`);
  if (dst.exit !== 0) p.push(`destination exit ${dst.exit}`);
  if (dumpsEqual !== true) p.push(dumpsEqual === null ? 'a RAM dump is missing' : 'RAM dumps differ');
  if (dst.report?.guest?.['self-check']?.ok !== true) p.push('destination self-check not ok');
  if (src.report?.integrity?.match === false) p.push('integrity.match false');
  return p;
}

/** The failed destination: exited non-zero (or killed), one error line, guest never started. */
function cleanDestination(d: SideFacts, who: string, mustExitItself: boolean): string[] {
  const p: string[] = [];
  if (d.hung) p.push(`${who} did not exit on its own (hang; SIGKILLed by the harness)`);
  else if (d.exit === 0) p.push(`${who} exited 0 after a failed migration`);
  else if (mustExitItself && typeof d.exit !== 'number') p.push(`${who} ended by ${d.exit}`);
  if (d.startedGuest) p.push(`${who} STARTED THE GUEST (split brain)`);
  // the oracle dump is written just before resume: a killed destination may have reached it
  if (d.dumpExists && !d.killedByUs) p.push(`${who} exited on its own but wrote a RAM dump`);
  if (typeof d.exit === 'number' && d.exit !== 0) {
    // the project's rule (test/helpers/pair.ts): exactly one MIG_ERR line, no stack trace;
    // informational `switchover-destination: ...` lines are allowed
    const errs = d.errorLines.filter((l) => ERROR_LINE.test(l));
    const stack = d.errorLines.filter((l) => /^\s+at /.test(l));
    if (errs.length !== 1 || stack.length)
      p.push(
        `${who} stderr: ${errs.length} MIG_ERR lines, ${stack.length} stack lines: ${JSON.stringify(errs)}`,
      );
  }
  return p;
}

export function classify(f: RunFacts): Classified {
  if (f.sourceKilled) {
    const p = cleanDestination(f.dst, 'destination', true);
    return {
      outcome: p.length ? 'DEFECT' : 'source-lost-destination-clean',
      retryOutcome: 'n/a',
      problems: p,
    };
  }
  const r = f.src.report;
  if (!r) {
    const how = f.src.hung ? 'source hung (SIGKILLed by the harness)' : `source exit ${f.src.exit}`;
    return { outcome: 'DEFECT', retryOutcome: 'n/a', problems: [`source wrote no report; ${how}`] };
  }
  const first = r['first-attempt'] as Report | undefined;
  if (!first && r.status === 'completed') {
    const p = verifyMigrated(f.src, f.dst, f.srcVsDst);
    return { outcome: p.length ? 'DEFECT' : 'migrated-verified', retryOutcome: 'not-needed', problems: p };
  }
  const p: string[] = [];
  const failedStatus = first ? first.status : r.status;
  if (failedStatus !== 'failed' && failedStatus !== 'cancelled') p.push(`source status ${failedStatus}`);
  let retryOutcome = 'n/a';
  if (first && f.retry) {
    const rp = verifyMigrated(f.src, f.retry, f.srcVsRetry);
    retryOutcome = rp.length ? `not verified: ${rp.join(', ')}` : 'migrated-verified';
  } else if (f.retry && failedStatus === 'failed') {
    retryOutcome = 'not attempted';
    p.push('the source failed but did not retry to --retry-connect');
  }
  const intact = r.guest?.['running-after-failure'] === true || retryOutcome === 'migrated-verified';
  if (!intact) p.push("source guest not shown running after the failure (guest['running-after-failure'])");
  if (!first && f.src.exit !== 1) p.push(`source exit ${f.src.exit} (expected 1 for a failed migration)`);
  p.push(...cleanDestination(f.dst, 'destination', false));
  return { outcome: p.length ? 'DEFECT' : 'failed-source-intact', retryOutcome, problems: p };
}

/** Scenario expectations on top of the outcome: allowed outcomes, throughput, detection time, retry. */
export function judge(sc: Scenario, c: Classified, detectMs: number | null, report: Report | null): string[] {
  const fails: string[] = [];
  if (!sc.expect.outcomes.includes(c.outcome))
    fails.push(`outcome ${c.outcome} not in {${sc.expect.outcomes.join(', ')}}`);
  const m = sc.expect.mbps;
  if (m && c.outcome === 'migrated-verified') {
    const mbps = Number(report?.ram?.mbps);
    if (!(Math.abs(mbps - m.target) <= m.target * m.tolerance))
      fails.push(`ram.mbps ${mbps} not within ${m.tolerance * 100}% of ${m.target}`);
  }
  const within = sc.expect.detectWithinMs;
  if (
    within !== undefined &&
    c.outcome === 'failed-source-intact' &&
    (detectMs === null || detectMs > within)
  )
    fails.push(`detected after ${detectMs} ms (limit ${within} ms)`);
  if (
    sc.expect.retryVerified &&
    c.outcome === 'failed-source-intact' &&
    c.retryOutcome !== 'migrated-verified'
  )
    fails.push(`retry ${c.retryOutcome}`);
  return fails;
}
