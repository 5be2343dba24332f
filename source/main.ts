/**
 * `npm run source -- --connect HOST:PORT [options]`: boots the guest, migrates it to a listening
 * destination, prints the report. Exit 0 completed, 1 failed or cancelled, 2 bad usage.
 * SIGINT/SIGTERM cancel the migration; the guest keeps running until the process ends.
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
import { checkOutputPaths, writeOutputOrWarn } from '../shared/output-paths.js';
import { prepareNativeHash } from '../shared/ram/native-hash.js';
import { sourceSecurity } from '../shared/tls/policy.js';
import { prepareWorkerBundles } from '../shared/worker/spawn.js';
import { MetricsServer } from './metrics.js';
import { SourceMigration } from './migration.js';
import { PAGE_WORKER_ENTRY } from './ram/page-channels.js';
import { timelineData } from './timeline-data.js';

const PROG = 'switchover-source';

async function main(): Promise<number> {
  const o = parseCommon(process.argv.slice(2), 'source');
  if (o.help) {
    process.stdout.write(`${usageText('source')}\n`);
    return 0;
  }
  if (!o.connect) throw new ParameterError(ErrorCode.USAGE, 'source: --connect HOST:PORT is required');
  // from here on a signal cancels: one that comes while the guest boots ends in a 'cancelled' report
  // (the migration starts cancelled), not in the default action's silent death
  const abort = new AbortController();
  process.once('SIGINT', () => abort.abort());
  process.once('SIGTERM', () => abort.abort());
  // before any guest or connection: a bad output path is a usage error now, not a lost report later
  await checkOutputPaths(o);
  const security = sourceSecurity(o, o.connect.host);
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
  const migrateTo = (target: { host: string; port: number }) => {
    last = new SourceMigration({
      host: target.host,
      port: target.port,
      channelOptions: { tls: security.tls },
      guest,
      capabilities: o.capabilities,
      parameters: o.parameters,
      guestConfig: {
        ...workload,
        dirtyRate: Number.isFinite(o.dirtyRate) ? o.dirtyRate : 'max',
        seed: o.seed,
        fill: o.fill,
        devices: deviceSpecs,
      },
      devices: sourceDevices(deviceSpecs, o.capabilities, guest),
      signal: abort.signal,
      timeoutMs: o.timeoutMs,
      switchoverPolicy: o.switchoverPolicy,
      stallTimeoutMs: o.stallTimeoutMs,
      progressWarningMs: o.progressWarningMs,
      policies: o.policies,
      // a decision changes how the migration ends: said even with --quiet, as warnings are
      onDecision: (d) => process.stderr.write(`${PROG}: ${d.event}: ${d.reason}\n`),
      onProgress: (p) => {
        metrics?.update(p);
        if (bar) bar.update({ ...p, total: guestBytes(o) });
        else if (!o.quiet) process.stderr.write(`${formatProgressLine(p)}\n`);
      },
    });
    const migration = last;
    metrics?.begin(() => migration.metricsFacts());
    return migration.run();
  };
  let report = await migrateTo(o.connect);
  if (report.status === 'failed' && o.retryConnect) {
    // the guest kept running on this side: try again, the same guest, to a fresh destination
    const first = report;
    process.stderr.write(
      `switchover-source: first attempt failed (${first['error-code']}); retrying to ${o.retryConnect.host}:${o.retryConnect.port}\n`,
    );
    report = await migrateTo(o.retryConnect);
    report['first-attempt'] = {
      status: first.status,
      'error-code': first['error-code'],
      'error-desc': first['error-desc'],
      'total-time': first['total-time'],
    };
  }
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
  service.close();
  metrics?.close();
  await guest.shutdown();
  process.stdout.write(`${reportTable(report)}\n`);
  if (json) {
    const text = `${JSON.stringify(report, null, 2)}\n`;
    await writeOutputOrWarn(PROG, '--json', json, () => writeFile(json, text));
  }
  if (report.status !== 'completed') {
    process.stderr.write(`${PROG}: ${report['error-code']}: ${report['error-desc']}\n`);
    return 1;
  }
  return 0;
}

runCli(PROG, helpHint('source'), main);
