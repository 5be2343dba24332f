/**
 * Starts `source/main.ts` or `destination/main.ts` as a separate Node process (tsx loader), with
 * line-wise access to its stdout/stderr and a bounded wait for its exit. Used by `pair`, the
 * benchmarks, the chaos suite and the integration tests.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { PARENT_PIPE_ENV } from '../../shared/cli/run.js';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface Side {
  child: ChildProcess;
  stdoutLines: string[];
  stderrLines: string[];
  /** Resolves with the exit code (or the signal name) when the process ends. */
  exited: Promise<number | string>;
  /** Resolves with the first stdout line. */
  firstLine: Promise<string>;
  kill(signal?: NodeJS.Signals): void;
}

export interface SpawnOptions {
  onStderrLine?: (line: string) => void;
  onStdoutLine?: (line: string) => void;
  /** Extra argv for node before the entry, e.g. a wrapper like `ip netns exec NS`. */
  prefix?: string[];
  env?: NodeJS.ProcessEnv;
  /**
   * Its own process group, so a terminal's Ctrl-C reaches only the parent (which decides what the
   * side gets). Its stdin is then a pipe from the parent: the side ends as on SIGTERM when the parent
   * goes away (shared/cli/run.ts), so a killed parent leaves no orphan waiting forever.
   */
  ownGroup?: boolean;
}

export function spawnSide(role: 'source' | 'destination', args: string[], opts: SpawnOptions = {}): Side {
  const entry = `${ROOT}${role}/main.ts`;
  const nodeArgs = ['--import', 'tsx', entry, ...args];
  const [cmd, ...cmdArgs] = opts.prefix?.length
    ? [...opts.prefix, process.execPath, ...nodeArgs]
    : [process.execPath, ...nodeArgs];
  const child = spawn(cmd!, cmdArgs, {
    cwd: ROOT,
    stdio: [opts.ownGroup ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...opts.env, ...(opts.ownGroup ? { [PARENT_PIPE_ENV]: '1' } : {}) },
    detached: opts.ownGroup === true,
  });
  const stdoutLines: string[] = [];
  const stderrLines: string[] = [];
  let resolveFirst!: (l: string) => void;
  const firstLine = new Promise<string>((r) => {
    resolveFirst = r;
  });
  createInterface({ input: child.stdout! }).on('line', (l) => {
    if (stdoutLines.length === 0) resolveFirst(l);
    stdoutLines.push(l);
    opts.onStdoutLine?.(l);
  });
  createInterface({ input: child.stderr! }).on('line', (l) => {
    stderrLines.push(l);
    opts.onStderrLine?.(l);
  });
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => {
      resolveFirst('');
      resolve(code ?? signal ?? -1);
    });
  });
  return {
    child,
    stdoutLines,
    stderrLines,
    exited,
    firstLine,
    kill: (signal = 'SIGKILL') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
  };
}
