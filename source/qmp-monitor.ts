/**
 * The source's QMP monitor (QEMU's, for the migration commands): `migrate` starts an attempt with
 * the current capabilities and parameters, `migrate_cancel` cancels it, `query-migrate` reports it
 * (QEMU's MigrationInfo plus our whole report under a downstream name), `migrate-continue` leaves
 * pre-switchover, `query-status` gives QEMU's RunState, `quit` ends the process. After a failed or
 * cancelled attempt the guest runs on and a new `migrate` may try again; after a completed one the
 * guest lives on the destination and this side refuses another.
 *
 * Events as QEMU sends them: MIGRATION {status} and MIGRATION_PASS {pass} only with the `events`
 * capability; STOP and RESUME when the guest stops and runs again; SHUTDOWN at quit.
 */
import type { Guest } from '../shared/guest/guest.js';
import type { Capabilities, Parameters } from '../shared/options.js';
import { QmpError } from '../shared/qmp/errors.js';
import { migrationInfo } from '../shared/qmp/migration-info.js';
import { MIGRATION_ACTIVE, MigrationSettings } from '../shared/qmp/migration-settings.js';
import { parseTcpUri } from '../shared/qmp/migration-uri.js';
import type { QmpCommand } from '../shared/qmp/server.js';
import { processCommands } from '../shared/qmp/version.js';
import { MigrationStatus as S } from '../shared/state.js';
import type { SourceMigration } from './migration.js';
import type { MigrationReport } from './report.js';

/** States in which a migration is under way (QEMU migration_is_running). */
const RUNNING: readonly string[] = [S.SETUP, S.ACTIVE, S.PRE_SWITCHOVER, S.DEVICE, S.CANCELLING];

export interface SourceMonitorHost {
  guest: Guest;
  capabilities: Capabilities;
  parameters: Parameters;
  /** A new attempt to `target` with these settings (not started yet). */
  create(target: { host: string; port: number }, caps: Capabilities, params: Parameters): SourceMigration;
  /** An attempt ended: print and write its report (as the command line does). */
  ended(report: MigrationReport): Promise<void>;
  /** An event for every negotiated client. */
  emit(event: string, data?: Record<string, unknown>): void;
  /** `quit`: end the process after the reply went out. */
  quit(): void;
}

export class SourceMonitor {
  readonly settings: MigrationSettings;
  #current: SourceMigration | null = null;
  #attempt: Promise<void> | null = null;
  #completed = false;

  constructor(private readonly host: SourceMonitorHost) {
    this.settings = new MigrationSettings(
      host.capabilities,
      host.parameters,
      () => this.busy,
      (p) => this.#current?.setLiveParameters(p),
    );
    host.guest.onRunState((running) => host.emit(running ? 'RESUME' : 'STOP'));
  }

  get busy(): boolean {
    return this.#current !== null && RUNNING.includes(this.#current.state.status);
  }

  /** The attempt under way, for a caller that wants to wait for it (the command line's --connect). */
  get attempt(): Promise<void> | null {
    return this.#attempt;
  }

  /** Starts an attempt (QMP `migrate`, or --connect given on the command line). */
  migrate(target: { host: string; port: number }): void {
    if (this.busy) throw new QmpError('GenericError', MIGRATION_ACTIVE);
    // completed: the guest runs on the destination (run() itself resolves a little later, after the
    // destination's self-check report)
    if (this.#completed || this.#current?.state.status === S.COMPLETED)
      throw new QmpError(
        'GenericError',
        'the guest already migrated (it runs on the destination): this side has nothing left to migrate',
      );
    const caps = this.settings.capabilities;
    const m = this.host.create(target, caps, this.settings.parameters);
    this.#current = m;
    if (caps.events) m.state.onChange((_, status) => this.host.emit('MIGRATION', { status }));
    this.#attempt = m.run().then(async (report) => {
      if (report.status === S.COMPLETED) this.#completed = true;
      await this.host.ended(report);
    });
  }

  /** Cancels the attempt under way, if any (QEMU's migrate_cancel succeeds with nothing to cancel). */
  cancel(): void {
    if (this.busy) this.#current?.cancel();
  }

  commands(): Record<string, QmpCommand> {
    return {
      ...this.settings.commands(),
      migrate: {
        args: {
          uri: { type: 'str' },
          blk: { type: 'bool', optional: true },
          inc: { type: 'bool', optional: true },
          detach: { type: 'bool', optional: true },
          resume: { type: 'bool', optional: true },
        },
        run: (args) => {
          if (args.blk || args.inc)
            throw new QmpError('GenericError', 'block migration (blk, inc) is not supported here');
          if (args.resume)
            throw new QmpError(
              'GenericError',
              'resume needs postcopy recovery, which this version does not have',
            );
          this.migrate(parseMigrationUri(String(args.uri)));
          return {};
        },
      },
      migrate_cancel: {
        run: () => {
          this.cancel();
          return {};
        },
      },
      'query-migrate': {
        run: () =>
          this.#current ? migrationInfo(this.#current.snapshot(), this.host.guest.memory.pageSize) : {},
      },
      'migrate-continue': {
        args: { state: { type: 'enum', values: Object.values(S) } },
        run: (args) => {
          const m = this.#current;
          if (!m) throw new QmpError('GenericError', `Migration not in expected state: ${S.NONE}`);
          try {
            m.continueSwitchover(String(args.state));
          } catch (e) {
            throw new QmpError('GenericError', (e as Error).message);
          }
          return {};
        },
      },
      'query-status': { run: () => this.#runState() },
      ...processCommands(this.host.emit, this.host.quit),
    };
  }

  /** QEMU's StatusInfo: running, singlestep (7.2 still sends it), status (RunState). */
  #runState(): { running: boolean; singlestep: boolean; status: string } {
    const running = this.host.guest.running;
    const m = this.#current?.state.status;
    const status = running
      ? 'running'
      : this.#completed
        ? 'postmigrate'
        : m === S.DEVICE || m === S.PRE_SWITCHOVER
          ? 'finish-migrate'
          : 'paused';
    return { running, singlestep: false, status };
  }
}

/** The target of a `migrate` (QEMU's error text when it is not one). */
export function parseMigrationUri(uri: string): { host: string; port: number } {
  const target = parseTcpUri(uri);
  if (!target) throw new QmpError('GenericError', "Parameter 'uri' expects a valid migration protocol");
  return target;
}
