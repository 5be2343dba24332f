/**
 * Randomized stream mutations sent to LIVE destination processes over a socket.
 *
 * A real source migrates a 2 MiB guest (return path off, so the stream is self-contained) into a
 * capturing server: that recording (hello + stream) and the source's RAM as stopped are the seed and
 * the oracle. Each iteration mutates the recording after its hello (the operations of
 * test/unit/stream-fuzz.test.ts: bit flips, random bytes, insertions, deletions, truncation, huge
 * length fields; half the time aimed at the first 512 bytes — configuration, commands, geometry) and sends
 * it to a FRESH destination process (a destination serves one migration), alternating with and without
 * --ram so the configuration's RAM size is honoured half the time. Every destination must exit on its
 * own with 0 or 1, never print a stack trace, print exactly one `MIG_ERR_` line when it exits 1, and
 * start a guest (write its --dump-ram) only with memory identical to the source's.
 * Plaintext on loopback: the stream parser is the same behind TLS. SWITCHOVER_LIVE_FUZZ=N sets the
 * count (default 6, a seeded subset that keeps the suite in its time budget; 200 was run for the
 * issue that added it), FUZZ_SEED the seed; CONCURRENCY destinations run at once.
 */
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import {
  ERROR_LINE,
  fileExists,
  readJsonFile,
  STACK_LINE,
  startDestination,
  startSide,
  tempDir,
  waitExit,
} from '../helpers/pair.js';
import { mulberry32 } from '../helpers/prng.js';
import { sendRaw } from '../helpers/raw-client.js';

const N = Number(process.env.SWITCHOVER_LIVE_FUZZ ?? 6);
const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed);
const CONCURRENCY = 4;
const HELLO = 56;
t.setTimeout(Math.max(240_000, N * 3000));

const int = (rand: () => number, n: number) => Math.floor(rand() * n);
const HUGE = [0xffffffff, 0x7fffffff, 0x04000001, 0x00100001, 0x0000ffff, 0x00001001];

/** One to three mutations of the stream part (after the hello). */
function mutate(rand: () => number, input: Buffer): { bytes: Buffer; ops: string[] } {
  let buf = Buffer.from(input);
  const ops: string[] = [];
  const steps = 1 + int(rand, 3);
  for (let s = 0; s < steps; s++) {
    const span = rand() < 0.5 ? Math.min(512, buf.length - HELLO) : buf.length - HELLO;
    if (span <= 0) break;
    const at = HELLO + int(rand, span);
    const op = int(rand, 6);
    ops.push(`${['flip', 'byte', 'insert', 'delete', 'truncate', 'length'][op]}@${at}`);
    if (op === 0) buf[at]! ^= 1 << int(rand, 8);
    else if (op === 1) buf[at] = int(rand, 256);
    else if (op === 2)
      buf = Buffer.concat([
        buf.subarray(0, at),
        Buffer.from(Array.from({ length: 1 + int(rand, 8) }, () => int(rand, 256))),
        buf.subarray(at),
      ]);
    else if (op === 3) buf = Buffer.concat([buf.subarray(0, at), buf.subarray(at + 1 + int(rand, 16))]);
    else if (op === 4) buf = buf.subarray(0, at);
    else {
      const v = HUGE[int(rand, HUGE.length)]!;
      if (rand() < 0.5 && at + 4 <= buf.length) buf.writeUInt32BE(v, at);
      else if (at + 2 <= buf.length) buf.writeUInt16BE(v & 0xffff, at);
    }
  }
  return { bytes: buf, ops };
}

/**
 * Accepts one connection and records everything sent on it until the peer closes; answers the hello
 * with ACCEPT (protocol 2: the source sends nothing more before it), built here byte by byte.
 */
async function capture(dir: string): Promise<{ stream: Buffer; ram: Buffer }> {
  let resolve!: (b: Buffer) => void;
  const got = new Promise<Buffer>((r) => {
    resolve = r;
  });
  const server = net.createServer((s) => {
    const parts: Buffer[] = [];
    let have = 0;
    s.on('data', (d: Buffer) => {
      parts.push(d);
      const before = have;
      have += d.length;
      // ACCEPT: be16 type 0x25, be16 length 2, be16 protocol version (from the hello, bytes 4-5)
      if (before < HELLO && have >= HELLO) {
        const hello = Buffer.concat(parts);
        s.write(Buffer.from([0x00, 0x25, 0x00, 0x02, hello[4]!, hello[5]!]));
      }
    });
    s.on('error', () => {});
    s.on('close', () => resolve(Buffer.concat(parts)));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const ramFile = join(dir, 'source.ram');
  const src = startSide(t, 'source', [
    ...['--connect', `127.0.0.1:${port}`, '--ram', '2M', '--dirty-rate', '1M', '--capabilities', 'none'],
    ...['--quiet', '--dump-ram', ramFile],
  ]);
  const code = await waitExit(src, 30_000);
  const stream = await got;
  server.close();
  if (code !== 0) throw new Error(`capture source exited ${code}: ${src.stderrLines.join(' | ')}`);
  return { stream, ram: await readFile(ramFile) };
}

t.test(`${N} mutated streams to live destinations: no crash, no guest with wrong memory`, async (t) => {
  const dir = await tempDir(t, 'switchover-livefuzz-');
  const { stream, ram } = await capture(dir);
  t.ok(stream.length > ram.length, `captured ${stream.length} stream bytes for ${ram.length} bytes of RAM`);
  const rand = mulberry32(SEED);
  const cases = Array.from({ length: N }, (_, i) => ({ i, ...mutate(rand, stream) }));
  const outcomes = new Map<string, number>();
  const failures: string[] = [];
  const started = Date.now();
  let next = 0;
  const worker = async () => {
    for (let c = cases[next++]; c; c = cases[next++]) {
      const why = await runOne(t, dir, c.i, c.bytes, ram);
      const key = why.outcome;
      outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
      if (why.failure) failures.push(`seed ${SEED} case ${c.i} (${c.ops.join(' ')}): ${why.failure}`);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  t.same(failures, [], 'every destination exited 0/1 with one line, no stack, no bad guest');
  t.comment(
    `${N} destinations in ${Date.now() - started} ms; outcomes: ${[...outcomes].map(([k, v]) => `${k}=${v}`).join(' ')}`,
  );
  t.ok(outcomes.size >= 5, 'the mutations reach many different checks');
});

async function runOne(
  t: Test,
  dir: string,
  i: number,
  bytes: Buffer,
  ram: Buffer,
): Promise<{ outcome: string; failure?: string }> {
  const json = join(dir, `d${i}.json`);
  const dump = join(dir, `d${i}.ram`);
  const args = [
    '--capabilities',
    'none',
    '--quiet',
    '--stall-timeout',
    '3000',
    '--json',
    json,
    '--dump-ram',
    dump,
  ];
  const dst = await startDestination(t, i % 2 ? args : ['--ram', '2M', ...args]);
  await sendRaw(dst.address, [bytes], { timeoutMs: 15_000 });
  const code = await waitExit(dst, 15_000);
  const lines = dst.stderrLines.filter(
    (l) => !l.includes(' migration ') && !l.includes(' guest service on '),
  );
  const stack = lines.find((l) => STACK_LINE.test(l));
  const errors = lines.filter((l) => ERROR_LINE.test(l));
  const dumped = await fileExists(dump);
  const sameRam = dumped ? (await readFile(dump)).equals(ram) : null;
  const report = await readJsonFile(json);
  const outcome =
    code === 0 ? 'started-ok' : (/MIG_ERR_[A-Z_]+/.exec(errors[0] ?? '')?.[0] ?? `exit-${code}`);
  if (code !== 0 && code !== 1) return { outcome, failure: `exit ${code}: ${lines.join(' | ')}` };
  if (stack) return { outcome, failure: `stack trace: ${lines.join(' | ')}` };
  if (dumped && !sameRam)
    return { outcome, failure: 'a guest started with memory that differs from the source' };
  if (code === 1 && errors.length !== 1)
    return { outcome, failure: `${errors.length} error lines: ${lines.join(' | ')}` };
  if (code === 0 && report?.guest?.['self-check']?.ok !== true)
    return { outcome, failure: 'exit 0 without a clean self-check' };
  if (outcome === 'MIG_ERR_INTERNAL') return { outcome, failure: `internal error: ${errors[0]}` };
  return { outcome };
}
