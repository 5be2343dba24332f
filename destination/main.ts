/**
 * `npm run destination -- --listen HOST:PORT [options]`: waits for one migration, verifies it, runs
 * the guest. The bound HOST:PORT is the first stdout line (port 0 picks a free port).
 * Exit 0 when the guest runs here and checked itself clean, 1 on any failure (guest never started).
 */
import { writeFile } from 'node:fs/promises';
import { parseCommon } from '../shared/cli/args.js';
import { helpHint, usageText } from '../shared/cli/help.js';
import { reportTable } from '../shared/cli/report-table.js';
import { runCli } from '../shared/cli/run.js';
import { type DeviceSpec, destinationDevices } from '../shared/devices/registry.js';
import { ErrorCode, ParameterError } from '../shared/errors.js';
import { Guest, VCPU_ENTRY } from '../shared/guest/guest.js';
import { GuestServiceThread, SERVICE_ENTRY } from '../shared/guest/service-thread.js';
import type { Capabilities, Parameters } from '../shared/options.js';
import { checkOutputPaths, writeOutputOrWarn } from '../shared/output-paths.js';
import { QmpServer } from '../shared/qmp/server.js';
import { qmpIdentity } from '../shared/qmp/version.js';
import { prepareNativeHash } from '../shared/ram/native-hash.js';
import { describeTls } from '../shared/tls/config.js';
import { destinationSecurity } from '../shared/tls/policy.js';
import { prepareWorkerBundles } from '../shared/worker/spawn.js';
import { IncomingMigration, type IncomingResult } from './incoming.js';
import { Listener } from './listener.js';
import { DestinationMonitor } from './qmp-monitor.js';
import { PAGE_WORKER_ENTRY } from './ram/page-channels.js';

const PROG = 'switchover-destination';

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const o = parseCommon(argv, 'destination');
  if (o.help) {
    process.stdout.write(`${usageText('destination')}\n`);
    return 0;
  }
  if (!o.listen && !o.qmp)
    throw new ParameterError(
      ErrorCode.USAGE,
      'destination: --listen HOST:PORT is required (or --qmp ADDRESS, to wait for QMP migrate-incoming)',
    );
  // before any guest or listener: a bad output path is a usage error now, not a failed migration later
  await checkOutputPaths(o);
  // the TLS credentials load now; a non-loopback address without TLS is refused for --listen here,
  // for migrate-incoming when it comes
  const security = destinationSecurity(o, o.listen?.host ?? 'localhost');
  for (const w of security.warnings) process.stderr.write(`${PROG}: warning: ${w}\n`);
  const preallocate = argv.some((a) => a === '--ram' || a.startsWith('--ram='));
  // before guest RAM exists: bundling and compiling fork a child, which would make all of RAM copy-on-write
  prepareWorkerBundles([VCPU_ENTRY, SERVICE_ENTRY, PAGE_WORKER_ENTRY]);
  prepareNativeHash();
  const guest = preallocate ? Guest.incoming(o.ramBytes) : null;
  const preallocMs = guest ? guest.memory.prefault() : 0;
  // boot the vCPU now, parked: its workload comes with the source's configuration
  if (guest) await guest.prepare({ dirtyRate: 0, pattern: 'uniform', dirtyRange: 0 });
  const service = new GuestServiceThread();
  const served = await service.start(o.service.host, o.service.port);
  if (guest) service.attach(guest.memory);
  process.stderr.write(`${PROG}: guest service on ${served.host}:${served.port}\n`);
  let qmp: QmpServer | null = null;
  let monitor: DestinationMonitor | null = null;
  let listener: Listener | null = null;

  /** The incoming side at `at`: one migration, these settings; resolves once it listens. */
  const startIncoming = async (
    at: { host: string; port: number },
    capabilities: Capabilities,
    parameters: Parameters,
  ) => {
    if (at !== o.listen)
      for (const w of destinationSecurity(o, at.host).warnings.filter((l) => l.startsWith('listening on')))
        process.stderr.write(`${PROG}: warning: ${w}\n`);
    const incoming = new IncomingMigration({
      capabilities,
      guest,
      preallocMs,
      dumpRam: o.dumpRam,
      stallTimeoutMs: o.stallTimeoutMs,
      maxPageChannels: parameters['multifd-channels'],
      pageSecurity: () => ({ tls: security.tls, key: listener?.migrationKey ?? Buffer.alloc(32) }),
      devicesFor: (config, memory, onPrepStart) =>
        destinationDevices(
          (config.guest as { devices?: DeviceSpec[] })?.devices ?? [],
          memory,
          capabilities,
          onPrepStart,
        ),
    });
    if (guest) monitor?.watchGuest(guest);
    else
      incoming.onGuest = (g) => {
        service.attach(g.memory);
        monitor?.watchGuest(g);
      };
    listener = new Listener(
      {
        onMain: (socket, hello) => void incoming.runMain(socket, hello.migrationId),
        onReturnPath: (socket) => incoming.attachReturnPath(socket),
        onRefused: (err, remote) =>
          process.stderr.write(`${PROG}: refused ${remote}: ${err.code}: ${err.message}\n`),
        onAccepted: (hello, remote, transport) =>
          process.stderr.write(
            `${PROG}: migration ${hello.migrationId.toString('hex')} from ${remote} (${transport})\n`,
          ),
      },
      { helloTimeoutMs: o.helloTimeoutMs, tls: security.tls },
    );
    const bound = await listener.listen(at.host, at.port);
    if (security.tls && !o.quiet) process.stderr.write(`${PROG}: ${describeTls(security.tls, 'server')}\n`);
    process.stdout.write(`${bound.host.includes(':') ? `[${bound.host}]` : bound.host}:${bound.port}\n`);
    return { incoming, bound };
  };

  /** The end of the one incoming migration: the report, its JSON, the exit code. */
  const finish = async (result: IncomingResult) => {
    result.report['peak-rss'] = process.resourceUsage().maxRSS * 1024;
    process.stdout.write(`${reportTable(result.report)}\n`);
    // the migration is over: a report that cannot be written now is a warning, the exit code says how it ended
    const json = o.json;
    if (json) {
      const text = `${JSON.stringify(result.report, null, 2)}\n`;
      await writeOutputOrWarn(PROG, '--json', json, () => writeFile(json, text));
    }
    if (result.status !== 'completed') {
      process.stderr.write(`${PROG}: ${result.error!.code}: ${result.error!.message}\n`);
      return 1;
    }
    const selfCheck = (result.report.guest as { 'self-check': { ok: boolean } })['self-check'];
    return selfCheck.ok ? 0 : 1;
  };
  const end = async (incoming: IncomingMigration | null) => {
    (listener as Listener | null)?.close();
    service.close();
    await (incoming?.guest ?? guest)?.shutdown();
  };

  if (o.qmp) {
    // driven over QMP: the incoming side starts at migrate-incoming (or --listen), the process ends at quit
    let quit!: () => void;
    const quitting = new Promise<void>((resolve) => {
      quit = resolve;
    });
    let current: IncomingMigration | null = null;
    let code = 0;
    monitor = new DestinationMonitor({
      capabilities: o.capabilities,
      parameters: o.parameters,
      listen: async (at, capabilities, parameters) => {
        const started = await startIncoming(at, capabilities, parameters);
        current = started.incoming;
        void started.incoming.done.then(async (r) => {
          code = await finish(r);
        });
        return started;
      },
      emit: (event, data) => qmp?.emit(event, data),
      quit,
    });
    qmp = new QmpServer({ ...qmpIdentity, commands: monitor.commands() });
    process.stderr.write(`${PROG}: QMP on ${await qmp.listen(o.qmp)}\n`);
    process.once('SIGINT', quit);
    process.once('SIGTERM', quit);
    if (o.listen) {
      const started = await startIncoming(o.listen, o.capabilities, o.parameters);
      current = started.incoming;
      monitor.adopt(started.incoming, started.bound);
      void started.incoming.done.then(async (r) => {
        code = await finish(r);
      });
    }
    await quitting;
    await qmp.close();
    await end(current);
    return code;
  }

  const { incoming } = await startIncoming(o.listen!, o.capabilities, o.parameters);
  const result = await incoming.done;
  // while the guest lingers here, the listener stays open so a second source is refused and logged
  if (result.status === 'completed' && o.lingerMs > 0) await new Promise((r) => setTimeout(r, o.lingerMs));
  await end(incoming);
  return finish(result);
}

runCli(PROG, helpHint('destination'), main);
