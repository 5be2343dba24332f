/**
 * Randomized return-path mutations against LIVE source processes.
 *
 * A fake destination (test/helpers/fake-destination.ts) migrates each source honestly — ACCEPT, PONG,
 * clock answers, ROUND_DONE, and at EOF RESUMED, SHUT(0), RESUMED(guest) — while every frame it
 * writes passes through a seeded mutator: one frame for sure (one of the first 24) and each other one
 * with 2 % chance gets a bit flip, a hostile body (BigInt, objects where numbers belong, huge maps,
 * deep nesting, `__proto__`), another type or length, a cut, a duplicate, a drop, trailing junk, an
 * early SHUT(0), a SHUT(n) or a made-up ERROR. Each source must end on its own, within its stall
 * timeout and a margin, in one of the allowed outcomes: `completed` (exit 0), or `failed` (exit 1)
 * with its report written, its guest running, one `MIG_ERR_` line and no stack trace. Anything else —
 * a crash without a report, a hang, a stopped guest left stopped — is a violation.
 *
 * SWITCHOVER_RP_MUTATIONS=N sets the count (default 4, a seeded subset for CI; the full run is
 * 1,000: `SWITCHOVER_RP_MUTATIONS=1000 npx tap test/integration/rp-mutation.test.ts`), FUZZ_SEED the
 * seed, CONCURRENCY the sources at once, SWITCHOVER_RP_MUTATIONS_LOG=FILE a JSON line per sequence.
 * The outcome table is printed as a comment.
 */
import { appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { packBody } from '../../shared/protocol/msgpack.js';
import { rawRpFrame, startFakeDestination } from '../helpers/fake-destination.js';
import { ERROR_LINE, readJsonFile, STACK_LINE, startSide, tempDir, waitExit } from '../helpers/pair.js';
import { mulberry32 } from '../helpers/prng.js';

const N = Number(process.env.SWITCHOVER_RP_MUTATIONS ?? 4);
const SEED = Number(process.env.FUZZ_SEED ?? 0x7e7);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 2);
const STALL_MS = 2000;
/**
 * A source must be gone this long after it started: its longest designed waits are the SHUT deadline
 * (30 s, while the destination answers probes) or the guest-report wait after SHUT(0) (5 s + 5 s per GiB: 10 s for this
 * guest), plus setup and precopy on a loaded host.
 */
const RUN_LIMIT_MS = 60_000;
/** Optional: one JSON line per sequence as it ends (a long run's partial results survive). */
const LOG = process.env.SWITCHOVER_RP_MUTATIONS_LOG;
t.setTimeout(Math.max(240_000, (N * 12_000) / CONCURRENCY + 60_000));

const int = (rand: () => number, n: number) => Math.floor(rand() * n);
const pick = <T>(rand: () => number, xs: readonly T[]): T => xs[int(rand, xs.length)]!;

function deep(n: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < n; i++) v = { v };
  return v;
}

function manyKeys(n: number): Record<string, number> {
  const o: Record<string, number> = {};
  for (let i = 0; i < n; i++) o[`k${i}`] = i;
  return o;
}

/** Bodies a hostile destination might send where a msgpack map belongs. */
const HOSTILE_BODIES: (() => unknown)[] = [
  () => ({ value: 5n }),
  () => ({ value: { valueOf: 0, toString: 0 } }),
  () => ({ value: -1, t: 1 }),
  () => ({ value: 1.5, t: 1 }),
  () => ({ value: 'x' }),
  () => ({ value: 1, t: Number.NaN }),
  () => ({ checkpoints: { x: 5n } }),
  () => ({ checkpoints: [1, 2, 3] }),
  () => ({ checkpoints: manyKeys(300) }),
  () => ({ integrity: { 'pages-verified': 'all' } }),
  () => ({ gap: { gapStartMs: 1 } }),
  () => ({ devices: { d: { 'prep-ms': {}, 'approved-at': null, loaded: 1 } } }),
  () => ({ guest: { 'self-check': { ok: 'yes' } } }),
  () => ({ 'final-load-ms': 1, waiting: 1, approvals: {} }),
  () => ({ 'final-load-ms': -1, waiting: [], approvals: {} }),
  () => ({ 'final-load-ms': 1, waiting: [], approvals: { a: 'x' } }),
  () => ({ code: {}, message: 1 }),
  () => ({ code: 'MIG_ERR_X', message: 'y'.repeat(9000) }),
  () => JSON.parse('{"__proto__": {"polluted": 1}, "value": 1}'),
  () => null,
  () => [1, 2, 3],
  () => 'a string',
  () => deep(200),
  () => ({ extra: 1, value: 1 }),
];
const VARIABLE_TYPES = [0x20, 0x21, 0x22, 0x24];
const ANY_TYPES = [0, 1, 2, 3, 7, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0xffff];

type Op = (rand: () => number, frame: Buffer) => Buffer;

const OPS: Record<string, Op> = {
  flip: (rand, f) => {
    const b = Buffer.from(f);
    b[int(rand, b.length)]! ^= 1 << int(rand, 8);
    return b;
  },
  body: (rand) => {
    let body: Buffer;
    try {
      body = packBody(pick(rand, HOSTILE_BODIES)());
    } catch {
      body = Buffer.from([0xc1]); // never-used msgpack byte
    }
    return rawRpFrame(pick(rand, VARIABLE_TYPES), body.subarray(0, 0xffff));
  },
  type: (rand, f) => {
    const b = Buffer.from(f);
    b.writeUInt16BE(pick(rand, ANY_TYPES), 0);
    return b;
  },
  length: (rand, f) => {
    const b = Buffer.from(f);
    const len = b.readUInt16BE(2);
    b.writeUInt16BE(pick(rand, [0, 1, 0xffff, (len + 1) & 0xffff, Math.max(0, len - 1)]), 2);
    return b;
  },
  cut: (rand, f) => f.subarray(0, int(rand, f.length)),
  dup: (_rand, f) => Buffer.concat([f, f]),
  drop: () => Buffer.alloc(0),
  junk: (rand, f) =>
    Buffer.concat([f, Buffer.from(Array.from({ length: 1 + int(rand, 32) }, () => int(rand, 256)))]),
  'early-shut': () => rawRpFrame(0x01, Buffer.from([0, 0, 0, 0])),
  'shut-n': (rand) => rawRpFrame(0x01, Buffer.from([0, 0, 0, 1 + int(rand, 255)])),
  error: (rand) =>
    rawRpFrame(
      0x22,
      packBody({ code: pick(rand, ['MIG_ERR_CHECKSUM', 'nope', 'MIG_ERR_']), message: 'fake' }),
    ),
};

interface Run {
  seed: number;
  ops: string[];
  outcome: string;
  violation?: string;
  ms: number;
}

/** One sequence with its own cleanup (subtests would run one at a time). */
async function one(seed: number): Promise<Run> {
  const cleanups: (() => unknown)[] = [];
  const local = { teardown: (fn: () => unknown) => cleanups.push(fn) } as unknown as Test;
  try {
    return await sequence(local, seed);
  } finally {
    for (const fn of cleanups.reverse()) await fn();
  }
}

async function sequence(t: Test, seed: number): Promise<Run> {
  const rand = mulberry32(seed);
  const target = int(rand, 24);
  let index = 0;
  const ops: string[] = [];
  const fake = await startFakeDestination(t, {
    completeAtEof: true,
    outgoing: (frame, where) => {
      const i = index++;
      if (i !== target && rand() >= 0.02) return frame;
      const name = pick(rand, Object.keys(OPS));
      ops.push(`${name}@${i}${where === 'main' ? '(main)' : ''}`);
      return OPS[name]!(rand, frame);
    },
  });
  const json = join(await tempDir(t), 'source.json');
  const started = Date.now();
  const side = startSide(t, 'source', [
    '--connect',
    `127.0.0.1:${fake.port}`,
    '--ram',
    '16M',
    '--dirty-rate',
    '4M',
    '--max-bandwidth',
    '0',
    '--stall-timeout',
    String(STALL_MS),
    '--json',
    json,
    '--quiet',
  ]);
  const code = await waitExit(side, RUN_LIMIT_MS);
  const ms = Date.now() - started;
  const report = await readJsonFile(json);
  const lines = side.stderrLines.filter((l) => !l.startsWith('progress '));
  const run = (outcome: string, violation?: string): Run => ({ seed, ops, outcome, violation, ms });
  if (code === 'timeout') return run('hang', `no exit within ${RUN_LIMIT_MS} ms`);
  if (lines.some((l) => STACK_LINE.test(l))) return run('stack', lines.join(' | '));
  if (!report) return run('no-report', `exit ${code}: ${lines.join(' | ')}`);
  if (code === 0 && report.status === 'completed')
    // completed is true only if the destination got the whole stream before its SHUT(0)
    return fake.sawEof() ? run('completed') : run('completed-without-eof', 'SHUT(0) taken before EOF');
  if (code === 1 && report.status === 'failed') {
    if (report.guest?.['running-after-failure'] !== true) return run('guest-stopped', report['error-desc']);
    if (lines.filter((l) => ERROR_LINE.test(l)).length !== 1) return run('error-lines', lines.join(' | '));
    return run(`failed ${report['error-code']}`);
  }
  return run('unexpected', `exit ${code}, status ${report.status}`);
}

t.test(`${N} mutated return-path sequences against live sources (seed ${SEED})`, async (t) => {
  const runs: Run[] = [];
  let next = 0;
  // only sequences that were mutated count: a source that ended before the chosen frame got an
  // honest migration (kept in the table as `unmutated`, not counted)
  const mutated = () => runs.filter((r) => r.ops.length > 0).length;
  let started = 0;
  const worker = async () => {
    while (mutated() + (started - runs.length) < N) {
      const i = next++;
      started++;
      const r = await one((SEED + i * 0x9e3779b1) >>> 0);
      runs.push(r.ops.length > 0 || r.violation ? r : { ...r, outcome: `unmutated: ${r.outcome}` });
      if (LOG) await appendFile(LOG, `${JSON.stringify({ i, ...r })}\n`);
      if (runs.length % 50 === 0) t.comment(`${mutated()}/${N} mutated sequences (${runs.length} run)`);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const table = new Map<string, number>();
  for (const r of runs) table.set(r.outcome, (table.get(r.outcome) ?? 0) + 1);
  const rows = [...table.entries()].sort((a, b) => b[1] - a[1]);
  t.comment(`outcomes of ${runs.length} sequences, ${mutated()} of them mutated (seed ${SEED}):`);
  for (const [outcome, n] of rows) t.comment(`  ${String(n).padStart(5)}  ${outcome}`);
  const slowest = Math.max(...runs.map((r) => r.ms));
  t.comment(`slowest run ${slowest} ms`);
  const bad = runs.filter((r) => r.violation);
  t.same(
    bad.map((r) => ({ seed: r.seed, ops: r.ops, outcome: r.outcome, why: r.violation?.slice(0, 300) })),
    [],
    'every source ended completed, or failed with a report and its guest running',
  );
  t.ok(mutated() >= N, `${mutated()} mutated sequences ran (at least ${N})`);
});
