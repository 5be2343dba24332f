/**
 * switchover-ack end to end (QEMU's switchover-ack capability, migration/savevm.c
 * qemu_loadvm_approve_switchover): two real processes over loopback TCP with SWITCHOVER_TRACE=1.
 *
 *  1. no device needs the ACK → the destination sends it when OPEN_RETURN_PATH is handled;
 *  2. several devices → the ACK waits for the slowest preparation, which stays out of the downtime;
 *  3. a device that never approves → the source keeps iterating; SIGINT cancels, the guest runs on;
 *  4. switchover-ack without return-path → refused on both sides with QEMU's message (exit 2);
 *  5. capability mismatch → both sides fail fast, naming the capability on both sides;
 *  6. the destination dies before the ACK → the source fails (no hang), the guest runs on;
 *  7. the capability's effect: device preparation lands in the downtime only without it.
 *
 * Each case is bounded with t.setTimeout; processes are killed and temp files removed at teardown.
 */
import t from 'tap';
import {
  type AckSide,
  readJson,
  running,
  sleep,
  start,
  startPair,
  type TraceRec,
  tail,
  waitExit,
  waitTrace,
} from '../helpers/ack-pair.js';

const ACK = 'return-path,switchover-ack';
const MISMATCH = /^switchover-destination: MIG_ERR_CAPABILITY_MISMATCH: /;
const REQUIRES = "Capability 'switchover-ack' requires capability 'return-path'";

/** Monotonic ms, the clock of the trace records (process.hrtime, shared by processes on one host). */
const monotonicNow = (): number => Number(process.hrtime.bigint()) / 1e6;

const find = (trace: TraceRec[], event: string, pred: (r: TraceRec) => boolean = () => true) =>
  trace.find((r) => r.event === event && pred(r));

const diag = (...sides: AckSide[]) => Object.fromEntries(sides.map((s) => [s.role, tail(s)]));

t.test('1. ACK sent at OPEN_RETURN_PATH when no device needs it', async (t) => {
  t.setTimeout(45_000);
  const p = await startPair(t, { dstCaps: ACK, srcCaps: ACK });
  const [src, dst] = await Promise.all([waitExit(p.source, 30_000), waitExit(p.destination, 30_000)]);
  t.equal(src, 0, 'source exits 0', diag(p.source, p.destination));
  t.equal(dst, 0, 'destination exits 0', diag(p.source, p.destination));

  const sends = p.destination.trace().filter((r) => r.event === 'mig:rp:send');
  const ackAt = sends.findIndex((r) => r.type === 'switchover-ack');
  t.ok(ackAt >= 0, "the destination sent 'switchover-ack' on the return path", { sends });
  t.same(
    sends
      .slice(0, Math.max(ackAt, 0))
      .map((r) => r.type)
      .filter((type) => type !== 'pong' && type !== 'time'),
    [],
    'nothing but pong (and clock-probe answers) went on the return path before the ACK',
    { sends: sends.map((r) => r.type) },
  );
  t.equal(sends.filter((r) => r.type === 'switchover-ack').length, 1, 'exactly one ACK');

  const strace = p.source.trace();
  const recv = find(strace, 'mig:rp:recv', (r) => r.type === 'switchover-ack');
  const toDevice = find(strace, 'mig:state', (r) => r.to === 'device');
  t.ok(recv, 'the source received the ACK');
  t.ok(toDevice, "the source reached state 'device'");
  if (recv && toDevice) t.ok(recv.t <= toDevice.t, 'the ACK arrived before the switchover');

  const report = await readJson(p.srcJson);
  t.equal(report?.status, 'completed', 'status completed', { report });
  t.equal(report?.['switchover-ack']?.enabled, true, "'switchover-ack'.enabled");
  t.equal(report?.['switchover-ack']?.acked, true, "'switchover-ack'.acked");
  t.same(report?.['switchover-ack']?.devices, [], 'no device needed the ACK');
});

t.test('2. several devices: the ACK waits for the slowest preparation', async (t) => {
  t.setTimeout(45_000);
  const p = await startPair(t, {
    dstCaps: ACK,
    srcCaps: ACK,
    devices: ['precopy:size=8M,prep=300ms,id=a', 'precopy:size=8M,prep=900ms,id=b'],
  });
  const [src, dst] = await Promise.all([waitExit(p.source, 30_000), waitExit(p.destination, 30_000)]);
  t.equal(src, 0, 'source exits 0', diag(p.source, p.destination));
  t.equal(dst, 0, 'destination exits 0', diag(p.source, p.destination));

  const report = await readJson(p.srcJson);
  t.equal(report?.status, 'completed', 'status completed', { report });
  const ack = report?.['switchover-ack'];
  t.equal(ack?.acked, true, "'switchover-ack'.acked");
  for (const id of ['a', 'b'])
    t.ok((ack?.devices ?? []).includes(id), `'switchover-ack'.devices contains ${id}`, {
      devices: ack?.devices,
    });
  t.equal(ack?.['held-by'], 'b', "'held-by' is the slower device b");

  const strace = p.source.trace();
  const active = find(strace, 'mig:state', (r) => r.to === 'active');
  const recv = find(strace, 'mig:rp:recv', (r) => r.type === 'switchover-ack');
  t.ok(active && recv, "trace has the source's 'active' transition and the ACK");
  if (active && recv)
    t.ok(recv.t - active.t >= 900, `ACK came ≥ 900 ms after 'active' (${(recv.t - active.t).toFixed(1)} ms)`);
  t.ok(
    typeof report?.downtime === 'number' && report.downtime < 300,
    `downtime < 300 ms (${report?.downtime})`,
    diag(p.source, p.destination),
  );
});

t.test('3. a device that never approves holds the switchover until cancelled', async (t) => {
  t.setTimeout(45_000);
  const p = await startPair(t, { dstCaps: ACK, srcCaps: ACK, devices: ['precopy:size=4M,prep=never'] });
  const active = await waitTrace(p.source, (r) => r.event === 'mig:state' && r.to === 'active', 20_000);
  t.ok(active, "the source reached 'active'", diag(p.source, p.destination));
  await sleep(2000);
  t.ok(running(p.source), "the source still runs 2 s after 'active'", diag(p.source, p.destination));
  const strace = p.source.trace();
  t.notOk(
    find(strace, 'mig:state', (r) => r.to === 'device'),
    "no transition to 'device'",
  );
  t.notOk(
    find(strace, 'mig:rp:recv', (r) => r.type === 'switchover-ack'),
    'no ACK received',
  );
  const iterations = strace.filter((r) => r.event === 'mig:iteration');
  const last = iterations[iterations.length - 1];
  t.ok(
    last && monotonicNow() - last.t < 1000,
    'the source is still iterating (an iteration record within the last second)',
    {
      iterations: iterations.length,
      lastAgoMs: last ? monotonicNow() - last.t : null,
      ...diag(p.source, p.destination),
    },
  );

  p.source.kill('SIGINT');
  const src = await waitExit(p.source, 10_000);
  t.equal(src, 1, 'SIGINT: source exits 1', diag(p.source));
  const report = await readJson(p.srcJson);
  t.equal(report?.status, 'cancelled', "status 'cancelled'", { report, ...diag(p.source, p.destination) });
  t.equal(report?.guest?.['running-after-failure'], true, "guest['running-after-failure']");
  const dst = await waitExit(p.destination, 10_000);
  t.equal(dst, 1, 'destination exits 1 (its guest never started)', diag(p.destination));
});

t.test('4. switchover-ack without return-path is refused with QEMU message', async (t) => {
  t.setTimeout(45_000);
  const source = start(t, 'source', [
    '--connect',
    '127.0.0.1:9',
    '--capabilities',
    'switchover-ack',
    '--ram',
    '32M',
    '--quiet',
  ]);
  const destination = start(t, 'destination', [
    '--listen',
    '127.0.0.1:0',
    '--capabilities',
    'switchover-ack',
  ]);
  const [src, dst] = await Promise.all([waitExit(source, 15_000), waitExit(destination, 15_000)]);
  for (const [side, code] of [
    [source, src],
    [destination, dst],
  ] as const) {
    t.equal(code, 2, `${side.role} exits 2`, { stderr: side.stderrLines.slice(0, 5) });
    t.ok(
      side.stderrLines.some((l) => l.includes(REQUIRES)),
      `${side.role} stderr says "${REQUIRES}"`,
      { stderr: side.stderrLines.slice(0, 5) },
    );
  }
});

t.test('5. capability mismatch fails fast on both sides', async (t) => {
  for (const [dstCaps, srcCaps, srcSetting, dstSetting] of [
    [ACK, 'return-path', 'off', 'on'],
    ['return-path', ACK, 'on', 'off'],
  ] as const) {
    await t.test(`destination ${dstCaps}, source ${srcCaps}`, async (t) => {
      t.setTimeout(45_000);
      const p = await startPair(t, { dstCaps, srcCaps });
      const [src, dst] = await Promise.all([waitExit(p.source, 15_000), waitExit(p.destination, 15_000)]);
      t.equal(src, 1, 'source exits 1', diag(p.source, p.destination));
      t.equal(dst, 1, 'destination exits 1', diag(p.source, p.destination));
      const last = Math.max(p.source.exitedAt() ?? Number.POSITIVE_INFINITY, p.destination.exitedAt() ?? 0);
      t.ok(last - p.source.startedAt <= 5000, `both exited within 5 s (${last - p.source.startedAt} ms)`);

      const report = await readJson(p.srcJson);
      t.equal(report?.status, 'failed', 'source status failed', { report });
      t.match(
        report?.['error-code'],
        /^MIG_ERR_(PEER_FAILED|CAPABILITY_MISMATCH)$/,
        'source error-code is PEER_FAILED or CAPABILITY_MISMATCH',
        { 'error-desc': report?.['error-desc'] },
      );
      t.match(
        report?.['error-desc'],
        `'switchover-ack' is ${srcSetting} on the source but ${dstSetting} on the destination`,
        "source error-desc names 'switchover-ack' on/off for both sides",
      );
      const lines = p.destination.plainStderr();
      t.ok(
        lines.some((l) => MISMATCH.test(l)),
        'destination stderr has a MIG_ERR_CAPABILITY_MISMATCH line',
        { stderr: lines },
      );
    });
  }
});

t.test('6. return path drops before the ACK: failed, not a hang', async (t) => {
  t.setTimeout(45_000);
  const p = await startPair(t, { dstCaps: ACK, srcCaps: ACK, devices: ['precopy:size=4M,prep=never'] });
  const active = await waitTrace(p.source, (r) => r.event === 'mig:state' && r.to === 'active', 20_000);
  t.ok(active, "the source reached 'active'", diag(p.source, p.destination));
  await sleep(1000);
  t.ok(running(p.source), "the source still runs 1 s after 'active'", diag(p.source, p.destination));
  t.notOk(
    find(p.source.trace(), 'mig:rp:recv', (r) => r.type === 'switchover-ack'),
    'no ACK before the kill',
  );
  p.destination.kill('SIGKILL');
  const killedAt = Date.now();
  const src = await waitExit(p.source, 10_000);
  t.not(src, 'timeout', `source ended within 10 s of the kill (${Date.now() - killedAt} ms)`, diag(p.source));
  t.equal(src, 1, 'source exits 1');
  const report = await readJson(p.srcJson);
  t.equal(report?.status, 'failed', 'status failed', { report, ...diag(p.source) });
  t.equal(report?.guest?.['running-after-failure'], true, "guest['running-after-failure']");
});

t.test('7. effect of the capability on the downtime (32M device, prep 600 ms)', async (t) => {
  for (const ack of [false, true]) {
    await t.test(
      ack ? 'with switchover-ack: downtime < 300' : 'without switchover-ack: downtime ≥ 500',
      async (t) => {
        t.setTimeout(45_000);
        const caps = ack ? ACK : 'return-path';
        const p = await startPair(t, {
          dstCaps: caps,
          srcCaps: caps,
          devices: ['precopy:size=32M,prep=600ms'],
        });
        const [src, dst] = await Promise.all([waitExit(p.source, 30_000), waitExit(p.destination, 30_000)]);
        t.equal(src, 0, 'source exits 0', diag(p.source, p.destination));
        t.equal(dst, 0, 'destination exits 0', diag(p.source, p.destination));
        const report = await readJson(p.srcJson);
        t.equal(report?.status, 'completed', 'status completed', { report });
        const downtime = report?.downtime;
        t.equal(typeof downtime, 'number', 'downtime reported');
        if (ack) t.ok(downtime < 300, `downtime < 300 ms (${downtime})`, diag(p.source, p.destination));
        else t.ok(downtime >= 500, `downtime ≥ 500 ms (${downtime})`, diag(p.source, p.destination));
      },
    );
  }
});
