/**
 * The capability and parameter commands both monitors share, QEMU's schemas and texts:
 * migrate-set-capabilities / query-migrate-capabilities / migrate-set-parameters /
 * query-migrate-parameters. The settings apply to the next migration; capabilities cannot change
 * while one runs (QEMU's "There's a migration process in progress"); downtime-limit and
 * max-bandwidth also reach a running one (`onLiveParameters`), as in QEMU.
 */
import {
  CAPABILITY_NAMES,
  type Capabilities,
  type CapabilityName,
  checkCapabilities,
  checkParameters,
  type Parameters,
} from '../options.js';
import { QmpError } from './errors.js';
import type { ArgSpec } from './schema.js';
import type { QmpCommand } from './server.js';

/** QEMU's QERR_MIGRATION_ACTIVE. */
export const MIGRATION_ACTIVE = "There's a migration process in progress";

/** QEMU's QAPI types of the parameters (MigrateSetParameters). */
const PARAMETER_TYPES: Record<keyof Parameters, ArgSpec> = {
  'downtime-limit': { type: 'uint64', optional: true },
  'max-bandwidth': { type: 'size', optional: true },
  'avail-switchover-bandwidth': { type: 'size', optional: true },
  'multifd-channels': { type: 'uint8', optional: true },
  'throttle-trigger-threshold': { type: 'uint8', optional: true },
  'cpu-throttle-initial': { type: 'uint8', optional: true },
  'cpu-throttle-increment': { type: 'uint8', optional: true },
  'cpu-throttle-tailslow': { type: 'bool', optional: true },
  'max-cpu-throttle': { type: 'uint8', optional: true },
  'vcpu-dirty-limit': { type: 'uint64', optional: true },
  'x-vcpu-dirty-limit-period': { type: 'uint64', optional: true },
};

export class MigrationSettings {
  #caps: Capabilities;
  #params: Parameters;

  constructor(
    caps: Capabilities,
    params: Parameters,
    /** True while a migration runs (capabilities are then refused). */
    private readonly busy: () => boolean,
    /** Parameters set while a migration runs: the ones that apply at once. */
    private readonly onLiveParameters: (p: Partial<Parameters>) => void = () => {},
  ) {
    this.#caps = caps;
    this.#params = params;
  }

  get capabilities(): Capabilities {
    return this.#caps;
  }

  get parameters(): Parameters {
    return this.#params;
  }

  commands(): Record<string, QmpCommand> {
    return {
      'migrate-set-capabilities': {
        args: {
          capabilities: {
            type: 'array',
            items: {
              type: 'object',
              fields: { capability: { type: 'enum', values: CAPABILITY_NAMES }, state: { type: 'bool' } },
            },
          },
        },
        run: (args) => {
          if (this.busy()) throw new QmpError('GenericError', MIGRATION_ACTIVE);
          const next: Record<CapabilityName, boolean> = { ...this.#caps };
          for (const c of args.capabilities as { capability: CapabilityName; state: boolean }[])
            next[c.capability] = c.state;
          try {
            this.#caps = checkCapabilities(next);
          } catch (e) {
            throw new QmpError('GenericError', (e as Error).message);
          }
          return {};
        },
      },
      'query-migrate-capabilities': {
        run: () => CAPABILITY_NAMES.map((capability) => ({ capability, state: this.#caps[capability] })),
      },
      'migrate-set-parameters': {
        args: PARAMETER_TYPES,
        run: (args) => {
          const change = args as Partial<Parameters>;
          try {
            this.#params = checkParameters({ ...this.#params, ...change });
          } catch (e) {
            const field = (e as { field?: string }).field;
            throw new QmpError(
              'GenericError',
              field ? qemuRangeText(field, (e as Error).message) : String(e),
            );
          }
          if (this.busy()) this.onLiveParameters(change);
          return {};
        },
      },
      'query-migrate-parameters': { run: () => ({ ...this.#params }) },
    };
  }
}

/** QEMU's QERR_INVALID_PARAMETER_VALUE wording ("Parameter 'x' expects ..."), from our range check. */
function qemuRangeText(field: string, ours: string): string {
  const m = /expects an integer in (\d+)…(\d+)/.exec(ours);
  return m
    ? `Parameter '${field}' expects an integer in the range of ${m[1]} to ${m[2]}`
    : `Parameter '${field}' expects a valid value`;
}
