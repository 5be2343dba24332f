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
import { checkOutputPaths, writeOutputOrWarn } from '../shared/output-paths.js';
import { prepareNativeHash } from '../shared/ram/native-hash.js';
import { describeTls } from '../shared/tls/config.js';
import { destinationSecurity } from '../shared/tls/policy.js';
import { prepareWorkerBundles } from '../shared/worker/spawn.js';
import { IncomingMigration } from './incoming.js';
import { Listener } from './listener.js';
import { PAGE_WORKER_ENTRY } from './ram/page-channels.js';

const PROG = 'switchover-destination';

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const o = parseCommon(argv, 'destination');
  if (o.help) {
    process.stdout.write(`${usageText('destination')}\n`);
    return 0;
  }
  if (!o.listen) throw new ParameterError(ErrorCode.USAGE, 'destination: --listen HOST:PORT is required');
  // before any guest or listener: a bad output path is a usage error now, not a failed migration later
  await checkOutputPaths(o);
  const security = destinationSecurity(o, o.listen.host);
  for (const w of security.warnings) process.stderr.write(`switchover-destination: warning: ${w}\n`);
  const preallocate = argv.some((a) => a === '--ram' || a.startsWith('--ram='));
  // before guest RAM exists: bundling and compiling fork a child, which would make all of RAM copy-on-write
  prepareWorkerBundles([VCPU_ENTRY, SERVICE_ENTRY, PAGE_WORKER_ENTRY]);
  prepareNativeHash();
  const guest = preallocate ? Guest.incoming(o.ramBytes) : null;
  const preallocMs = guest ? guest.memory.prefault() : 0;
  // boot the vCPU now, parked: its workload comes with the source's configuration
  if (guest) await guest.prepare({ dirtyRate: 0, pattern: 'uniform', dirtyRange: 0 });
  const incoming = new IncomingMigration({
    capabilities: o.capabilities,
    guest,
    preallocMs,
    dumpRam: o.dumpRam,
    stallTimeoutMs: o.stallTimeoutMs,
    maxPageChannels: o.parameters['multifd-channels'],
    pageSecurity: () => ({ tls: security.tls, key: listener.migrationKey ?? Buffer.alloc(32) }),
    devicesFor: (config, memory, onPrepStart) =>
      destinationDevices(
        (config.guest as { devices?: DeviceSpec[] })?.devices ?? [],
        memory,
        o.capabilities,
        onPrepStart,
      ),
  });
  const listener = new Listener(
    {
      onMain: (socket, hello) => void incoming.runMain(socket, hello.migrationId),
      onReturnPath: (socket) => incoming.attachReturnPath(socket),
      onRefused: (err, remote) =>
        process.stderr.write(`switchover-destination: refused ${remote}: ${err.code}: ${err.message}\n`),
      onAccepted: (hello, remote, transport) =>
        process.stderr.write(
          `switchover-destination: migration ${hello.migrationId.toString('hex')} from ${remote} (${transport})\n`,
        ),
    },
    { helloTimeoutMs: o.helloTimeoutMs, tls: security.tls },
  );
  const bound = await listener.listen(o.listen.host, o.listen.port);
  if (security.tls && !o.quiet)
    process.stderr.write(`switchover-destination: ${describeTls(security.tls, 'server')}\n`);
  process.stdout.write(`${bound.host.includes(':') ? `[${bound.host}]` : bound.host}:${bound.port}\n`);
  const service = new GuestServiceThread();
  const served = await service.start(o.service.host, o.service.port);
  if (guest) service.attach(guest.memory);
  else incoming.onGuest = (g) => service.attach(g.memory);
  process.stderr.write(`switchover-destination: guest service on ${served.host}:${served.port}\n`);
  const result = await incoming.done;
  // while the guest lingers here, the listener stays open so a second source is refused and logged
  if (result.status === 'completed' && o.lingerMs > 0) await new Promise((r) => setTimeout(r, o.lingerMs));
  listener.close();
  service.close();
  await incoming.guest?.shutdown();
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
}

runCli(PROG, helpHint('destination'), main);
