/**
 * Every command-line option of the three commands, with the commands that take it and its help
 * line (names users rely on: keep them stable, README "Options"; QEMU's where QEMU has one). One table, so that help text,
 * parsing and "that option belongs to another command" come from the same facts.
 */

export type Command = 'source' | 'destination' | 'pair';

export type Group =
  | 'Connection'
  | 'Guest'
  | 'Migration (QEMU names)'
  | 'Convergence policies'
  | 'Security'
  | 'Output';

export interface OptionDef {
  type: 'string' | 'boolean';
  multiple?: boolean;
  short?: string;
  commands: readonly Command[];
  group: Group;
  /** The value's placeholder in help, e.g. 'SIZE'. */
  arg?: string;
  /** Help text; a per-command text where the option means something different there. */
  help: string | Partial<Record<Command, string>>;
}

const ALL: readonly Command[] = ['source', 'destination', 'pair'];
const SRC_PAIR: readonly Command[] = ['source', 'pair'];
const SRC_DST: readonly Command[] = ['source', 'destination'];

export const OPTIONS = {
  connect: {
    type: 'string',
    commands: ['source'],
    group: 'Connection',
    arg: 'HOST:PORT',
    help: 'the destination to migrate to (required)',
  },
  listen: {
    type: 'string',
    commands: ['destination'],
    group: 'Connection',
    arg: 'HOST:PORT',
    help: 'where to wait for the source (required; port 0 picks one; the bound address is printed)',
  },
  qmp: {
    type: 'string',
    commands: SRC_DST,
    group: 'Connection',
    arg: 'ADDRESS',
    help: {
      source:
        'a QMP monitor at unix:PATH or tcp:HOST:PORT (loopback); without --connect the source waits for migrate',
      destination:
        'a QMP monitor at unix:PATH or tcp:HOST:PORT (loopback); without --listen it waits for migrate-incoming',
    },
  },
  'retry-connect': {
    type: 'string',
    commands: ['source'],
    group: 'Connection',
    arg: 'HOST:PORT',
    help: 'after a failed migration, migrate the still-running guest there',
  },
  tls: {
    type: 'string',
    commands: ['pair'],
    group: 'Security',
    arg: 'x509|psk',
    help: 'TLS on every channel with throwaway credentials made for this run',
  },
  'probe-interval': {
    type: 'string',
    commands: ['pair'],
    group: 'Output',
    arg: 'MS',
    help: 'period of the outside UDP probe of the guest service (default 5; 1 ms during the handover; 0 = no probe)',
  },
  ram: {
    type: 'string',
    commands: ALL,
    group: 'Guest',
    arg: 'SIZE',
    help: {
      source: 'guest RAM (default 512M; K/M/G suffixes)',
      pair: 'guest RAM (default 512M; K/M/G suffixes)',
      destination:
        'preallocate and touch guest RAM before the migration (QEMU prealloc=on); without it, RAM is made when the source says its size',
    },
  },
  'ram-fill': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Guest',
    arg: 'random|zero',
    help: 'initial guest content (default random)',
  },
  'dirty-rate': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Guest',
    arg: 'RATE|max',
    help: 'bytes/s of guest page writes (default 32M; max = as fast as the vCPU can)',
  },
  'dirty-pattern': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Guest',
    arg: 'P',
    help: 'uniform | hot | sequential (default uniform)',
  },
  'dirty-range': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Guest',
    arg: 'SIZE',
    help: 'part of RAM the guest writes (default: all of it)',
  },
  seed: { type: 'string', commands: SRC_PAIR, group: 'Guest', arg: 'N', help: 'workload seed (default 1)' },
  device: {
    type: 'string',
    multiple: true,
    commands: SRC_PAIR,
    group: 'Guest',
    arg: 'SPEC',
    help: 'precopy:size=SIZE,dirty-rate=RATE,prep=MS,stop-copy=SIZE (repeatable)',
  },
  service: {
    type: 'string',
    commands: SRC_DST,
    group: 'Guest',
    arg: 'HOST:PORT',
    help: "the guest's UDP echo service (default 127.0.0.1:0; printed on stderr)",
  },
  capabilities: {
    type: 'string',
    commands: ALL,
    group: 'Migration (QEMU names)',
    arg: 'LIST',
    help: "comma list: return-path, switchover-ack, multifd (default return-path,multifd; 'none' = QEMU's plain default; these three must agree on both sides), auto-converge or dirty-limit (source)",
  },
  'downtime-limit': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Migration (QEMU names)',
    arg: 'MS',
    help: 'default 300 (0..2000000)',
  },
  'max-bandwidth': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Migration (QEMU names)',
    arg: 'RATE',
    help: 'bytes/s while the guest runs, 0 = unlimited (default 128M)',
  },
  'avail-switchover-bandwidth': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Migration (QEMU names)',
    arg: 'RATE',
    help: 'bandwidth assumed at switchover, 0 = measure (default 0)',
  },
  'multifd-channels': {
    type: 'string',
    commands: ALL,
    group: 'Migration (QEMU names)',
    arg: 'N',
    help: {
      source: 'page channels with multifd (default 2)',
      pair: 'page channels with multifd (default 2)',
      destination: 'the most page channels a source may open here (default 2)',
    },
  },
  'switchover-policy': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Migration (QEMU names)',
    arg: 'P',
    help: 'floor (default): iterate while a round still shrinks the remainder a lot; qemu: switch as soon as it fits the limit',
  },
  'throttle-trigger-threshold': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Migration (QEMU names)',
    arg: 'PCT',
    help: 'auto-converge/dirty-limit fire when a period dirties more than PCT % of what it sent, twice (default 50)',
  },
  'cpu-throttle-initial': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Migration (QEMU names)',
    arg: 'PCT',
    help: 'auto-converge: first vCPU throttle (default 20)',
  },
  'cpu-throttle-increment': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Migration (QEMU names)',
    arg: 'PCT',
    help: 'auto-converge: added at each later firing (default 10)',
  },
  'cpu-throttle-tailslow': {
    type: 'boolean',
    commands: SRC_PAIR,
    group: 'Migration (QEMU names)',
    help: 'auto-converge: smaller steps once near the throttle that would do (default off)',
  },
  'max-cpu-throttle': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Migration (QEMU names)',
    arg: 'PCT',
    help: 'auto-converge: highest vCPU throttle (default 99)',
  },
  'vcpu-dirty-limit': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Migration (QEMU names)',
    arg: 'MB/S',
    help: "dirty-limit: each vCPU's page-write quota once it fires, MB/s (default 1)",
  },
  'x-vcpu-dirty-limit-period': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Migration (QEMU names)',
    arg: 'MS',
    help: 'dirty-limit: the period the quota is kept over, 1..1000 (default 1000)',
  },
  'progress-timeout': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Convergence policies',
    arg: 'MS',
    help: "act when 'remaining' makes no new low for MS (KubeVirt progressTimeout; default 0 = never)",
  },
  'progress-timeout-action': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Convergence policies',
    arg: 'A',
    help: 'abort (default: fail, the guest runs on here) | pause (stop the guest, finish in stop-and-copy)',
  },
  'completion-timeout-per-gib': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Convergence policies',
    arg: 'MS',
    help: 'act when not completed after MS per GiB of guest RAM (KubeVirt completionTimeoutPerGiB; default 0 = never)',
  },
  'completion-timeout-action': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Convergence policies',
    arg: 'A',
    help: 'abort (default) | pause, as --progress-timeout-action',
  },
  'downtime-max': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Convergence policies',
    arg: 'MS',
    help: 'raise downtime-limit step by step up to MS (Nova downtime stepping; default 0 = no steps)',
  },
  'downtime-steps': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Convergence policies',
    arg: 'N',
    help: 'with --downtime-max: how many raises (default 10)',
  },
  'downtime-step-delay': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Convergence policies',
    arg: 'MS',
    help: 'with --downtime-max: time between raises (default 75 s per GiB of guest RAM, as Nova)',
  },
  timeout: {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Migration (QEMU names)',
    arg: 'MS',
    help: 'fail if not completed after MS (default 0 = never)',
  },
  'progress-warning': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Migration (QEMU names)',
    arg: 'MS',
    help: "warn once when 'remaining' makes no new low for MS (default 30000; 0 = never)",
  },
  'stall-timeout': {
    type: 'string',
    commands: ALL,
    group: 'Migration (QEMU names)',
    arg: 'MS',
    help: 'fail when a channel makes no progress / no PONG for MS (default 10000; 0 = never)',
  },
  'tls-creds': {
    type: 'string',
    commands: SRC_DST,
    group: 'Security',
    arg: 'DIR',
    help: {
      source: 'x509: DIR/ca-cert.pem [, client-cert.pem, client-key.pem]; TLS on every channel',
      destination:
        'x509: DIR/server-cert.pem, server-key.pem [, ca-cert.pem = verify-peer]; TLS on every channel',
    },
  },
  'tls-psk': {
    type: 'string',
    commands: SRC_DST,
    group: 'Security',
    arg: 'FILE',
    help: 'TLS-PSK: lines identity:hex-key (the source uses the first identity)',
  },
  'tls-hostname': {
    type: 'string',
    commands: ['source'],
    group: 'Security',
    arg: 'NAME',
    help: 'name the destination certificate must carry (default: the --connect host)',
  },
  'hello-timeout': {
    type: 'string',
    commands: ['destination'],
    group: 'Security',
    arg: 'MS',
    help: 'a connection must finish TLS and its hello within MS (default 5000)',
  },
  insecure: {
    type: 'boolean',
    commands: ['destination'],
    group: 'Security',
    help: 'allow plaintext on a non-loopback --listen address (warns)',
  },
  json: {
    type: 'string',
    commands: ALL,
    group: 'Output',
    arg: 'FILE',
    help: 'also write the report as JSON',
  },
  'dump-ram': {
    type: 'string',
    commands: ALL,
    group: 'Output',
    arg: 'PATH',
    help: {
      source: 'test oracle: write guest RAM as stopped',
      destination: 'test oracle: write guest RAM before the guest resumes',
      pair: 'test oracle: write PATH/source.ram and PATH/destination.ram',
    },
  },
  timeline: {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Output',
    arg: 'FILE',
    help: 'a chart of the migration (.svg, or .png via rsvg-convert)',
  },
  'metrics-port': {
    type: 'string',
    commands: SRC_PAIR,
    group: 'Output',
    arg: 'N',
    help: 'Prometheus metrics on 127.0.0.1:N/metrics (0 = any port)',
  },
  linger: {
    type: 'string',
    commands: ['destination'],
    group: 'Output',
    arg: 'MS',
    help: 'keep the migrated guest running this long after its self-check (default 0)',
  },
  quiet: {
    type: 'boolean',
    commands: ALL,
    group: 'Output',
    help: 'no progress output (the report is still printed)',
  },
  help: { type: 'boolean', short: 'h', commands: ALL, group: 'Output', help: 'this text' },
} as const satisfies Record<string, OptionDef>;

export type OptionName = keyof typeof OPTIONS;

/** How each command is started, for help and for "see ... --help". */
export const COMMAND_LINE: Record<Command, string> = {
  source: 'npm run source --',
  destination: 'npm run destination --',
  pair: 'npm start --',
};

/** Who takes an option, in words: "source and npm start". */
export function takenBy(name: OptionName): string {
  const who = (OPTIONS[name].commands as readonly Command[]).map((c) => (c === 'pair' ? 'npm start' : c));
  return who.length === 1 ? who[0]! : `${who.slice(0, -1).join(', ')} and ${who.at(-1)}`;
}
