/**
 * `npm start -- [options]` — the main job: a paired local migration. Starts a destination and a
 * source as two separate Node processes on 127.0.0.1, runs one migration with live progress, and
 * prints one merged report (source view + destination's verification and guest self-check).
 *
 * Options: everything `source` takes (see --help). `--dump-ram DIR` writes DIR/source.ram and
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
import { type CommonOptions, OPTION_SPEC, parseCommon, runCli, USAGE_OPTIONS } from '../shared/cli.js';
import { ErrorCode, MigrationError, ParameterError } from '../shared/errors.js';
import {
  checkOutputPath,
  checkOutputPaths,
  makeOutputFolder,
  writeOutputOrWarn,
} from '../shared/output-paths.js';
import { parseProgressLine } from '../shared/progress.js';
import { ProgressBar } from '../shared/progress-bar.js';
import { generatePsk, generateX509 } from '../shared/tls/generate.js';
import { reportTable } from '../source/report.js';
import { freeUdpPort, probeCoverage, ServiceProbe } from './lib/service-probe.js';
import { type Side, spawnSide } from './lib/spawn-side.js';
import { makeWorkFolder, removeWorkFolder } from './lib/work-folder.js';

const PROG = 'switchover';

const USAGE = `usage: npm start -- [--tls x509|psk] [options]\n\nRuns destination and source as two processes on 127.0.0.1 and migrates once.\n  --tls x509|psk             TLS on every channel with throwaway credentials made for this run\n  --probe-interval MS        period of the outside UDP probe of the guest service (default 5; 1 ms during the
                             handover; 0 = no probe)\n\n${USAGE_OPTIONS}`;

/** Removes `--tls MODE` (pair only) from argv; returns the mode. */
function takeTls(argv: string[]): 'x509' | 'psk' | undefined {
  const i = argv.findIndex((a) => a === '--tls' || a.startsWith('--tls='));
  if (i < 0) return undefined;
  const [arg] = argv.splice(i, 1);
  const mode = arg!.includes('=') ? arg!.slice(6) : argv.splice(i, 1)[0];
  if (mode !== 'x509' && mode !== 'psk')
    throw new ParameterError(ErrorCode.USAGE, `--tls: '${mode ?? ''}' is not one of x509, psk`);
  return mode;
}

/**
 * The outside probe's default period. Measured here (1 GiB paused guest, 2 page channels, interleaved
 * pairs): 1 ms cost ~18 % of the throughput, 2 ms ~7 %, 5 ms ~1 %; the handover itself is probed at
 * 1 ms whatever the period (FAST_PROBE_MS), so only the gap's start is seen at the coarser period.
 */
const DEFAULT_PROBE_MS = 5;
const FAST_PROBE_MS = 1;

/** How long the pair waits for the destination to announce its guest service. */
const SERVICE_WAIT_MS = 10_000;

/** Removes `--probe-interval MS` (pair only) from argv; returns the period in ms, 0 for no probe. */
function takeProbeInterval(argv: string[]): number {
  const i = argv.findIndex((a) => a === '--probe-interval' || a.startsWith('--probe-interval='));
  if (i < 0) return DEFAULT_PROBE_MS;
  const [arg] = argv.splice(i, 1);
  const raw = arg!.includes('=') ? arg!.slice(arg!.indexOf('=') + 1) : argv.splice(i, 1)[0];
  const ms = Number(raw);
  if (raw === undefined || raw.trim() === '' || !Number.isFinite(ms) || ms < 0 || ms > 60_000)
    throw new ParameterError(
      ErrorCode.USAGE,
      `--probe-interval: '${raw ?? ''}' is not a period of 0..60000 ms (0 runs no probe)`,
    );
  return ms;
}

const BOOLEAN = new Set(
  Object.entries(OPTION_SPEC)
    .filter(([, spec]) => spec.type === 'boolean')
    .map(([name]) => `--${name}`),
);

/** Options that only make sense for one side or that pair rewrites. */
const PAIR_ONLY = new Set(['--json', '--dump-ram', '--quiet', '--connect', '--listen', '--linger']);

function passThrough(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const name = a.split('=')[0]!;
    const takesValue = !a.includes('=') && !BOOLEAN.has(name);
    if (PAIR_ONLY.has(name)) {
      if (takesValue) i++;
      continue;
    }
    out.push(a);
    if (takesValue && i + 1 < argv.length) out.push(argv[++i]!);
  }
  return out;
}

/** What a signal handler needs to end a pair run: its work folder, its processes, how to cancel. */
interface PairRun {
  work: string;
  probe: ServiceProbe;
  sides: Side[];
  /** Set while the source migrates: the first SIGINT cancels the migration instead of ending the pair. */
  cancel: (() => void) | null;
  /** Set when a signal ends the pair (endOnSignal): later signals, and the run itself, wait for it. */
  ending: Promise<void> | null;
}

/** How long a signalled pair waits for its probe process to stop before it removes the work folder. */
const PROBE_STOP_MS = 2000;

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const tlsMode = takeTls(argv);
  const probeInterval = takeProbeInterval(argv);
  const o = parseCommon(argv);
  if (o.help) {
    process.stdout.write(`${USAGE}\n`);
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
  const onSignal = (signal: NodeJS.Signals) => {
    if (signal === 'SIGINT' && pair.cancel) {
      const cancel = pair.cancel;
      pair.cancel = null;
      return cancel();
    }
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
    return await runPair(o, argv, tlsMode, probeInterval, pair).finally(() => pair.ending);
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
  if (pair.ending !== null) side.kill('SIGTERM');
}

/**
 * A signal outside the one cancel ends the pair at once, as the default action did, but stops the
 * sides and the probe and removes the work folder (with its keys) first.
 */
async function endOnSignal(pair: PairRun, signal: NodeJS.Signals): Promise<void> {
  for (const side of pair.sides) side.kill('SIGTERM');
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

async function runPair(
  o: CommonOptions,
  argv: string[],
  tlsMode: 'x509' | 'psk' | undefined,
  probeInterval: number,
  pair: PairRun,
): Promise<number> {
  const { work, probe } = pair;
  // both sides get the same capabilities (default return-path,multifd; see shared/options.ts)
  const common = passThrough(argv);
  if (tlsMode === 'x509') common.push('--tls-creds', await generateX509(join(work, 'tls')));
  if (tlsMode === 'psk') common.push('--tls-psk', await generatePsk(join(work, 'keys.psk')));
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
      total: o.ramBytes,
      transferred: Number(p.transferred),
      mbps: Number(p.mbps),
      dirtyPagesRate: Number(p['dirty-pages-rate']),
      iteration: Number(p.iteration),
      expectedDowntime: Number(p['expected-downtime']),
    });
  };
  // The probe must be sending before the source starts, or a short migration is over before it
  // looks: the source's service gets a port chosen here, and the source waits for the probe.
  const userService = argv.some((a) => a === '--service' || a.startsWith('--service='));
  const srcService = probeInterval > 0 && !userService ? `127.0.0.1:${await freeUdpPort()}` : null;
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
    // --service given by the user: the old way, the probe starts once both services are known
    if (!srcService && services.length === 2 && probeInterval > 0)
      void probe.start(services, probeInterval, Math.min(FAST_PROBE_MS, probeInterval));
    return true;
  };
  const dst = spawnSide(
    'destination',
    [
      '--listen',
      '127.0.0.1:0',
      '--ram',
      String(o.ramBytes),
      ...common,
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
      ...common,
      ...(srcService ? ['--service', srcService] : []),
      '--json',
      srcJson,
      ...(o.quiet ? ['--quiet'] : []),
      ...(o.dumpRam ? ['--dump-ram', join(o.dumpRam, 'source.ram')] : []),
    ],
    {
      onStderrLine: (l) =>
        noteService(l) || (l.startsWith('progress ') ? onProgress(l) : log(`[source] ${l}`)),
    },
  );
  addSide(pair, src);
  pair.cancel = () => src.kill('SIGINT');
  const srcCode = await src.exited;
  pair.cancel = null;
  const dstCode = await destinationAfterSource(dst, accepted, o.lingerMs);
  bar?.done();
  const probeResult = await probe.stop();
  const report = await mergeReports(srcJson, dstJson);
  if (probeResult) {
    report.probe = probeCoverage(probeResult, report.status, report['downtime-start-t']);
    const why = (report.probe as Record<string, unknown>)['not-covered'];
    if (why) log(`outside probe: no service downtime (${why})`);
  }
  report['exit-codes'] = { source: srcCode, destination: dstCode };
  if (!o.quiet) process.stdout.write(`${reportTable(report)}\n`);
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

/** After a migration the destination checks its guest and exits (after --linger): this long at most. */
const DESTINATION_AFTER_SOURCE_MS = 60_000;

/**
 * The source has exited. A destination that never saw it connect would wait for a source forever
 * (a source that failed on its options, its service port, ...): it is stopped at once. Otherwise it
 * gets its own time to finish (self-check, --linger), bounded, then SIGTERM and, 5 s later, SIGKILL.
 */
async function destinationAfterSource(
  dst: Side,
  accepted: boolean,
  lingerMs: number,
): Promise<number | string> {
  if (!accepted) dst.kill('SIGTERM');
  const wait = (ms: number) =>
    Promise.race([dst.exited, new Promise<null>((r) => setTimeout(() => r(null), ms).unref())]);
  const code = (await wait(accepted ? lingerMs + DESTINATION_AFTER_SOURCE_MS : 5000)) ?? null;
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

runCli(PROG, USAGE, main);
