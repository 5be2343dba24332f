/**
 * What our monitors say they are. QMP clients read `version.qemu` to decide what to expect; we
 * model QEMU 8.1's migration (switchover-ack, dirty-limit), so we say 8.1.0, and say who we really
 * are in `package` (QEMU puts its distribution's package string there).
 */
import type { QmpCommand } from './server.js';

export const QMP_VERSION = {
  qemu: { micro: 0, minor: 1, major: 8 },
  package: 'switchover (not QEMU: a Node.js model of its live migration)',
} as const;

/** The QmpServer options that say who we are (greeting and query-version). */
export const qmpIdentity = {
  version: QMP_VERSION.qemu,
  package: QMP_VERSION.package,
};

/**
 * The commands every monitor of ours has beside the migration ones: `query-version`, and `quit`,
 * which answers first and then, as QEMU, announces SHUTDOWN and ends the process.
 */
export function processCommands(
  emit: (event: string, data?: Record<string, unknown>) => void,
  quit: () => void,
): Record<string, QmpCommand> {
  return {
    'query-version': { run: () => QMP_VERSION },
    quit: {
      run: () => {
        setImmediate(() => {
          emit('SHUTDOWN', { guest: false, reason: 'host-qmp-quit' });
          quit();
        });
        return {};
      },
    },
  };
}
