/**
 * `npm start -- [options]` — the main job: a paired local migration. Starts a destination and a
 * source as two separate Node processes on 127.0.0.1, runs one migration with live progress, and
 * prints one merged report (source view + destination's verification and guest self-check).
 *
 * Options (shared/cli/option-table.ts, `--help`): the guest's and the migration's, handed to the side
 * that takes them. `--dump-ram DIR` writes DIR/source.ram and
 * DIR/destination.ram; `--json FILE` writes the merged report. `--tls x509|psk` generates throwaway
 * credentials in the run's temp directory (x509 with the openssl command: CA, server and client
 * certificates, so verify-peer is on; psk with node:crypto) and gives them to both sides.
 * `--probe-interval MS` sets the outside UDP probe's period (default 5; 0 runs no probe); while no
 * guest answers (the handover) it probes every 1 ms. The probe is an observer that costs CPU: every
 * probe wakes a service thread and the probe process, and on 2 cores a 1 ms period took ~18 % off a
 * paused 1 GiB guest's page-channel throughput here, 2 ms ~7 %, 5 ms ~1 % (medians of interleaved
 * runs; `npm run bench` measures it in its OBS rows).
 * Exit 0 completed and verified, 1 failed, 2 bad usage.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { type CommonOptions, guestBytes, parseCommon } from '../shared/cli/args.js';
import { helpHint, usageText } from '../shared/cli/help.js';
import { type Command, OPTIONS, type OptionDef } from '../shared/cli/option-table.js';
import { ProgressBar } from '../shared/cli/progress-bar.js';
import { parseProgressLine } from '../shared/cli/progress-line.js';
import { reportTable } from '../shared/cli/report-table.js';
import { runCli } from '../shared/cli/run.js';
import { ErrorCode, MigrationError } from '../shared/errors.js';
import {
  checkOutputPath,
  checkOutputPaths,
  makeOutputFolder,
  writeOutputOrWarn,
} from '../shared/output-paths.js';
import { generatePsk, generateX509 } from '../shared/tls/generate.js';
import { explainDowntime } from './lib/downtime-explained.js';
import { freeUdpPort, probeCoverage, ServiceProbe } from './lib/service-probe.js';
import { type Side, spawnSide } from './lib/spawn-side.js';
import { makeWorkFolder, removeWorkFolder } from './lib/work-folder.js';

const PROG = 'switchover';

/**
 * The outside probe's default period is 5 ms (shared/cli/args.ts). Measured here (1 GiB paused guest,
 * 2 page channels, interleaved pairs): 1 ms cost ~18 % of the throughput, 2 ms ~7 %, 5 ms ~1 %; the
 * handover itself is probed at 1 ms whatever the period (FAST_PROBE_MS), so only the gap's start is
 * seen at the coarser period.
 */
const FAST_PROBE_MS = 1;

/** How long the pair waits for the destination to announce its guest service. */
const SERVICE_WAIT_MS = 10_000;

/** Options the pair handles itself (outputs, TLS, probe) rather than handing them to a side. */
const PAIR_MANAGED = new Set(['json', 'dump-ram', 'quiet', 'help', 'tls', 'probe-interval']);

/**
 * The user's options that `role` takes, as given (already validated by parseCommon): `--timeline`
 * goes to the source only, `--capabilities` to both.
 */
function argsFor(argv: string[], role: Command): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const name = a.replace(/^--/, '').split('=')[0]!;
    const def = (OPTIONS as Record<string, OptionDef>)[name];
    const takesValue = def?.type === 'string' && !a.includes('=');
    const pass = def?.commands.includes(role) === true && !PAIR_MANAGED.has(name);
    if (pass) out.push(a);
    if (takesValue && i + 1 < argv.length) {
      if (pass) out.push(argv[i + 1]!);
      i++;
    }
  }
  return out;
}

/** What a signal handler needs to end a pair run: its work folder, its processes, how to cancel. */
interface PairRun {
  work: string;
  probe: ServiceProbe;
  sides: Side[];
  /** Set while the source migrates: the first SIGINT/SIGTERM cancels the migration instead of ending the pair. */
  cancel: (() => void) | null;
  /** Set when a signal ends the pair (endOnSignal): later signals, and the run itself, wait for it. */
  ending: Promise<void> | null;
}

/** Signals this close to the one that cancelled are copies of it (see onSignal). */
const SAME_KEYPRESS_MS = 200;

/** How long a signalled pair waits for its probe process to stop before it removes the work folder. */
const PROBE_STOP_MS = 2000;

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  // every option of both sides is checked here, before any process starts: a bad --device is one
  // line and exit 2 at once, not a destination left waiting for a source that never comes
  const o = parseCommon(argv, 'pair');
  if (o.help) {
    process.stdout.write(`${usageText('pair')}\n`);
    return 0;
  }
  // before anything starts: a bad output path is a usage error now, not a lost report later
  await checkOutputPaths({ json: o.json, timeline: o.timeline });
  if (o.dumpRam) {
    await makeOutputFolder('--dump-ram', o.dumpRam);
    for (const name of ['source.ram', 'destination.ram'])
      await checkOutputPath('--dump-ram', join(o.dumpRam, name), 'dump');
  }
  // the work folder goes whatever ends the run: return, throw, a crash through process.exit, a signal.
  // The handlers come first and the folder is made synchronously right after them, so no signal
  // can find the folder made and nobody to remove it.
  // The sides run in their own process groups (spawnSide ownGroup), so a Ctrl-C in the terminal
  // reaches this process only: the first SIGINT or SIGTERM is handed to the source once, as a
  // graceful cancel; a later one, or one outside the migration, ends the pair at once. Under
  // `npm start` one Ctrl-C arrives twice (the terminal's, and npm's forwarded copy a few ms later):
  // signals within SAME_KEYPRESS_MS of the cancel are that one keypress.
  let cancelledAt = Number.NEGATIVE_INFINITY;
  const onSignal = (signal: NodeJS.Signals) => {
    if (pair.cancel) {
      const cancel = pair.cancel;
      pair.cancel = null;
      cancelledAt = performance.now();
      return cancel();
    }
    if (performance.now() - cancelledAt < SAME_KEYPRESS_MS) return;
    pair.ending ??= endOnSignal(pair, signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const work = makeWorkFolder();
  const pair: PairRun = { work, probe: new ServiceProbe(work), sides: [], cancel: null, ending: null };
  const removeAtExit = () => removeWorkFolder(work);
  process.on('exit', removeAtExit);
  try {
    // a run that ends while a signal ends the pair waits for it: the exit code is the signal's
    return await runPair(o, argv, pair).finally(() => pair.ending);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    removeWorkFolder(work);
    process.off('exit', removeAtExit);
  }
}

/** Tracks a started side; one started while a signal ends the pair is stopped at once. */
function addSide(pair: PairRun, side: Side): void {
  pair.sides.push(side);
  if (pair.ending !== null) side.kill('SIGKILL');
}

/**
 * A signal outside the one cancel ends the pair at once, as the default action did, but kills the
 * sides, stops the probe and removes the work folder (with its keys) first.
 */
async function endOnSignal(pair: PairRun, signal: NodeJS.Signals): Promise<void> {
  for (const side of pair.sides) side.kill('SIGKILL');
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    pair.probe.stop().catch(() => null),
    new Promise((r) => {
      timer = setTimeout(r, PROBE_STOP_MS);
    }),
  ]);
  clearTimeout(timer);
  removeWorkFolder(pair.work);
  process.exit(128 + (osConstants.signals[signal as keyof typeof osConstants.signals] ?? 0));
}

async function runPair(o: CommonOptions, argv: string[], pair: PairRun): Promise<number> {
  const { work, probe } = pair;
  const probeInterval = o.probeIntervalMs;
  // both sides get the same capabilities (default return-path,multifd; see shared/options.ts)
  const tlsArgs: string[] = [];
  if (o.tls === 'x509') tlsArgs.push('--tls-creds', await generateX509(join(work, 'tls')));
  if (o.tls === 'psk') tlsArgs.push('--tls-psk', await generatePsk(join(work, 'keys.psk')));
  const dstJson = join(work, 'destination.json');
  const srcJson = join(work, 'source.json');
  const bar = !o.quiet && process.stderr.isTTY ? new ProgressBar() : null;
  const log = (l: string) => {
    // a side's error line is shown even with --quiet: it is why the pair ended
    if (o.quiet && !/ MIG_ERR_[A-Z_]+: /.test(l)) return;
    bar?.clear();
    process.stderr.write(`${l}\n`);
  };
  let accepted = false;
  const onProgress = (l: string) => {
    const p = parseProgressLine(l);
    if (!bar || !p) return log(l);
    bar.update({
      status: p.status!,
      remaining: Number(p.remaining),
      // remaining counts device data too
      total: guestBytes(o),
      transferred: Number(p.transferred),
      mbps: Number(p.mbps),
      dirtyPagesRate: Number(p['dirty-pages-rate']),
      iteration: Number(p.iteration),
      expectedDowntime: Number(p['expected-downtime']),
    });
  };
  // The probe must be sending before the source starts, or a short migration is over before it
  // looks: the source's service gets a port chosen here, and the source waits for the probe.
  const srcService = probeInterval > 0 ? `127.0.0.1:${await freeUdpPort()}` : null;
  const services: string[] = [];
  let onDstService: (address: string) => void = () => {};
  const dstService = new Promise<string | null>((resolve) => {
    onDstService = resolve;
    setTimeout(() => resolve(null), SERVICE_WAIT_MS).unref();
  });
  const noteService = (l: string) => {
    const m = /guest service on (\S+)$/.exec(l);
    if (!m) return false;
    services.push(m[1]!);
    if (services.length === 1) onDstService(m[1]!);
    return true;
  };
  const dst = spawnSide(
    'destination',
    [
      '--listen',
      '127.0.0.1:0',
      '--ram',
      String(o.ramBytes),
      ...argsFor(argv, 'destination'),
      ...tlsArgs,
      '--json',
      dstJson,
      '--quiet',
      ...(o.dumpRam ? ['--dump-ram', join(o.dumpRam, 'destination.ram')] : []),
    ],
    {
      onStderrLine: (l) => {
        if (/^switchover-destination: migration [0-9a-f]+ from /.test(l)) accepted = true;
        return noteService(l) || log(`[destination] ${l}`);
      },
      ownGroup: true,
    },
  );
  addSide(pair, dst);
  const address = await dst.firstLine;
  if (!/:\d+$/.test(address)) {
    await dst.exited;
    throw new MigrationError(ErrorCode.INTERNAL, `destination did not start: ${dst.stderrLines.join(' | ')}`);
  }
  log(`destination listening on ${address}`);
  if (srcService) {
    const dstSvc = await dstService;
    const ready =
      dstSvc !== null &&
      (await probe.start([dstSvc, srcService], probeInterval, Math.min(FAST_PROBE_MS, probeInterval)));
    if (!ready) log('outside probe did not start in time; migrating without it');
  }
  const src = spawnSide(
    'source',
    [
      '--connect',
      address,
      ...argsFor(argv, 'source'),
      ...tlsArgs,
      ...(srcService ? ['--service', srcService] : []),
      '--json',
      srcJson,
      ...(o.quiet ? ['--quiet'] : []),
      ...(o.dumpRam ? ['--dump-ram', join(o.dumpRam, 'source.ram')] : []),
    ],
    {
      onStderrLine: (l) =>
        noteService(l) || (l.startsWith('progress ') ? onProgress(l) : log(`[source] ${l}`)),
      ownGroup: true,
    },
  );
  addSide(pair, src);
  pair.cancel = () => src.kill('SIGINT');
  const srcCode = await src.exited;
  pair.cancel = null;
  bar?.done(String((await readJson(srcJson))?.status ?? 'failed'));
  const dstCode = await destinationAfterSource(dst, accepted);
  const probeResult = await probe.stop();
  const report = await mergeReports(srcJson, dstJson);
  if (probeResult) {
    report.probe = probeCoverage(probeResult, report.status, report['downtime-start-t']);
    const why = (report.probe as Record<string, unknown>)['not-covered'];
    if (why) log(`outside probe: no service downtime (${why})`);
  }
  const explained = explainDowntime(report);
  if (explained) report['downtime-explained'] = Object.fromEntries(explained.map((e) => [e.event, e.at]));
  report['exit-codes'] = { source: srcCode, destination: dstCode };
  process.stdout.write(`${reportTable(report)}\n`);
  // the migration is over: a report that cannot be written now is a warning, the exit code says how it ended
  const json = o.json;
  if (json) {
    const text = `${JSON.stringify(report, null, 2)}\n`;
    await writeOutputOrWarn(PROG, '--json', json, () => writeFile(json, text));
  }
  if (srcCode === 2) return 2; // the source refused its options: a usage error, as the pair's own
  const ok = srcCode === 0 && dstCode === 0 && report.status === 'completed';
  return ok ? 0 : 1;
}

/** After a migration the destination checks its guest and exits: this long at most. */
const DESTINATION_AFTER_SOURCE_MS = 60_000;

/**
 * The source has exited. A destination that never saw it connect would wait for a source forever
 * (a source that failed on its options, its service port, ...): it is stopped at once. Otherwise it
 * gets its own time to finish (self-check), bounded, then SIGTERM and, 5 s later, SIGKILL.
 */
async function destinationAfterSource(dst: Side, accepted: boolean): Promise<number | string> {
  if (!accepted) dst.kill('SIGTERM');
  const wait = (ms: number) =>
    Promise.race([dst.exited, new Promise<null>((r) => setTimeout(() => r(null), ms).unref())]);
  const code = (await wait(accepted ? DESTINATION_AFTER_SOURCE_MS : 5000)) ?? null;
  if (code !== null) return code;
  dst.kill('SIGTERM');
  const late = await wait(5000);
  if (late !== null) return late;
  dst.kill('SIGKILL');
  return dst.exited;
}

async function readJson(path: string): Promise<Record<string, unknown> | null> {
  try {
    return JSON.parse(await readFile(path, 'utf8'));
  } catch {
    return null;
  }
}

/** Source report first; the destination's own view of verification and the self-check on top. */
async function mergeReports(srcPath: string, dstPath: string): Promise<Record<string, unknown>> {
  const src = (await readJson(srcPath)) ?? { status: 'failed', 'error-desc': 'source wrote no report' };
  const dst = (await readJson(dstPath)) ?? {};
  const merged: Record<string, unknown> = { ...src };
  merged.guest = { ...(src.guest as object), ...(dst.guest as object) };
  merged.integrity = { ...(src.integrity as object), ...(dst.integrity as object) };
  if (dst['dst-prealloc-ms'] !== undefined) merged['dst-prealloc-ms'] = dst['dst-prealloc-ms'];
  if (src['peak-rss'] !== undefined || dst['peak-rss'] !== undefined) {
    merged['peak-rss'] = { source: src['peak-rss'] ?? null, destination: dst['peak-rss'] ?? null };
  }
  if (dst.status === 'failed') merged['destination-error'] = `${dst['error-code']}: ${dst['error-desc']}`;
  return merged;
}

runCli(PROG, helpHint('pair'), main);
