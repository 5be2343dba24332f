/**
 * Command-line options shared by `source`, `destination` and `pair` (names in ../shared/INTERFACE.md,
 * QEMU's where QEMU has one). Bad options: one-line error plus usage, exit 2.
 */
import { parseArgs } from 'node:util';
import { ErrorCode, MigrationError, ParameterError } from './errors.js';
import { PAGE_SIZE } from './guest/layout.js';
import type { DirtyPattern } from './guest/workload.js';
import { guestRamCap, MIN_GUEST_RAM } from './host-memory.js';
import {
  type Capabilities,
  COMMAND_DEFAULT_CAPABILITIES,
  checkParameters,
  DEFAULT_PARAMETERS,
  type Parameters,
  parseCapabilityList,
} from './options.js';
import { parseDuration, parseRate, parseSize } from './units.js';

export const OPTION_SPEC = {
  connect: { type: 'string' },
  listen: { type: 'string' },
  ram: { type: 'string', default: '512M' },
  'ram-fill': { type: 'string', default: 'random' },
  'dirty-rate': { type: 'string', default: '32M' },
  'dirty-pattern': { type: 'string', default: 'uniform' },
  'dirty-range': { type: 'string' },
  seed: { type: 'string', default: '1' },
  capabilities: { type: 'string' },
  'downtime-limit': { type: 'string' },
  'max-bandwidth': { type: 'string' },
  'avail-switchover-bandwidth': { type: 'string' },
  'multifd-channels': { type: 'string' },
  'switchover-policy': { type: 'string', default: 'floor' },
  device: { type: 'string', multiple: true },
  timeout: { type: 'string' },
  'stall-timeout': { type: 'string' },
  'retry-connect': { type: 'string' },
  service: { type: 'string', default: '127.0.0.1:0' },
  json: { type: 'string' },
  'dump-ram': { type: 'string' },
  timeline: { type: 'string' },
  'metrics-port': { type: 'string' },
  linger: { type: 'string' },
  'tls-creds': { type: 'string' },
  'tls-psk': { type: 'string' },
  'tls-hostname': { type: 'string' },
  'hello-timeout': { type: 'string' },
  insecure: { type: 'boolean', default: false },
  quiet: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

export interface CommonOptions {
  connect?: { host: string; port: number };
  listen?: { host: string; port: number };
  ramBytes: number;
  fill: 'random' | 'zero';
  dirtyRate: number;
  pattern: DirtyPattern;
  dirtyRange: number;
  seed: number;
  capabilities: Capabilities;
  parameters: Parameters;
  devices: string[];
  timeoutMs: number;
  /** 'floor' (default): keep iterating while rounds still shrink the remainder; 'qemu': switch as soon as it fits. */
  switchoverPolicy: 'floor' | 'qemu';
  /** A channel with no progress (or no PONG) for this long fails the migration; 0 = never. */
  stallTimeoutMs: number;
  /** Where the guest's UDP echo service listens (for an outside probe). */
  service: { host: string; port: number };
  /** Source: after a failed migration, migrate the same running guest to this address. */
  retryConnect?: { host: string; port: number };
  json?: string;
  dumpRam?: string;
  timeline?: string;
  metricsPort?: number;
  lingerMs: number;
  /** x509 credentials directory (QEMU tls-creds-x509 file names); TLS on every channel. */
  tlsCreds?: string;
  /** TLS-PSK key file (`identity:hex-key` lines, QEMU tls-creds-psk). */
  tlsPsk?: string;
  /** Source: name the destination's certificate must carry (QEMU tls-hostname). */
  tlsHostname?: string;
  /** Destination: first byte, TLS handshake and hello must arrive within this (total, not idle). */
  helloTimeoutMs: number;
  /** Destination: allow plaintext on a non-loopback address. */
  insecure: boolean;
  quiet: boolean;
  help: boolean;
}

export const USAGE_OPTIONS = `Guest:
  --ram SIZE                 guest RAM (default 512M; K/M/G suffixes)
  --ram-fill random|zero     initial guest content (default random)
  --dirty-rate RATE|max      bytes/s of guest page writes (default 32M)
  --dirty-pattern P          uniform | hot | sequential (default uniform)
  --dirty-range SIZE         part of RAM the guest writes (default: all of it)
  --seed N                   workload seed (default 1)
  --device SPEC              precopy:size=SIZE,dirty-rate=RATE,prep=MS,stop-copy=SIZE (repeatable)
Migration (QEMU names):
  --capabilities LIST        comma list of QEMU names: return-path, switchover-ack, multifd
                             (default return-path,multifd: page channels; 'none' = QEMU's plain default)
  --downtime-limit MS        default 300 (0..2000000)
  --max-bandwidth RATE       bytes/s while the guest runs, 0 = unlimited (default 128M)
  --avail-switchover-bandwidth RATE   bandwidth assumed at switchover, 0 = measure (default 0)
  --multifd-channels N       page channels with multifd (default 2; a destination accepts at most its own)
  --switchover-policy P      floor (default): iterate while a round still shrinks the remainder a lot,
                             so downtime nears the floor; qemu: switch as soon as it fits the limit
  --timeout MS               fail if not completed after MS (default 0 = never)
  --stall-timeout MS         fail when a channel makes no progress / no PONG for MS (default 10000; 0 = never)
  --service HOST:PORT        the guest's UDP echo service (default 127.0.0.1:0; printed on stderr)
  --retry-connect HOST:PORT  source: after a failed migration, migrate the still-running guest there
Security (QEMU tls-creds; TLS covers every channel):
  --tls-creds DIR            x509: destination DIR/server-cert.pem, server-key.pem [, ca-cert.pem = verify-peer];
                             source DIR/ca-cert.pem [, client-cert.pem, client-key.pem]
  --tls-psk FILE             TLS-PSK: lines identity:hex-key (source uses the first identity)
  --tls-hostname NAME        source: name the destination certificate must carry (default: --connect host)
  --hello-timeout MS         destination: a connection must finish TLS and its hello within MS (default 5000)
  --insecure                 destination: allow plaintext on a non-loopback --listen address (warns)
Output:
  --json FILE                write the report as JSON
  --dump-ram PATH            test oracle: write guest RAM (source: as stopped; destination: before resume)
  --timeline FILE            source/pair: a chart of the migration (.svg, or .png via rsvg-convert)
  --metrics-port N           source/pair: Prometheus metrics on 127.0.0.1:N/metrics (0 = any port)
  --quiet                    no progress output
  --help                     this text`;

function num(text: string | undefined, what: string, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isFinite(n))
    throw new ParameterError(ErrorCode.USAGE, `${what}: '${text}' is not a number`, { field: what });
  return n;
}

function port(text: string, what: string): number {
  const n = num(text, what, 0);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new ParameterError(ErrorCode.USAGE, `${what}: '${text}' is not a port (0..65535)`, { field: what });
  return n;
}

/** Whole pages, big enough for the guest's layout, no more than the host can hold (guestRamCap). */
function guestRam(bytes: number, text: string): number {
  const fail = (why: string) =>
    new ParameterError(ErrorCode.USAGE, `--ram: '${text}' ${why}`, { field: '--ram' });
  if (bytes % PAGE_SIZE !== 0) throw fail(`is not a whole number of ${PAGE_SIZE}-byte pages`);
  if (bytes < MIN_GUEST_RAM) throw fail(`is below the smallest guest, ${MIN_GUEST_RAM / 1024}K`);
  const cap = guestRamCap();
  if (bytes > cap.bytes)
    throw fail(`is more than this host can hold: at most ${cap.bytes} bytes (${cap.why})`);
  return bytes;
}

function helloTimeout(text: string | undefined): number {
  if (text === undefined) return 5000;
  const ms = parseDuration(text, '--hello-timeout');
  if (ms < 1 || ms > 600_000)
    throw new ParameterError(ErrorCode.USAGE, `--hello-timeout: ${ms} ms is outside 1..600000`, {
      field: '--hello-timeout',
    });
  return ms;
}

/** Loopback: 127.0.0.0/8, ::1, ::ffff:127.x, and the name localhost. */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase();
  return h === 'localhost' || h === '::1' || /^(::ffff:)?127\.\d+\.\d+\.\d+$/.test(h);
}

export function parseHostPort(text: string, what: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(text);
  const port = m ? Number(m[2]) : Number.NaN;
  if (!m?.[1] || port > 65535)
    throw new ParameterError(ErrorCode.USAGE, `${what}: '${text}' is not HOST:PORT`, { field: what });
  return { host: m[1].replace(/^\[(.*)\]$/, '$1'), port };
}

function oneOf<T extends string>(value: string, allowed: readonly T[], what: string): T {
  if (!(allowed as readonly string[]).includes(value)) {
    throw new ParameterError(ErrorCode.USAGE, `${what}: '${value}' is not one of ${allowed.join(', ')}`, {
      field: what,
    });
  }
  return value as T;
}

export function parseCommon(argv: string[]): CommonOptions {
  let values: Record<string, unknown>;
  try {
    ({ values } = parseArgs({ args: argv, options: OPTION_SPEC, strict: true, allowPositionals: false }));
  } catch (err) {
    throw new ParameterError(ErrorCode.USAGE, (err as Error).message.split('\n')[0]!, {}, { cause: err });
  }
  const v = values as Record<string, string | undefined> & {
    device?: string[];
    insecure?: boolean;
    quiet: boolean;
    help: boolean;
  };
  const ramBytes = guestRam(parseSize(v.ram!, '--ram'), v.ram!);
  const parameters = checkParameters({
    'downtime-limit': num(v['downtime-limit'], '--downtime-limit', DEFAULT_PARAMETERS['downtime-limit']),
    'max-bandwidth':
      v['max-bandwidth'] === undefined
        ? DEFAULT_PARAMETERS['max-bandwidth']
        : parseRate(v['max-bandwidth'], '--max-bandwidth'),
    'avail-switchover-bandwidth':
      v['avail-switchover-bandwidth'] === undefined
        ? 0
        : parseRate(v['avail-switchover-bandwidth'], '--avail-switchover-bandwidth'),
    'multifd-channels': num(
      v['multifd-channels'],
      '--multifd-channels',
      DEFAULT_PARAMETERS['multifd-channels'],
    ),
  });
  return {
    connect: v.connect ? parseHostPort(v.connect, '--connect') : undefined,
    listen: v.listen ? parseHostPort(v.listen, '--listen') : undefined,
    ramBytes,
    fill: oneOf(v['ram-fill']!, ['random', 'zero'] as const, '--ram-fill'),
    dirtyRate: parseRate(v['dirty-rate']!, '--dirty-rate', true),
    pattern: oneOf(v['dirty-pattern']!, ['uniform', 'hot', 'sequential'] as const, '--dirty-pattern'),
    dirtyRange: v['dirty-range'] ? parseSize(v['dirty-range'], '--dirty-range') : ramBytes,
    seed: num(v.seed, '--seed', 1) >>> 0,
    capabilities: parseCapabilityList(v.capabilities ?? COMMAND_DEFAULT_CAPABILITIES),
    parameters,
    devices: v.device ?? [],
    timeoutMs: v.timeout ? parseDuration(v.timeout, '--timeout') : 0,
    switchoverPolicy: oneOf(v['switchover-policy']!, ['floor', 'qemu'] as const, '--switchover-policy'),
    stallTimeoutMs: v['stall-timeout'] ? parseDuration(v['stall-timeout'], '--stall-timeout') : 10_000,
    service: parseHostPort(v.service!, '--service'),
    retryConnect: v['retry-connect'] ? parseHostPort(v['retry-connect'], '--retry-connect') : undefined,
    json: v.json,
    dumpRam: v['dump-ram'],
    timeline: v.timeline,
    metricsPort: v['metrics-port'] === undefined ? undefined : port(v['metrics-port'], '--metrics-port'),
    lingerMs: v.linger ? parseDuration(v.linger, '--linger') : 0,
    tlsCreds: v['tls-creds'],
    tlsPsk: v['tls-psk'],
    tlsHostname: v['tls-hostname'],
    helloTimeoutMs: helloTimeout(v['hello-timeout']),
    insecure: v.insecure === true,
    quiet: v.quiet,
    help: v.help,
  };
}

/**
 * Runs a CLI entry: usage errors exit 2 with usage, migration errors exit 1 with one line
 * (`prog: CODE: message`), never a bare stack trace (SWITCHOVER_DEBUG=1 shows stacks).
 */
export function runCli(prog: string, usage: string, main: () => Promise<number>): void {
  const die = (err: unknown) => {
    const e =
      err instanceof MigrationError
        ? err
        : new MigrationError(ErrorCode.INTERNAL, String((err as Error)?.message ?? err));
    process.stderr.write(`${prog}: ${e.code}: ${e.message}\n`);
    if (process.env.SWITCHOVER_DEBUG === '1') process.stderr.write(`${(err as Error)?.stack}\n`);
    if (e.code === ErrorCode.USAGE || e.code === ErrorCode.PARAMETER || e.code === ErrorCode.CAPABILITY) {
      process.stderr.write(`${usage}\n`);
      process.exit(2);
    }
    process.exit(1);
  };
  process.on('uncaughtException', die);
  process.on('unhandledRejection', die);
  main().then((code) => process.exit(code), die);
}
