/**
 * `npm run source -- --connect HOST:PORT [options]`: boots the guest, migrates it to a listening
 * destination, prints the report. Exit 0 completed, 1 failed or cancelled, 2 bad usage.
 * SIGINT/SIGTERM cancel the migration; the guest keeps running until the process ends.
 * With --qmp ADDRESS it is driven over QMP instead (source/qmp-monitor.ts): attempts start with
 * `migrate` (or --connect), each prints its report, and the process ends at `quit` (exit 0) or a
 * signal (the last attempt's outcome).
 */
import { writeFile } from 'node:fs/promises';
import { guestBytes, parseCommon } from '../shared/cli/args.js';
import { helpHint, usageText } from '../shared/cli/help.js';
import { ProgressBar } from '../shared/cli/progress-bar.js';
import { formatProgressLine } from '../shared/cli/progress-line.js';
import { reportTable } from '../shared/cli/report-table.js';
import { runCli } from '../shared/cli/run.js';
import { renderTimeline } from '../shared/cli/timeline.js';
import { sourceDevices } from '../shared/devices/registry.js';
import { ErrorCode, ParameterError } from '../shared/errors.js';
import { writeRamDump } from '../shared/guest/dump.js';
import { Guest, VCPU_ENTRY } from '../shared/guest/guest.js';
import { GuestServiceThread, SERVICE_ENTRY } from '../shared/guest/service-thread.js';
import type { Capabilities, Parameters } from '../shared/options.js';
import { checkOutputPaths, writeOutputOrWarn } from '../shared/output-paths.js';
import { QmpServer } from '../shared/qmp/server.js';
import { qmpIdentity } from '../shared/qmp/version.js';
import { prepareNativeHash } from '../shared/ram/native-hash.js';
import { sourceSecurity } from '../shared/tls/policy.js';
import { prepareWorkerBundles } from '../shared/worker/spawn.js';
import { MetricsServer } from './metrics.js';
import { SourceMigration } from './migration.js';
import { SourceMonitor } from './qmp-monitor.js';
import { PAGE_WORKER_ENTRY } from './ram/page-channels.js';
import type { MigrationReport } from './report.js';
import { timelineData } from './timeline-data.js';

const PROG = 'switchover-source';

async function main(): Promise<number> {
  const o = parseCommon(process.argv.slice(2), 'source');
  if (o.help) {
    process.stdout.write(`${usageText('source')}\n`);
    return 0;
  }
  if (!o.connect && !o.qmp)
    throw new ParameterError(
      ErrorCode.USAGE,
      'source: --connect HOST:PORT is required (or --qmp ADDRESS, to wait for QMP migrate)',
    );
  // from here on a signal cancels: one that comes while the guest boots ends in a 'cancelled' report
  // (the migration starts cancelled), not in the default action's silent death
  const abort = new AbortController();
  process.once('SIGINT', () => abort.abort());
  process.once('SIGTERM', () => abort.abort());
  // before any guest or connection: a bad output path is a usage error now, not a lost report later
  await checkOutputPaths(o);
  // without --connect (QMP) each `migrate` target is checked when it comes (see create)
  const security = sourceSecurity(o, o.connect?.host ?? 'localhost');
  for (const w of security.warnings) process.stderr.write(`switchover-source: warning: ${w}\n`);
  const deviceSpecs = o.devices;
  // from the start, before the guest boots: a scraper sees 'setup' and a busy port is a usage error
  const metrics = o.metricsPort === undefined ? null : new MetricsServer();
  if (metrics)
    process.stderr.write(
      `switchover-source: metrics on http://127.0.0.1:${await metrics.listen(o.metricsPort!)}/metrics\n`,
    );
  // before guest RAM exists: bundling and compiling fork a child, which would make all of RAM copy-on-write
  prepareWorkerBundles([VCPU_ENTRY, SERVICE_ENTRY, PAGE_WORKER_ENTRY]);
  prepareNativeHash();
  const guest = Guest.boot({ ramBytes: o.ramBytes, seed: o.seed, fill: o.fill });
  const workload = { dirtyRate: o.dirtyRate, pattern: o.pattern, dirtyRange: o.dirtyRange };
  await guest.start(workload);
  const service = new GuestServiceThread();
  const served = await service.start(o.service.host, o.service.port);
  service.attach(guest.memory);
  process.stderr.write(`switchover-source: guest service on ${served.host}:${served.port}\n`);
  // a person at a terminal gets a bar; anything else (the pair, scripts) parseable lines
  const bar = !o.quiet && process.stderr.isTTY ? new ProgressBar() : null;
  let last: SourceMigration | null = null;
  const create = (
    target: { host: string; port: number },
    capabilities: Capabilities,
    parameters: Parameters,
  ) => {
    if (target !== o.connect)
      for (const w of sourceSecurity(o, target.host).warnings.filter((l) => l.startsWith('migrating to')))
        process.stderr.write(`${PROG}: warning: ${w}\n`);
    const migration = new SourceMigration({
      host: target.host,
      port: target.port,
      channelOptions: { tls: security.tls },
      guest,
      capabilities,
      parameters,
      guestConfig: {
        ...workload,
        dirtyRate: Number.isFinite(o.dirtyRate) ? o.dirtyRate : 'max',
        seed: o.seed,
        fill: o.fill,
        devices: deviceSpecs,
      },
      devices: sourceDevices(deviceSpecs, capabilities, guest),
      signal: abort.signal,
      timeoutMs: o.timeoutMs,
      switchoverPolicy: o.switchoverPolicy,
      stallTimeoutMs: o.stallTimeoutMs,
      progressWarningMs: o.progressWarningMs,
      policies: o.policies,
      // a decision changes how the migration ends: said even with --quiet, as warnings are
      onDecision: (d) => process.stderr.write(`${PROG}: ${d.event}: ${d.reason}\n`),
      onPass: (pass) => {
        if (capabilities.events) qmp?.emit('MIGRATION_PASS', { pass });
      },
      onProgress: (p) => {
        metrics?.update(p);
        if (bar) bar.update({ ...p, total: guestBytes(o) });
        else if (!o.quiet) process.stderr.write(`${formatProgressLine(p)}\n`);
      },
    });
    last = migration;
    metrics?.begin(() => migration.metricsFacts());
    return migration;
  };
  /** What the command line does with a finished attempt: outputs, the report, its JSON. */
  const finish = async (report: MigrationReport) => {
    bar?.done(report.status);
    metrics?.finish(report);
    // outputs that fail now are warnings: the migration is over, and the report and exit code say how
    const { timeline, dumpRam, json } = o;
    const records = (last as SourceMigration | null)?.tracer.records;
    if (timeline && records) {
      const title = `switchover: ${report.status}${report.downtime === undefined ? '' : `, downtime ${report.downtime} ms`}`;
      await writeOutputOrWarn(PROG, '--timeline', timeline, async () => {
        const out = await renderTimeline(timelineData(records, guest.memory.pageSize, title), timeline);
        report.timeline = out.png ?? out.svg;
        // a .png asked for without rsvg-convert: say what was written instead
        if (out.note) process.stderr.write(`${PROG}: warning: --timeline ${timeline}: ${out.note}\n`);
      });
    }
    if (report.status === 'completed' && dumpRam)
      await writeOutputOrWarn(PROG, '--dump-ram', dumpRam, () => writeRamDump(dumpRam, guest.memory.bytes));
    if (report.status !== 'completed') {
      // the guest must still be running: prove it with two heartbeats 100 ms apart
      const before = guest.heartbeat().tick;
      await new Promise((r) => setTimeout(r, 100));
      report.guest['running-after-failure'] = guest.running && guest.heartbeat().tick > before;
    }
    process.stdout.write(`${reportTable(report)}\n`);
    if (json) {
      const text = `${JSON.stringify(report, null, 2)}\n`;
      await writeOutputOrWarn(PROG, '--json', json, () => writeFile(json, text));
    }
    if (report.status !== 'completed')
      process.stderr.write(`${PROG}: ${report['error-code']}: ${report['error-desc']}\n`);
  };
  const end = async (status: string | undefined) => {
    service.close();
    metrics?.close();
    await guest.shutdown();
    return status === undefined || status === 'completed' ? 0 : 1;
  };

  let qmp: QmpServer | null = null;
  if (o.qmp) {
    // driven over QMP: attempts come from `migrate` (and --connect, if given), the process from `quit`
    let lastReport: MigrationReport | null = null;
    let quit!: () => void;
    const quitting = new Promise<void>((resolve) => {
      quit = resolve;
    });
    const monitor = new SourceMonitor({
      guest,
      capabilities: o.capabilities,
      parameters: o.parameters,
      create,
      ended: async (report) => {
        lastReport = report;
        await finish(report);
      },
      emit: (event, data) => qmp?.emit(event, data),
      quit,
    });
    qmp = new QmpServer({ ...qmpIdentity, commands: monitor.commands() });
    process.stderr.write(`${PROG}: QMP on ${await qmp.listen(o.qmp)}\n`);
    abort.signal.addEventListener('abort', () => quit(), { once: true });
    if (o.connect) monitor.migrate(o.connect);
    await quitting;
    // a signal or quit during an attempt: it is cancelled (the guest runs on here) and reported; quit
    // waited for the whole attempt before, however long it took to converge
    monitor.cancel();
    await monitor.attempt?.catch(() => {});
    await qmp.close();
    // quit: 0, as QEMU; a signal: how the last attempt ended (none: 0)
    return end(abort.signal.aborted ? (lastReport as MigrationReport | null)?.status : undefined);
  }

  let report = await create(o.connect!, o.capabilities, o.parameters).run();
  if (report.status === 'failed' && o.retryConnect) {
    // the guest kept running on this side: try again, the same guest, to a fresh destination
    const first = report;
    process.stderr.write(
      `switchover-source: first attempt failed (${first['error-code']}); retrying to ${o.retryConnect.host}:${o.retryConnect.port}\n`,
    );
    report = await create(o.retryConnect, o.capabilities, o.parameters).run();
    report['first-attempt'] = {
      status: first.status,
      'error-code': first['error-code'],
      'error-desc': first['error-desc'],
      'total-time': first['total-time'],
    };
  }
  await finish(report);
  return end(report.status);
}

runCli(PROG, helpHint('source'), main);
