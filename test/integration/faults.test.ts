/**
 * Faults injected into real processes over loopback TCP. In every case: exit codes, the
 * one-line-error rule (exactly one `switchover-<side>: MIG_ERR_X: message` line, no stack trace),
 * the source guest still running after a failed migration, the destination guest never started.
 *
 * How each phase is reached:
 *  - iteration: --max-bandwidth 16M on 64M of RAM makes precopy take ~4 s; the source's first
 *    `progress` line (after its first 100 ms window) is the moment to strike. ram.downtime-bytes = 0
 *    in the source report proves the guest had not been stopped yet.
 *  - switchover: --downtime-limit 100000 makes the convergence threshold (bandwidth × limit) larger
 *    than all of RAM and --switchover-policy qemu switches as soon as the remainder fits (the default
 *    'floor' policy would first run extra rounds), so the source decides to switch over on the loop
 *    turn right after its first progress line — a decision that depends on no byte from the
 *    destination. The destination is
 *    SIGSTOPped at that first progress line, so the source stops its guest and then blocks writing
 *    the ~90 MB of stop-and-copy RAM into a full socket; 500 ms later the destination gets SIGKILL.
 *    ram.downtime-bytes > 0 in the source report proves the guest was stopped and the switchover
 *    under way when the peer died.
 */
import t, { type Test } from 'tap';
import { startCorruptingRelay } from '../helpers/corrupting-relay.js';
import {
  assertNoErrorLine,
  assertOneLineError,
  ERROR_LINE,
  fileExists,
  readJsonFile,
  runMigration,
  STACK_LINE,
  signal,
  sleep,
  startDestination,
  tempDir,
  waitExit,
  waitFor,
  waitProgress,
} from '../helpers/pair.js';
import {
  garbageBytes,
  helloBytes,
  KIND_MAIN,
  sendRaw,
  streamHeaderBytes,
  truncatedConfigurationBytes,
} from '../helpers/raw-client.js';

t.setTimeout(120_000);

const SOCKET_CODE = /MIG_ERR_(PEER_CLOSED|SOCKET)/;
const STREAM_CUT = /MIG_ERR_(TRUNCATED|PEER_CLOSED)/;

const nonProgress = (lines: string[]) => lines.filter((l) => !l.startsWith('progress '));

t.test('destination SIGKILL during iteration: source fails, guest keeps running', async (t) => {
  t.setTimeout(30_000);
  let killedAt = 0;
  let at: Record<string, string> | null = null;
  const r = await runMigration(t, {
    ram: '64M',
    source: ['--max-bandwidth', '16M', '--dirty-rate', '8M'],
    dumpRam: false,
    timeoutMs: 20_000,
    during: async ({ source, destination }) => {
      at = await waitProgress(source, 10_000);
      if (!at) return;
      destination.kill('SIGKILL');
      killedAt = Date.now();
      await waitExit(source, 10_000);
    },
  });
  const src = r.srcReport ?? {};
  const diag = { 'source-stderr': nonProgress(r.srcStderr) };
  t.ok(at, 'source printed a progress line before the kill', { progress: at });
  t.equal(r.timedOut, false, 'source exited on its own', diag);
  t.equal(r.dstCode, 'SIGKILL', 'destination was killed');
  t.equal(r.srcCode, 1, 'source exits 1', diag);
  t.equal(src.status, 'failed', 'status failed', diag);
  t.match(src['error-code'], SOCKET_CODE, 'a socket error code', { 'error-desc': src['error-desc'] });
  assertOneLineError(t, r.srcStderr, SOCKET_CODE);
  t.equal(src.guest?.['running-after-failure'], true, "guest['running-after-failure']");
  t.equal(src.ram?.['downtime-bytes'], 0, 'killed during iteration: the guest was never stopped');
  t.ok(src.ram?.['precopy-bytes'] > 0, 'precopy had sent RAM');
  t.notOk(src.downtime, 'no downtime for a failed migration');
  t.equal(r.srcDumpExists, false, 'no source dump for a failed migration');
  t.ok(killedAt > 0 && Date.now() - killedAt < 15_000, 'source noticed the dead peer in bounded time');
});

t.test('destination SIGKILL during switchover: source fails and resumes its stopped guest', async (t) => {
  t.setTimeout(30_000);
  let at: Record<string, string> | null = null;
  let stopped = false;
  const r = await runMigration(t, {
    ram: '96M',
    source: [
      '--max-bandwidth',
      '8M',
      '--downtime-limit',
      '100000',
      '--switchover-policy',
      'qemu',
      '--dirty-rate',
      '8M',
    ],
    dumpRam: false,
    timeoutMs: 20_000,
    during: async ({ source, destination }) => {
      at = await waitProgress(source, 10_000);
      if (!at) return;
      stopped = signal(destination, 'SIGSTOP');
      await sleep(500);
      destination.kill('SIGKILL');
      await waitExit(source, 10_000);
    },
  });
  const src = r.srcReport ?? {};
  const diag = { 'source-stderr': nonProgress(r.srcStderr) };
  t.ok(at, 'source printed a progress line', { progress: at });
  t.ok(stopped, 'destination was frozen (SIGSTOP) at the first progress line');
  t.equal(r.timedOut, false, 'source exited on its own', diag);
  t.equal(r.dstCode, 'SIGKILL', 'destination was killed');
  t.equal(r.srcCode, 1, 'source exits 1', diag);
  t.equal(src.status, 'failed', 'status failed', diag);
  t.ok(src.ram?.['downtime-bytes'] > 0, 'the switchover was under way (RAM sent with the guest stopped)', {
    ram: src.ram,
  });
  t.match(src['error-code'], SOCKET_CODE, 'a socket error code', { 'error-desc': src['error-desc'] });
  assertOneLineError(t, r.srcStderr, SOCKET_CODE);
  t.equal(src.guest?.['running-after-failure'], true, 'the guest stopped for the switchover runs again');
  t.notOk(src.downtime, 'no downtime for a failed migration');
});

t.test('source SIGKILL during iteration: destination fails with one line, guest never started', async (t) => {
  t.setTimeout(30_000);
  let killedAt = 0;
  let at: Record<string, string> | null = null;
  const r = await runMigration(t, {
    ram: '64M',
    source: ['--max-bandwidth', '16M', '--dirty-rate', '8M'],
    timeoutMs: 20_000,
    during: async ({ source, destination }) => {
      at = await waitProgress(source, 10_000);
      if (!at) return;
      source.kill('SIGKILL');
      killedAt = Date.now();
      await waitExit(destination, 10_000);
    },
  });
  const dst = r.dstReport ?? {};
  const diag = { 'destination-stderr': r.dstStderr };
  t.ok(at, 'source printed a progress line before the kill', { progress: at });
  t.equal(r.timedOut, false, 'destination exited on its own', diag);
  t.equal(r.srcCode, 'SIGKILL', 'source was killed');
  t.equal(r.dstCode, 1, 'destination exits 1', diag);
  assertOneLineError(t, r.dstStderr, STREAM_CUT);
  t.ok(r.dstReport, 'destination wrote its JSON report', diag);
  t.equal(dst.status, 'failed', 'destination report status failed');
  t.match(dst['error-code'], STREAM_CUT, 'destination report error-code');
  t.notOk(dst.guest, 'no guest started (no self-check in the report)');
  t.equal(r.dstDumpExists, false, 'destination never reached "just before resume" (no dump)');
  t.ok(killedAt > 0 && Date.now() - killedAt < 15_000, 'destination noticed in bounded time');
});

t.test('garbage bytes to a listening destination are refused; a real migration still succeeds', async (t) => {
  t.setTimeout(30_000);
  // Design (destination/listener.ts): a connection whose hello is bad is refused with one ERROR
  // frame and one log line, and never disturbs the migration the destination is waiting for.
  const replies: { received: Buffer; closedBy: string }[] = [];
  const r = await runMigration(t, {
    ram: '32M',
    source: ['--dirty-rate', '8M'],
    timeoutMs: 25_000,
    beforeSource: async (dst) => {
      // exactly a hello's worth, less than a hello, more than a hello (a stray HTTP client)
      for (const [i, n] of [56, 10, 200].entries()) {
        replies.push(await sendRaw(dst.address, [garbageBytes(n)], { timeoutMs: 8000 }));
        await waitFor(() => dst.stderrLines.filter((l) => l.includes(': refused ')).length > i, 3000);
      }
    },
  });
  const [exact, short, long] = replies;
  t.equal(exact?.closedBy, 'peer', '56 bytes of garbage: the destination closed the connection');
  t.match(exact?.received.toString('latin1'), /MIG_ERR_BAD_MAGIC/, 'its ERROR frame names MIG_ERR_BAD_MAGIC');
  t.equal(short?.closedBy, 'peer', '10 bytes of garbage: the destination closed the connection');
  t.equal(long?.closedBy, 'peer', '200 bytes of garbage: the destination closed the connection');
  t.match(long?.received.toString('latin1'), /MIG_ERR_BAD_MAGIC/, 'its ERROR frame names MIG_ERR_BAD_MAGIC');
  const lines = nonProgress(r.dstStderr);
  const refused = lines.filter((l) =>
    /^switchover-destination: refused 127\.0\.0\.1:\d+: MIG_ERR_[A-Z_]+: /.test(l),
  );
  t.equal(refused.length, 3, 'one refusal line per bad connection', { lines });
  t.match(refused[0], /MIG_ERR_BAD_MAGIC/, '56 bytes of garbage: BAD_MAGIC');
  t.match(refused[1], STREAM_CUT, '10 bytes of garbage: a hello cut short');
  t.match(refused[2], /MIG_ERR_BAD_MAGIC/, '200 bytes of garbage: BAD_MAGIC');
  t.same(
    lines.filter((l) => ERROR_LINE.test(l) || STACK_LINE.test(l)),
    [],
    'no failure line and no stack trace',
  );
  t.equal(r.dstCode, 0, 'destination exits 0 after the real migration', { lines });
  t.equal(r.srcCode, 0, 'source exits 0', { 'source-stderr': nonProgress(r.srcStderr) });
  assertNoErrorLine(t, r.srcStderr);
  t.equal(r.srcReport?.status, 'completed', 'the real migration completed');
  t.equal(r.dumpsEqual, true, 'RAM dumps byte-identical');
  t.equal(r.srcReport?.integrity?.match, true, 'integrity.match');
});

/**
 * A main-channel hello followed by the stream header and half a CONFIGURATION record, then EOF.
 * `segments`: 'separate' writes the hello, waits, then writes the rest; 'one' writes all of it at once
 * (one TCP segment on loopback: what a real source does when the destination is slow to read).
 */
async function truncatedStream(t: Test, segments: 'separate' | 'one'): Promise<void> {
  const dir = await tempDir(t);
  const json = `${dir}/destination.json`;
  const dump = `${dir}/destination.ram`;
  const dst = await startDestination(t, [
    '--capabilities',
    'return-path',
    '--json',
    json,
    '--dump-ram',
    dump,
    '--quiet',
  ]);
  const hello = helloBytes({ kind: KIND_MAIN });
  const rest = Buffer.concat([streamHeaderBytes(), truncatedConfigurationBytes(200, 10)]);
  const reply =
    segments === 'one'
      ? await sendRaw(dst.address, [Buffer.concat([hello, rest])], { timeoutMs: 6000 })
      : await sendRaw(dst.address, [hello, rest], { gapMs: 200, timeoutMs: 6000 });
  const code = await waitExit(dst, 6000);
  const report = await readJsonFile(json);
  t.equal(code, 1, 'destination exits 1 (bounded: 6 s)', { stderr: dst.stderrLines });
  assertOneLineError(t, dst.stderrLines, /^switchover-destination: MIG_ERR_TRUNCATED: /);
  t.equal(reply.closedBy, 'peer', 'the destination closed the connection');
  t.equal(report?.status, 'failed', 'destination report status failed', { report });
  t.equal(report?.['error-code'], 'MIG_ERR_TRUNCATED', 'destination report error-code');
  t.notOk(report?.guest, 'no guest started');
  t.equal(await fileExists(dump), false, 'no RAM dump');
}

t.test('valid hello, then a truncated stream (hello and stream in separate segments)', async (t) => {
  t.setTimeout(30_000);
  await truncatedStream(t, 'separate');
});

t.test('valid hello and a truncated stream arriving in one segment', async (t) => {
  t.setTimeout(30_000);
  await truncatedStream(t, 'one');
});

t.test('a flipped bit inside a RAM page: MIG_ERR_CHECKSUM, source fails, guest keeps running', async (t) => {
  t.setTimeout(30_000);
  // 2.5 MiB into the main stream: the third 1 MiB page batch of the first pass, mid page data
  // (each PART is 9 + 16 + 256 × 16 + 256 × 4096 + 5 bytes; the prefix before it is < 1 KiB)
  const flipAt = 2.5 * 1024 * 1024;
  let relay: Awaited<ReturnType<typeof startCorruptingRelay>> | null = null;
  t.teardown(() => relay?.close());
  const r = await runMigration(t, {
    ram: '32M',
    source: ['--dirty-rate', '8M'],
    timeoutMs: 20_000,
    connectVia: async (dst) => {
      relay = await startCorruptingRelay({ target: { host: dst.host, port: dst.port }, flipAt, bit: 3 });
      return relay.address;
    },
  });
  const src = r.srcReport ?? {};
  const dst = r.dstReport ?? {};
  const diag = { 'source-stderr': nonProgress(r.srcStderr), 'destination-stderr': r.dstStderr };
  const rl = relay as Awaited<ReturnType<typeof startCorruptingRelay>> | null;
  t.same(rl?.flipped && { offset: rl.flipped.offset }, { offset: flipAt }, 'the relay flipped one bit', {
    flipped: rl?.flipped,
  });
  t.equal(rl?.connections[0]?.kind, 1, 'the corrupted connection is the main channel');
  t.equal(rl?.connections[1]?.kind, 2, 'the return path went through the relay untouched');
  t.equal(r.timedOut, false, 'both exited on their own', diag);
  t.equal(r.dstCode, 1, 'destination exits 1', diag);
  assertOneLineError(t, r.dstStderr, /^switchover-destination: MIG_ERR_CHECKSUM: /);
  t.equal(dst['error-code'], 'MIG_ERR_CHECKSUM', 'destination report error-code MIG_ERR_CHECKSUM');
  t.match(dst['error-desc'], /page \d+/, 'the error names the page');
  t.notOk(dst.guest, 'destination guest never started');
  t.equal(r.dstDumpExists, false, 'no destination dump');
  t.equal(r.srcCode, 1, 'source exits 1', diag);
  t.equal(src.status, 'failed', 'source status failed');
  assertOneLineError(t, r.srcStderr, /^switchover-source: MIG_ERR_[A-Z_]+: .*MIG_ERR_CHECKSUM/);
  t.match(
    `${src['error-code']}: ${src['error-desc']}`,
    /MIG_ERR_CHECKSUM/,
    'source report carries the reason',
  );
  t.equal(src.guest?.['running-after-failure'], true, "guest['running-after-failure']");
});
