/**
 * Helper processes for the impairments, each started inside a namespace and tracked for teardown:
 * the NFQUEUE delay helper (nfq-delay.c, compiled once per run with gcc against libnetfilter_queue
 * into a temp dir) and the node relay (corrupt-relay.ts) for bit flips or userspace delay.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ROOT } from '../lib/spawn-side.js';
import { inNs, must, sh, type Topology, trackChild, trackDir } from './netns.js';

export interface RelayHandle {
  connect: string;
  heal(): Promise<void>;
  evidence(): Promise<string>;
}

export interface Helper {
  child: ChildProcess;
  lines: string[];
  firstLine: Promise<string>;
  stop(): Promise<void>;
}

/** Starts a long-running helper inside a namespace; `firstLine` resolves '' if it exits first. */
export function spawnHelper(ns: string, argv: string[]): Helper {
  const child = spawn(inNs(ns)[0]!, [...inNs(ns).slice(1), ...argv], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  trackChild(child);
  const lines: string[] = [];
  let first!: (l: string) => void;
  const firstLine = new Promise<string>((r) => {
    first = r;
  });
  createInterface({ input: child.stdout! }).on('line', (l) => {
    if (!lines.length) first(l);
    lines.push(l);
  });
  createInterface({ input: child.stderr! }).on('line', (l) => lines.push(`stderr: ${l}`));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.once('exit', () => first(''));
  child.once('error', () => first(''));
  return {
    child,
    lines,
    firstLine,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    },
  };
}

export const withTimeout = <T>(p: Promise<T>, ms: number, fallback: T): Promise<T> =>
  Promise.race([p, new Promise<T>((r) => setTimeout(() => r(fallback), ms).unref())]);

const helperBuilds = new Map<string, Promise<string>>();
/**
 * Compiles an NFQUEUE helper (nfq-delay.c, nfq-flip.c) once per process into a temp dir named with
 * our pid (removed at exit, or by a later run's sweep); resolves the binary path or rejects.
 */
export function buildNfqHelper(name: 'nfq-delay' | 'nfq-flip' = 'nfq-delay'): Promise<string> {
  let build = helperBuilds.get(name);
  if (!build) {
    build = (async () => {
      const dir = mkdtempSync(join(tmpdir(), `swchaos-${process.pid}-nfq-`));
      trackDir(dir);
      const src = fileURLToPath(new URL(`./${name}.c`, import.meta.url));
      const libs = (await sh(['pkg-config', '--libs', 'libnetfilter_queue'])).stdout.trim().split(/\s+/);
      const bin = `${dir}/${name}`;
      await must(['gcc', '-O2', '-o', bin, src, ...(libs[0] ? libs : ['-lnetfilter_queue', '-lnfnetlink'])]);
      return bin;
    })();
    helperBuilds.set(name, build);
  }
  return build;
}

export async function startRelayHelper(t: Topology, dst: string, extra: string[]): Promise<RelayHandle> {
  const entry = fileURLToPath(new URL('./corrupt-relay.ts', import.meta.url));
  const helper = spawnHelper(t.nsDst, [
    process.execPath,
    '--import',
    'tsx',
    entry,
    '--listen',
    `${t.ipDst}:0`,
    '--target',
    dst,
    ...extra,
  ]);
  const address = await withTimeout(helper.firstLine, 20_000, '');
  if (!/:\d+$/.test(address)) {
    await helper.stop();
    throw new Error(`relay did not start: ${helper.lines.join(' | ')}`);
  }
  return {
    connect: address,
    heal: () => helper.stop(),
    evidence: async () =>
      helper.lines
        .slice(1)
        .filter((l) => /"(flipped|connection)"/.test(l))
        .join(' ') || 'relay saw no connection',
  };
}
