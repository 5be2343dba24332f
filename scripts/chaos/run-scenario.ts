/**
 * Runs one chaos scenario end to end in a fresh pair of namespaces: destination (and a fresh retry
 * destination on another port) in the destination namespace, source in the source namespace, both
 * with SWITCHOVER_TRACE=1 so the trigger can find the targeted phase from the source's trace and
 * progress lines and strike at once (the kill is sent from the line callback). Trace times share
 * this process's monotonic clock, so detect-ms = first `mig:error` after the strike − strike time.
 * Every wait is bounded; the topology, helpers and processes are torn down in `finally`.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Side, spawnSide } from '../lib/spawn-side.js';
import { spawnHelper, withTimeout } from './helpers.js';
import {
  type Active,
  applyCorruption,
  applyDelay,
  applyLink,
  applyLoss,
  applyPageCorruption,
  applyPartition,
  applyRate,
  type Target,
} from './impairments.js';
import { createTopology, destroyTopology, inNs, type Topology, trackChild, trackDir } from './netns.js';
import { classify, ERROR_LINE, judge, type Report, type SideFacts } from './outcome.js';
import type { Outcome, Phase, Scenario } from './scenarios.js';
import {
  bounded,
  exists,
  matches,
  now,
  parseTrace,
  phaseAt,
  r1,
  readJson,
  sameBytes,
  sleep,
  type Trace,
} from './trace.js';

export interface ChaosRecord {
  scenario: string;
  phase: Phase;
  'phase-hit': string;
  impairment: { what: string; mechanism: string; 'applied-at': number | null; evidence: string };
  outcome: Outcome;
  'detect-ms': number | null;
  'retry-outcome': string;
  'total-ms': number;
  verdict: 'pass' | 'fail';
  problems: string[];
  'exit-codes': Record<string, number | string | null>;
  'destination-error': string | null;
  report: Report | null;
}

/** The first destination's traffic (its address), all of it or its page channels alone. */
function targetOf(topo: Topology, dst: string, channels: 'all' | 'page' = 'all'): Target {
  return { ip: topo.ipDst, port: Number(dst.split(':').pop()), channels };
}

async function startImpairment(sc: Scenario, topo: Topology, dst: string): Promise<Active> {
  const imp = sc.impairment;
  if (imp.kind === 'rate') return applyRate(topo, imp.rate);
  if (imp.kind === 'loss') return applyLoss(topo, imp.percent, targetOf(topo, dst));
  if (imp.kind === 'delay') return applyDelay(topo, imp.ms, targetOf(topo, dst), dst);
  if (imp.kind === 'corrupt' && imp.where === 'page-channel')
    return applyPageCorruption(topo, targetOf(topo, dst, 'page'), imp.offset, imp.bit);
  if (imp.kind === 'corrupt') return applyCorruption(topo, dst, imp.offset, imp.bit);
  if (imp.kind === 'partition') return applyPartition(topo, imp.mode, targetOf(topo, dst, imp.channels));
  if (imp.kind === 'none') return applyLink(topo, sc.link ?? {}, targetOf(topo, dst), dst);
  throw new Error(`impairment ${imp.kind} is a process fault, not a network one`);
}

/** Strangers on the page ports the source just announced (its trace line), from the destination's namespace. */
async function startStrangers(topo: Topology, line: string): Promise<Active> {
  const { host, ports } = JSON.parse(line) as { host: string; ports: number[] };
  const entry = fileURLToPath(new URL('./stranger.ts', import.meta.url));
  const targets = ports.flatMap((p) => ['--target', `${host}:${p}`]);
  const helper = spawnHelper(topo.nsDst, [process.execPath, '--import', 'tsx', entry, ...targets]);
  const ready = await withTimeout(helper.firstLine, 10_000, '');
  return {
    what: `3 strangers (junk, idle, TLS ClientHello) on each of ${ports.length} page ports`,
    mechanism: `node:net clients in the destination namespace (${topo.ipDst}), ${ready === 'ready' ? 'connected' : `not ready: ${helper.lines.join(' | ')}`}`,
    heal: () => helper.stop(),
    evidence: async () =>
      helper.lines.filter((l) => l.startsWith('{')).join(' ') || 'stranger printed nothing',
  };
}

/** stderr minus trace JSON, progress lines and the documented `switchover-<side>: warning:` lines. */
const stderrErrors = (s: Side) =>
  s.stderrLines.filter(
    (l) => !l.startsWith('{') && !l.startsWith('progress ') && !/^switchover-\w+: warning: /.test(l),
  );

export async function runScenario(
  sc: Scenario,
  opts: { quick?: boolean; verbose?: boolean; keepLogs?: string; log?: (l: string) => void } = {},
): Promise<ChaosRecord> {
  const log = opts.log ?? (() => {});
  const topo = await createTopology();
  const work = await mkdtemp(join(tmpdir(), `swchaos-${process.pid}-`));
  trackDir(work);
  const sides: Side[] = [];
  const actives: Active[] = [];
  const timers: NodeJS.Timeout[] = [];
  const env = { SWITCHOVER_TRACE: '1' };
  const g = sc.guest;
  const stall = String(sc.stallTimeoutMs);
  const startDst = (tag: string) => {
    // plaintext on purpose: the namespaces are private, and the corrupting relay must see the bytes;
    // the retry destination has its own address, which the impairments (aimed at ipDst) leave alone
    const ip = tag === 'retry' ? topo.ipRetry : topo.ipDst;
    const args = ['--listen', `${ip}:0`, '--insecure', '--capabilities', g.capabilities];
    args.push('--stall-timeout', stall);
    args.push('--json', join(work, `${tag}.json`), '--dump-ram', join(work, `${tag}.ram`), '--quiet');
    const s = spawnSide('destination', args, {
      prefix: inNs(topo.nsDst),
      env: tag === 'dst' ? { ...env, ...sc.dstEnv } : env,
    });
    trackChild(s.child);
    sides.push(s);
    return s;
  };
  try {
    const imp = sc.impairment;
    const sourceKilled = imp.kind === 'signal' && imp.target === 'source';
    const dst = startDst('dst');
    const retry = sourceKilled ? null : startDst('retry');
    const addrs = await Promise.all(
      [dst, ...(retry ? [retry] : [])].map((s) => bounded(s.firstLine, 20_000)),
    );
    if (!addrs.every((a) => typeof a === 'string' && /:\d+$/.test(a)))
      throw new Error(`destination did not start: ${addrs.join(', ')} ${dst.stderrLines.join(' | ')}`);
    const [dstAddr, retryAddr] = addrs as string[];
    let active: Active | null = null;
    let appliedAt: number | null = null;
    let what = '';
    let mechanism = '';
    // a custom scenario's link impairments, when a fault comes later at its phase
    let link: Active | null = null;
    if (sc.link && imp.kind !== 'none') {
      link = await applyLink(topo, sc.link, targetOf(topo, dstAddr!), dstAddr!);
      actives.push(link);
    }
    if (sc.trigger.on === 'start') {
      active = await startImpairment(sc, topo, dstAddr!);
      actives.push(active);
      appliedAt = now();
    }
    const via = active?.connect ?? link?.connect ?? dstAddr!;
    const srcArgs = ['--connect', via, '--ram', g.ram, '--dirty-rate', g.dirtyRate];
    if (g.dirtyPattern) srcArgs.push('--dirty-pattern', g.dirtyPattern);
    if (g.dirtyRange) srcArgs.push('--dirty-range', g.dirtyRange);
    srcArgs.push(
      '--capabilities',
      g.capabilities,
      '--max-bandwidth',
      g.maxBandwidth,
      '--stall-timeout',
      stall,
    );
    srcArgs.push('--timeout', String(sc.timeoutMs), '--json', join(work, 'src.json'));
    srcArgs.push('--dump-ram', join(work, 'src.ram'));
    if (g.downtimeLimit !== undefined) srcArgs.push('--downtime-limit', String(g.downtimeLimit));
    for (const d of g.devices ?? []) srcArgs.push('--device', d);
    if (retryAddr) srcArgs.push('--retry-connect', retryAddr);

    let fired = sc.trigger.on === 'start';
    let src: Side | null = null;
    let line = '';
    const strike = async () => {
      if (imp.kind === 'signal') {
        const side = imp.target === 'source' ? src! : dst;
        appliedAt = now();
        side.kill(imp.signal);
        what = `${imp.signal} ${imp.target}${imp.holdMs ? ` for ${imp.holdMs / 1000} s` : ''}`;
        mechanism = `kill(${side.child.pid}, ${imp.signal}) from the trigger callback`;
        if (imp.signal === 'SIGSTOP')
          timers.push(setTimeout(() => side.child.kill('SIGCONT'), imp.holdMs ?? 5000));
      } else if (imp.kind === 'stranger') {
        active = await startStrangers(topo, line);
        actives.push(active);
        appliedAt = now();
        what = active.what;
      } else if (imp.kind === 'partition') {
        active = await applyPartition(topo, imp.mode, targetOf(topo, dstAddr!, imp.channels));
        actives.push(active);
        appliedAt = now();
        const ms = opts.quick && imp.quickMs ? imp.quickMs : imp.ms;
        what = `${active.what} for ${ms / 1000} s`;
        const a = active;
        timers.push(setTimeout(() => void a.heal(), ms));
      }
    };
    const onLine = (l: string) => {
      if (opts.verbose && !l.startsWith('{')) log(`    [source] ${l}`);
      if (fired || !matches(sc, l)) return;
      fired = true;
      line = l;
      const after = 'afterMs' in sc.trigger ? (sc.trigger.afterMs ?? 0) : 0;
      if (after > 0) timers.push(setTimeout(() => void strike(), after));
      else void strike();
    };
    log(`  ${sc.name}: destination ${dstAddr}${retryAddr ? `, retry ${retryAddr}` : ''}, source starting`);
    const t0 = now();
    src = spawnSide('source', srcArgs, { prefix: inNs(topo.nsSrc), env, onStderrLine: onLine });
    trackChild(src.child);
    sides.push(src);

    const srcExit = await bounded(src.exited, sc.timeoutMs + 30_000);
    const srcEnd = now();
    if (srcExit === 'timeout') src.kill('SIGKILL');
    const srcReport = await readJson(join(work, 'src.json'));
    const dstExit = await bounded(dst.exited, sc.stallTimeoutMs + 10_000);
    if (dstExit === 'timeout') dst.kill('SIGKILL');
    let retryExit: number | string | 'timeout' | null = null;
    if (retry) {
      retryExit = srcReport?.['first-attempt'] ? await bounded(retry.exited, 15_000) : null;
      if (retryExit === 'timeout' || retryExit === null) retry.kill('SIGKILL');
    }
    for (const t of timers) clearTimeout(t);
    for (const a of actives) await a.heal();
    const evidence = active ? await active.evidence() : '';
    await sleep(50);
    if (active) {
      what ||= active.what;
      mechanism ||= active.mechanism;
    }
    if (link) {
      what = `${link.what}, then ${what || 'nothing'}`;
      mechanism = `${link.mechanism}; ${mechanism}`;
    }
    const flip = /"flipped".*"t":([\d.]+)/.exec(evidence);
    if (flip) appliedAt = Number(flip[1]);

    const srcTrace = parseTrace(src.stderrLines);
    const dstTrace = parseTrace(dst.stderrLines);
    const facts = async (s: Side, tag: string, exit: number | string | 'timeout' | null, trace: Trace[]) => {
      const report = await readJson(join(work, `${tag}.json`));
      const started = trace.some((e) => e.event === 'mig:checkpoint' && e.name === 'dst-vm-started');
      return {
        exit: exit === 'timeout' ? 'SIGKILL' : exit,
        killedByUs: exit === 'timeout' || (imp.kind === 'signal' && s === dst && imp.signal === 'SIGKILL'),
        hung: exit === 'timeout',
        errorLines: stderrErrors(s),
        report,
        startedGuest: started || !!report?.guest?.['self-check'],
        dumpExists: await exists(join(work, `${tag}.ram`)),
      } satisfies SideFacts;
    };
    const srcFacts: SideFacts = {
      exit: srcExit === 'timeout' ? 'SIGKILL' : srcExit,
      killedByUs: sourceKilled || srcExit === 'timeout',
      hung: srcExit === 'timeout' && !sourceKilled,
      errorLines: stderrErrors(src),
      report: srcReport,
      startedGuest: false,
      dumpExists: await exists(join(work, 'src.ram')),
    };
    const c = classify({
      sourceKilled,
      src: srcFacts,
      dst: await facts(dst, 'dst', dstExit, dstTrace),
      retry: retry ? await facts(retry, 'retry', retryExit, parseTrace(retry.stderrLines)) : null,
      srcVsDst: await sameBytes(join(work, 'src.ram'), join(work, 'dst.ram')),
      srcVsRetry: await sameBytes(join(work, 'src.ram'), join(work, 'retry.ram')),
    });
    const at = appliedAt as number | null;
    const failure = (sourceKilled ? dstTrace : srcTrace).find(
      (e) => e.event === 'mig:error' && e.t >= (at ?? 0),
    );
    const detectMs = failure && at !== null ? r1(failure.t - at) : null;
    const problems = [...c.problems, ...judge(sc, c, detectMs, srcReport)];
    if (!fired) problems.push(`trigger ${JSON.stringify(sc.trigger)} never fired: the phase was not reached`);
    const phaseHit =
      sc.trigger.on === 'start' && !flip
        ? 'whole'
        : at === null
          ? 'not reached'
          : phaseAt(srcTrace, at, g.capabilities.includes('switchover-ack')) +
            (dstTrace.some((e) => e.name === 'dst-loadvm-completed' && e.t <= at) ? ' (dst loaded)' : '');
    return {
      scenario: sc.name,
      phase: sc.phase,
      'phase-hit': phaseHit,
      impairment: { what, mechanism, 'applied-at': at === null ? null : r1(at - t0), evidence },
      outcome: c.outcome,
      'detect-ms': detectMs,
      'retry-outcome': c.retryOutcome,
      'total-ms': r1(srcEnd - t0),
      verdict: problems.length ? 'fail' : 'pass',
      problems,
      'exit-codes': {
        source: srcFacts.exit,
        destination: dstExit === 'timeout' ? 'hung' : dstExit,
        retry: retryExit === 'timeout' ? 'hung' : retryExit,
      },
      'destination-error': stderrErrors(dst).find((l) => ERROR_LINE.test(l)) ?? null,
      report: srcReport,
    };
  } finally {
    if (opts.keepLogs) {
      await mkdir(opts.keepLogs, { recursive: true });
      for (const [i, s] of sides.entries()) {
        const role = s.child.spawnargs.some((a) => a.endsWith('source/main.ts'))
          ? 'source'
          : `destination${i}`;
        const file = join(opts.keepLogs, `${sc.name}.${topo.id}.${role}.log`);
        await writeFile(file, `${s.child.spawnargs.join(' ')}\n${s.stderrLines.join('\n')}\n`);
      }
    }
    for (const t of timers) clearTimeout(t);
    for (const a of actives) await a.heal().catch(() => {});
    for (const s of sides) {
      s.kill('SIGCONT');
      s.kill('SIGKILL');
      await bounded(s.exited, 5000);
    }
    await destroyTopology(topo);
    await rm(work, { recursive: true, force: true });
    trackDir(work, false);
  }
}
