/**
 * The destination's QMP monitor: started without --listen it waits, as QEMU with `-incoming defer`,
 * for `migrate-incoming` (capabilities and parameters may be set before it); `query-migrate` gives
 * the incoming status and the bound `socket-address` (port 0 picks one), then the report;
 * `query-status` says `inmigrate` until the guest runs here. One incoming migration per process.
 * Events: RESUME when the guest starts here, MIGRATION {status} with the `events` capability.
 */
import type { Guest } from '../shared/guest/guest.js';
import { PAGE_SIZE } from '../shared/guest/layout.js';
import type { Capabilities, Parameters } from '../shared/options.js';
import { QmpError } from '../shared/qmp/errors.js';
import { migrationInfo } from '../shared/qmp/migration-info.js';
import { MigrationSettings } from '../shared/qmp/migration-settings.js';
import { parseTcpUri } from '../shared/qmp/migration-uri.js';
import type { QmpCommand } from '../shared/qmp/server.js';
import { processCommands } from '../shared/qmp/version.js';
import type { IncomingMigration, IncomingResult, IncomingState } from './incoming.js';

/** QEMU's MigrationStatus for each of our incoming states. */
const STATUS: Record<IncomingState, string> = {
  'waiting-hello': 'setup',
  header: 'active',
  configuration: 'active',
  loading: 'active',
  verifying: 'active',
  running: 'completed',
  failed: 'failed',
};

export interface DestinationMonitorHost {
  capabilities: Capabilities;
  parameters: Parameters;
  /** Starts the incoming side at `target` with these settings; resolves with the bound address. */
  listen(
    target: { host: string; port: number },
    caps: Capabilities,
    params: Parameters,
  ): Promise<{ incoming: IncomingMigration; bound: { host: string; port: number } }>;
  emit(event: string, data?: Record<string, unknown>): void;
  quit(): void;
}

export class DestinationMonitor {
  readonly settings: MigrationSettings;
  #incoming: IncomingMigration | null = null;
  #bound: { host: string; port: number } | null = null;
  #result: IncomingResult | null = null;
  /** migrate-incoming was taken (or --listen given): QEMU's `once`. */
  #started = false;

  constructor(private readonly host: DestinationMonitorHost) {
    this.settings = new MigrationSettings(host.capabilities, host.parameters, () => this.#started);
  }

  /** The incoming side started by the command line (--listen): the monitor reports on it. */
  adopt(incoming: IncomingMigration, bound: { host: string; port: number }): void {
    this.#started = true;
    this.#watch(incoming, bound);
  }

  /** A guest the incoming side made: its start is QEMU's RESUME. */
  watchGuest(guest: Guest): void {
    guest.onRunState((running) => {
      if (running) this.host.emit('RESUME');
    });
  }

  #watch(incoming: IncomingMigration, bound: { host: string; port: number }): void {
    this.#incoming = incoming;
    this.#bound = bound;
    if (this.settings.capabilities.events) {
      this.host.emit('MIGRATION', { status: 'setup' });
      incoming.onStateChange = (state) => this.host.emit('MIGRATION', { status: STATUS[state] });
    }
    void incoming.done.then((r) => {
      this.#result = r;
    });
  }

  commands(): Record<string, QmpCommand> {
    return {
      ...this.settings.commands(),
      'migrate-incoming': {
        args: {
          uri: { type: 'str', optional: true },
          channels: { type: 'any', optional: true },
          'exit-on-error': { type: 'bool', optional: true },
        },
        run: async (args) => {
          if (this.#started)
            throw new QmpError('GenericError', 'The incoming migration has already been started');
          if (args.channels !== undefined)
            throw new QmpError('GenericError', "'channels' is not supported here: give 'uri'");
          if (args.uri === undefined) throw new QmpError('GenericError', "Parameter 'uri' is missing");
          const target = parseIncomingUri(String(args.uri));
          this.#started = true;
          try {
            const { incoming, bound } = await this.host.listen(
              target,
              this.settings.capabilities,
              this.settings.parameters,
            );
            this.#watch(incoming, bound);
          } catch (e) {
            // a port in use or a bad address: nothing started, another try is allowed
            this.#started = false;
            throw new QmpError('GenericError', (e as Error).message);
          }
          return {};
        },
      },
      'query-migrate': {
        run: () => {
          if (this.#result)
            return migrationInfo(this.#result.report, this.#incoming?.guest?.memory.pageSize ?? PAGE_SIZE);
          if (!this.#incoming || !this.#bound) return {};
          return {
            status: STATUS[this.#incoming.state],
            'socket-address': [{ type: 'inet', host: this.#bound.host, port: String(this.#bound.port) }],
          };
        },
      },
      'query-status': {
        run: () => {
          const running = this.#incoming?.state === 'running';
          // QEMU: a failed incoming migration leaves the machine in inmigrate (nothing was started)
          return { running, singlestep: false, status: running ? 'running' : 'inmigrate' };
        },
      },
      ...processCommands(this.host.emit, this.host.quit),
    };
  }
}

/** The target of a `migrate-incoming` (QEMU's error text when it is not one). */
export function parseIncomingUri(uri: string): { host: string; port: number } {
  const target = parseTcpUri(uri);
  if (!target) throw new QmpError('GenericError', `unknown migration protocol: ${uri}`);
  return target;
}
