/**
 * Options of the helper scripts (benchmarks): `--help` prints the script's usage and exits 0; an
 * unknown option or a missing value is one line `prog: MIG_ERR_USAGE: ... (see '... --help')`, exit
 * 2, never a stack trace.
 */
import { type ParseArgsConfig, parseArgs } from 'node:util';

export function scriptArgs<O extends NonNullable<ParseArgsConfig['options']>>(
  prog: string,
  usage: string,
  options: O,
  argv: string[] = process.argv.slice(2),
) {
  try {
    const parsed = parseArgs({
      args: argv,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      strict: true,
    });
    if ((parsed.values as { help?: boolean }).help) {
      process.stdout.write(`${usage}\n`);
      process.exit(0);
    }
    return parsed.values as ReturnType<typeof parseArgs<{ options: O; strict: true }>>['values'];
  } catch (err) {
    process.stderr.write(
      `${prog}: MIG_ERR_USAGE: ${String((err as Error).message).split('\n')[0]} (see 'npm run ${prog} -- --help')\n`,
    );
    process.exit(2);
  }
}
