/**
 * Two network namespaces joined by a veth pair: the two "hosts" of the chaos suite (README "Chaos suite").
 *
 * Names carry this process's pid (`swchaos-<pid>-<n>-src|dst`, links `swc<pid>s<n>` / `swc<pid>d<n>`),
 * addresses are 10.213.<n>.1/24 (source) and 10.213.<n>.2/24 (destination) and exist only inside
 * these namespaces, so no traffic ever leaves them. Teardown is guaranteed three ways: callers use
 * try/finally around `createTopology`/`destroyTopology`; SIGINT/SIGTERM/exit handlers kill tracked
 * children and delete every live topology synchronously; `sweepStale` (run at startup) removes
 * namespaces, links and temp dirs left by earlier runs whose pid is gone.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const NS_PREFIX = 'swchaos-';
const LINK_PREFIX = 'swc';
const NS_RE = /^swchaos-(\d+)-/;
const LINK_RE = /^swc(\d+)[sd]\d+$/;

export interface Topology {
  id: string;
  nsSrc: string;
  nsDst: string;
  vethSrc: string;
  vethDst: string;
  ipSrc: string;
  ipDst: string;
  /** A second address in the destination namespace, for the retry destination: impairments aimed
   * at the first destination's address leave it alone. */
  ipRetry: string;
}

export interface ShResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command (no shell), bounded; never throws. `input` goes to stdin. */
export function sh(argv: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<ShResult> {
  return new Promise((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 15_000);
    child.stdout?.on('data', (d) => {
      stdout += d;
    });
    child.stderr?.on('data', (d) => {
      stderr += d;
    });
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: 127, stdout, stderr: err.message });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    child.stdin?.on('error', () => {}); // a command that exits without reading: its rc tells
    child.stdin?.end(opts.input);
  });
}

/** Like `sh` but throws with the command and its stderr on a non-zero exit. */
export async function must(argv: string[], input?: string): Promise<string> {
  const r = await sh(argv, { input });
  if (r.code !== 0) throw new Error(`${argv.join(' ')}: ${(r.stderr || r.stdout).trim() || `rc=${r.code}`}`);
  return r.stdout;
}

/** argv prefix that runs a command inside a namespace. */
export const inNs = (ns: string): string[] => ['ip', 'netns', 'exec', ns];

const live = new Map<string, Topology>();
const children = new Set<ChildProcess>();
let counter = 0;
let handlersInstalled = false;

const dirs = new Set<string>();
/** A temp dir removed by the signal/exit handlers (and by the caller's finally via `untrackDir`). */
export function trackDir(dir: string, tracked = true): void {
  if (tracked) dirs.add(dir);
  else dirs.delete(dir);
}

/** Children (sides, helpers) killed by the signal/exit handlers if still running. */
export function trackChild(child: ChildProcess): void {
  children.add(child);
  child.once('exit', () => children.delete(child));
}

function killTracked(): void {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {}
  }
}

function syncQuiet(argv: string[]): string {
  try {
    return execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return '';
  }
}

function killNsPidsSync(ns: string): void {
  for (const pid of syncQuiet(['ip', 'netns', 'pids', ns]).split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {}
  }
}

/** Synchronous teardown for signal/exit handlers. */
function destroySync(t: Topology): void {
  for (const ns of [t.nsSrc, t.nsDst]) {
    killNsPidsSync(ns);
    syncQuiet(['ip', 'netns', 'del', ns]);
  }
  syncQuiet(['ip', 'link', 'del', t.vethSrc]);
  live.delete(t.id);
}

export function cleanupAllSync(): void {
  killTracked();
  for (const t of [...live.values()]) destroySync(t);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs.clear();
}

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  const onSignal = (sig: NodeJS.Signals, code: number) => () => {
    process.stderr.write(`chaos: ${sig}: tearing down ${live.size} topology(ies)\n`);
    cleanupAllSync();
    process.exit(code);
  };
  process.once('SIGINT', onSignal('SIGINT', 130));
  process.once('SIGTERM', onSignal('SIGTERM', 143));
  process.once('exit', cleanupAllSync);
}

function pidAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes namespaces, root-namespace links and temp dirs of earlier runs whose process is gone. */
export async function sweepStale(): Promise<string[]> {
  const removed: string[] = [];
  const list = (await sh(['ip', 'netns', 'list'])).stdout;
  for (const ns of list.split('\n').map((l) => l.split(' ')[0]!)) {
    const m = NS_RE.exec(ns);
    if (!m || pidAlive(Number(m[1]))) continue;
    killNsPidsSync(ns);
    await sh(['ip', 'netns', 'del', ns]);
    removed.push(`netns ${ns}`);
  }
  const links = (await sh(['ip', '-o', 'link', 'show'])).stdout;
  for (const line of links.split('\n')) {
    const name = line.split(':')[1]?.trim().split('@')[0] ?? '';
    const m = LINK_RE.exec(name);
    if (!m || pidAlive(Number(m[1]))) continue;
    await sh(['ip', 'link', 'del', name]);
    removed.push(`link ${name}`);
  }
  for (const dir of readdirSync(tmpdir())) {
    const m = NS_RE.exec(dir);
    if (!m || pidAlive(Number(m[1]))) continue;
    rmSync(join(tmpdir(), dir), { recursive: true, force: true });
    removed.push(`dir ${dir}`);
  }
  return removed;
}

export async function createTopology(): Promise<Topology> {
  installHandlers();
  const n = counter++;
  const id = `${process.pid}-${n}`;
  const t: Topology = {
    id,
    nsSrc: `${NS_PREFIX}${id}-src`,
    nsDst: `${NS_PREFIX}${id}-dst`,
    vethSrc: `${LINK_PREFIX}${process.pid}s${n}`,
    vethDst: `${LINK_PREFIX}${process.pid}d${n}`,
    ipSrc: `10.213.${n % 250}.1`,
    ipDst: `10.213.${n % 250}.2`,
    ipRetry: `10.213.${n % 250}.3`,
  };
  if (t.vethSrc.length > 15) throw new Error(`interface name ${t.vethSrc} is longer than 15 characters`);
  live.set(id, t);
  try {
    await must(['ip', 'netns', 'add', t.nsSrc]);
    await must(['ip', 'netns', 'add', t.nsDst]);
    await must(['ip', 'link', 'add', t.vethSrc, 'type', 'veth', 'peer', 'name', t.vethDst]);
    await must(['ip', 'link', 'set', t.vethSrc, 'netns', t.nsSrc]);
    await must(['ip', 'link', 'set', t.vethDst, 'netns', t.nsDst]);
    for (const [ns, dev, ip] of [
      [t.nsSrc, t.vethSrc, t.ipSrc],
      [t.nsDst, t.vethDst, t.ipDst],
    ] as const) {
      await must(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
      await must(['ip', '-n', ns, 'addr', 'add', `${ip}/24`, 'dev', dev]);
      await must(['ip', '-n', ns, 'link', 'set', dev, 'up']);
    }
    await must(['ip', '-n', t.nsDst, 'addr', 'add', `${t.ipRetry}/24`, 'dev', t.vethDst]);
  } catch (err) {
    await destroyTopology(t);
    throw err;
  }
  return t;
}

/** Kills whatever still runs inside, deletes both namespaces (which removes the veth pair). */
export async function destroyTopology(t: Topology): Promise<void> {
  for (const ns of [t.nsSrc, t.nsDst]) {
    const pids = (await sh(['ip', 'netns', 'pids', ns])).stdout.split(/\s+/).filter(Boolean);
    for (const pid of pids) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {}
    }
    await sh(['ip', 'netns', 'del', ns]);
  }
  await sh(['ip', 'link', 'del', t.vethSrc]); // only exists if the move into the namespace failed
  live.delete(t.id);
}

/** Namespaces and links of this process that still exist (should be none after teardown). */
export async function leftovers(pid = process.pid): Promise<string[]> {
  const ns = (await sh(['ip', 'netns', 'list'])).stdout
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((n) => n.startsWith(`${NS_PREFIX}${pid}-`));
  const links = (await sh(['ip', '-o', 'link', 'show'])).stdout
    .split('\n')
    .map((l) => l.split(':')[1]?.trim().split('@')[0] ?? '')
    .filter((n) => LINK_RE.exec(n)?.[1] === String(pid));
  return [...ns, ...links];
}

/** Whether this machine can run the suite: root, `ip netns` works, a namespace can be created. */
export async function netnsAvailable(): Promise<{ ok: boolean; reason: string }> {
  if (process.getuid?.() !== 0)
    return { ok: false, reason: 'chaos tests need root (network namespaces, tc, nft)' };
  const list = await sh(['ip', 'netns', 'list']);
  if (list.code !== 0) return { ok: false, reason: `'ip netns' is unavailable: ${list.stderr.trim()}` };
  const probe = `${NS_PREFIX}${process.pid}-probe`;
  const add = await sh(['ip', 'netns', 'add', probe]);
  await sh(['ip', 'netns', 'del', probe]);
  if (add.code !== 0) return { ok: false, reason: `cannot create a network namespace: ${add.stderr.trim()}` };
  for (const tool of ['tc', 'nft']) {
    const r = await sh([tool, '-V']);
    if (r.code !== 0) return { ok: false, reason: `${tool} is missing (run scripts/setup-system.sh)` };
  }
  return { ok: true, reason: '' };
}
