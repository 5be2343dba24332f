/**
 * Runs a command's main(): its exit code, or for an error one line `prog: MIG_ERR_X: message`, never
 * a bare stack trace (SWITCHOVER_DEBUG=1 shows stacks). A usage error (exit 2) adds where the help
 * is, not the help itself: the line that says what was wrong stays the one a user sees.
 */
import { ErrorCode, MigrationError } from '../errors.js';

/** Set by a parent that gives this process its stdin as a pipe and a process group of its own. */
export const PARENT_PIPE_ENV = 'SWITCHOVER_PARENT_PIPE';

const USAGE_CODES: readonly string[] = [ErrorCode.USAGE, ErrorCode.PARAMETER, ErrorCode.CAPABILITY];

/** `hint` is what to run for help, e.g. "see 'npm run source -- --help'". */
export function runCli(prog: string, hint: string, main: () => Promise<number>): void {
  const die = (err: unknown) => {
    const e =
      err instanceof MigrationError
        ? err
        : new MigrationError(ErrorCode.INTERNAL, String((err as Error)?.message ?? err));
    const usage = USAGE_CODES.includes(e.code);
    process.stderr.write(`${prog}: ${e.code}: ${e.message}${usage ? ` (${hint})` : ''}\n`);
    if (process.env.SWITCHOVER_DEBUG === '1') process.stderr.write(`${(err as Error)?.stack}\n`);
    process.exit(usage ? 2 : 1);
  };
  process.on('uncaughtException', die);
  process.on('unhandledRejection', die);
  if (process.env[PARENT_PIPE_ENV] === '1') {
    // the parent's end closes when it exits, however it exits: end as a SIGTERM would
    process.stdin.on('end', () => process.kill(process.pid, 'SIGTERM'));
    process.stdin.on('error', () => process.kill(process.pid, 'SIGTERM'));
    process.stdin.resume();
  }
  main().then((code) => process.exit(code), die);
}
