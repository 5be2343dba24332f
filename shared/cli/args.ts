/**
 * Parses one command's options (the table is option-table.ts): an option of another command, an
 * unknown one, or a value a user can get wrong is a usage error (MIG_ERR_USAGE, exit 2) naming the
 * option, before anything starts.
 */
import { parseArgs } from 'node:util';
import { type DeviceSpec, parseDeviceSpecs } from '../devices/registry.js';
import { ErrorCode, ParameterError } from '../errors.js';
import { PAGE_SIZE } from '../guest/layout.js';
import type { DirtyPattern } from '../guest/workload.js';
import { guestRamCap, MIN_GUEST_RAM } from '../host-memory.js';
import {
  type Capabilities,
  COMMAND_DEFAULT_CAPABILITIES,
  checkParameters,
  DEFAULT_PARAMETERS,
  type Parameters,
  parseCapabilityList,
} from '../options.js';
import {
  type DowntimeSteps,
  NOVA_DOWNTIME_STEPS,
  NOVA_STEP_DELAY_PER_GIB_MS,
  type PolicyOptions,
  TIMEOUT_ACTIONS,
} from '../policy-options.js';
import { parseQmpAddress, type QmpAddress } from '../qmp/server.js';
import { parseDuration, parseRate, parseSize } from '../units.js';
import { type Command, OPTIONS, type OptionDef, type OptionName, takenBy } from './option-table.js';

export interface CommonOptions {
  connect?: { host: string; port: number };
  /** A QMP monitor (source and destination): unix:PATH or tcp:HOST:PORT. */
  qmp?: QmpAddress;
  listen?: { host: string; port: number };
  ramBytes: number;
  fill: 'random' | 'zero';
  dirtyRate: number;
  pattern: DirtyPattern;
  dirtyRange: number;
  seed: number;
  capabilities: Capabilities;
  parameters: Parameters;
  /** Progress/completion timeouts with actions, downtime stepping (source and pair). */
  policies: PolicyOptions;
  devices: DeviceSpec[];
  timeoutMs: number;
  /** 'floor' (default): keep iterating while rounds still shrink the remainder; 'qemu': switch as soon as it fits. */
  switchoverPolicy: 'floor' | 'qemu';
  /** Warn once when `remaining` makes no new low for this long; 0 = never. */
  progressWarningMs: number;
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
  /** Pair: TLS with throwaway credentials. */
  tls?: 'x509' | 'psk';
  /** Pair: the outside probe's period in ms, 0 = no probe. */
  probeIntervalMs: number;
}

/** What a migration of this guest sends at least: its RAM and its devices' data (the bar's 100 %). */
export function guestBytes(o: CommonOptions): number {
  return o.ramBytes + o.devices.reduce((n, d) => n + d.size, 0);
}

/** The outside probe's default period (scripts/run-pair.ts says why 5 ms). */
export const DEFAULT_PROBE_MS = 5;

const PARSE_SPEC = Object.fromEntries(
  (Object.entries(OPTIONS) as [string, OptionDef][]).map(([name, d]) => [
    name,
    { type: d.type, ...(d.multiple ? { multiple: true } : {}), ...(d.short ? { short: d.short } : {}) },
  ]),
) as { [K in OptionName]: { type: (typeof OPTIONS)[K]['type']; multiple?: boolean; short?: string } };

/**
 * `--ram -5M` means the value -5M (then refused as a size), not a missing value: a string option
 * followed by something that is not one of our option names takes it as its value.
 */
function joinDashValues(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const def =
      a.startsWith('--') && !a.includes('=') ? (OPTIONS as Record<string, OptionDef>)[a.slice(2)] : undefined;
    const next = argv[i + 1];
    if (def?.type === 'string' && next?.startsWith('-') && !isOptionName(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}

function isOptionName(token: string): boolean {
  if (token === '-h') return true;
  return token.startsWith('--') && token.slice(2).split('=')[0]! in OPTIONS;
}

/** The first line of parseArgs' complaint, in our words where we can. */
function parseArgsMessage(err: unknown): string {
  const text = String((err as Error).message).split('\n')[0]!;
  const unknown = /^Unknown option '([^']+)'/.exec(text);
  if (unknown) return `unknown option '${unknown[1]}'`;
  const missing = /^Option '(--[\w-]+)[^']*' argument missing/.exec(text);
  if (missing) return `${missing[1]} needs a value`;
  return text;
}

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

/** QEMU's auto-converge and dirty-limit parameters (ranges checked by checkParameters). */
function throttleParameters(
  v: Record<string, string | undefined>,
  tailslow: boolean,
): Pick<
  Parameters,
  | 'throttle-trigger-threshold'
  | 'cpu-throttle-initial'
  | 'cpu-throttle-increment'
  | 'cpu-throttle-tailslow'
  | 'max-cpu-throttle'
  | 'vcpu-dirty-limit'
  | 'x-vcpu-dirty-limit-period'
> {
  const n = (name: Exclude<keyof Parameters, 'cpu-throttle-tailslow'>) =>
    num(v[name], `--${name}`, DEFAULT_PARAMETERS[name]);
  return {
    'throttle-trigger-threshold': n('throttle-trigger-threshold'),
    'cpu-throttle-initial': n('cpu-throttle-initial'),
    'cpu-throttle-increment': n('cpu-throttle-increment'),
    'cpu-throttle-tailslow': tailslow,
    'max-cpu-throttle': n('max-cpu-throttle'),
    'vcpu-dirty-limit': n('vcpu-dirty-limit'),
    'x-vcpu-dirty-limit-period': n('x-vcpu-dirty-limit-period'),
  };
}

/** The convergence policies; a step schedule only with --downtime-max, which must exceed the limit. */
function parsePolicies(
  v: Record<string, string | undefined>,
  ramBytes: number,
  downtimeLimit: number,
): PolicyOptions {
  const ms = (name: string) => (v[name] === undefined ? 0 : parseDuration(v[name]!, `--${name}`));
  const action = (name: string) => oneOf(v[name] ?? 'abort', TIMEOUT_ACTIONS, `--${name}`);
  let downtimeSteps: DowntimeSteps | null = null;
  const max = ms('downtime-max');
  if (max > 0) {
    if (max <= downtimeLimit)
      throw new ParameterError(
        ErrorCode.USAGE,
        `--downtime-max: ${max} ms is not above --downtime-limit (${downtimeLimit} ms): nothing to step`,
        { field: '--downtime-max' },
      );
    const steps = num(v['downtime-steps'], '--downtime-steps', NOVA_DOWNTIME_STEPS);
    if (!Number.isInteger(steps) || steps < 1 || steps > 1000)
      throw new ParameterError(ErrorCode.USAGE, `--downtime-steps: '${steps}' is not an integer in 1..1000`, {
        field: '--downtime-steps',
      });
    const gib = Math.max(1, ramBytes / 2 ** 30);
    const delayMs =
      v['downtime-step-delay'] === undefined
        ? Math.round(NOVA_STEP_DELAY_PER_GIB_MS * gib)
        : parseDuration(v['downtime-step-delay'], '--downtime-step-delay');
    downtimeSteps = { maxMs: Math.min(max, 2_000_000), steps, delayMs };
  } else if (v['downtime-steps'] !== undefined || v['downtime-step-delay'] !== undefined) {
    throw new ParameterError(
      ErrorCode.USAGE,
      '--downtime-steps and --downtime-step-delay need --downtime-max',
      {
        field: '--downtime-max',
      },
    );
  }
  return {
    progressTimeoutMs: ms('progress-timeout'),
    progressTimeoutAction: action('progress-timeout-action'),
    completionTimeoutPerGibMs: ms('completion-timeout-per-gib'),
    completionTimeoutAction: action('completion-timeout-action'),
    downtimeSteps,
  };
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

export function parseCommon(argv: string[], command: Command): CommonOptions {
  let values: Record<string, unknown>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: joinDashValues(argv),
      options: PARSE_SPEC,
      strict: true,
      allowPositionals: true,
    }));
  } catch (err) {
    throw new ParameterError(ErrorCode.USAGE, parseArgsMessage(err), {}, { cause: err });
  }
  if (positionals.length > 0)
    throw new ParameterError(
      ErrorCode.USAGE,
      `unexpected argument '${positionals[0]}' (options start with --)`,
    );
  for (const name of Object.keys(values) as OptionName[]) {
    if (!(OPTIONS[name].commands as readonly Command[]).includes(command))
      throw new ParameterError(
        ErrorCode.USAGE,
        `--${name} is not a${command === 'pair' ? ' npm start' : ` ${command}`} option (${takenBy(name)} take${OPTIONS[name].commands.length === 1 ? 's' : ''} it)`,
        { field: `--${name}` },
      );
  }
  const v = values as Record<string, string | undefined> & {
    device?: string[];
    insecure?: boolean;
    quiet?: boolean;
    help?: boolean;
  };
  if (v.help) return { ...defaults(), help: true };
  v.ram ??= '512M';
  const ramBytes = guestRam(parseSize(v.ram, '--ram'), v.ram);
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
    ...throttleParameters(v, values['cpu-throttle-tailslow'] === true),
  });
  return {
    connect: v.connect ? parseHostPort(v.connect, '--connect') : undefined,
    qmp: v.qmp ? parseQmpAddress(v.qmp, '--qmp') : undefined,
    listen: v.listen ? parseHostPort(v.listen, '--listen') : undefined,
    ramBytes,
    fill: oneOf(v['ram-fill'] ?? 'random', ['random', 'zero'] as const, '--ram-fill'),
    dirtyRate: parseRate(v['dirty-rate'] ?? '32M', '--dirty-rate', true),
    pattern: oneOf(
      v['dirty-pattern'] ?? 'uniform',
      ['uniform', 'hot', 'sequential'] as const,
      '--dirty-pattern',
    ),
    dirtyRange: v['dirty-range'] ? parseSize(v['dirty-range'], '--dirty-range') : ramBytes,
    seed: num(v.seed, '--seed', 1) >>> 0,
    // events and pause-before-switchover need a QMP client to mean anything
    capabilities: parseCapabilityList(v.capabilities ?? COMMAND_DEFAULT_CAPABILITIES, v.qmp !== undefined),
    parameters,
    policies: parsePolicies(v, ramBytes, parameters['downtime-limit']),
    devices: parseDeviceSpecs(v.device ?? []),
    timeoutMs: v.timeout ? parseDuration(v.timeout, '--timeout') : 0,
    switchoverPolicy: oneOf(
      v['switchover-policy'] ?? 'floor',
      ['floor', 'qemu'] as const,
      '--switchover-policy',
    ),
    stallTimeoutMs: v['stall-timeout'] ? parseDuration(v['stall-timeout'], '--stall-timeout') : 10_000,
    progressWarningMs: v['progress-warning']
      ? parseDuration(v['progress-warning'], '--progress-warning')
      : 30_000,
    service: parseHostPort(v.service ?? '127.0.0.1:0', '--service'),
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
    quiet: v.quiet === true,
    help: false,
    tls: v.tls === undefined ? undefined : oneOf(v.tls, ['x509', 'psk'] as const, '--tls'),
    probeIntervalMs: probeInterval(v['probe-interval']),
  };
}

/** What --help needs: no value is parsed (a bad one must not hide the help). */
function defaults(): CommonOptions {
  return parseCommon([], 'source');
}

function probeInterval(text: string | undefined): number {
  if (text === undefined) return DEFAULT_PROBE_MS;
  const ms = Number(text);
  if (text.trim() === '' || !Number.isFinite(ms) || ms < 0 || ms > 60_000)
    throw new ParameterError(
      ErrorCode.USAGE,
      `--probe-interval: '${text}' is not a period of 0..60000 ms (0 runs no probe)`,
      { field: '--probe-interval' },
    );
  return ms;
}
