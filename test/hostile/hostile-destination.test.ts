/**
 * A hostile destination must not crash the source, nor leave its guest stopped. Each case is a fake
 * destination (test/helpers/fake-destination.ts) that migrates honestly until one scripted message:
 * a return-path body with the wrong types (an object that converts to a number, a number where a list
 * belongs, a msgpack uint64), a SHUT(0) before the source sent EOF, a second kind of frame on the
 * main socket's reverse direction, a RESUMED too large to merge. And two peers that are not
 * destinations at all. Allowed outcome: exit 1, the report written (`failed`, the right code), the
 * source guest running, one error line and no stack trace — never a crash, a hang or exit 0.
 */
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import type { Test } from 'tap';
import t from 'tap';
import { Command } from '../../shared/protocol/constants.js';
import { packBody } from '../../shared/protocol/msgpack.js';
import { encodeRp } from '../../shared/protocol/return-path-codec.js';
import type { StreamRecord } from '../../shared/protocol/stream-codec.js';
import {
  type FakeHooks,
  type FakeIO,
  rawRpFrame,
  startFakeDestination,
} from '../helpers/fake-destination.js';
import { BUSY_GUEST } from '../helpers/guests.js';
import {
  assertOneLineError,
  type Report,
  readJsonFile,
  startSide,
  tempDir,
  waitExit,
} from '../helpers/pair.js';

const STALL_MS = 3000;
const RP = { RESUMED: 0x20, LOAD_COST: 0x21, TIME: 0x24 } as const;

interface Outcome {
  code: number | string;
  report: Report | null;
  stderr: string[];
}

async function migrateTo(t: Test, port: number, extra: string[] = []): Promise<Outcome> {
  const json = join(await tempDir(t), 'source.json');
  const side = startSide(t, 'source', [
    '--connect',
    `127.0.0.1:${port}`,
    '--ram',
    '32M',
    '--dirty-rate',
    '1M',
    '--stall-timeout',
    String(STALL_MS),
    '--json',
    json,
    '--quiet',
    ...extra,
  ]);
  const code = await waitExit(side, 30_000);
  return { code, report: await readJsonFile(json), stderr: side.stderrLines };
}

/** Exit 1, a `failed` report with `errorCode`, the guest running on the source, one line, no stack. */
function failedSafely(t: Test, o: Outcome, errorCode: RegExp): void {
  t.equal(o.code, 1, 'the source exits 1 (not a crash, not a hang, not success)', { stderr: o.stderr });
  t.equal(o.report?.status, 'failed', 'the report is written and says failed');
  t.match(o.report?.['error-code'], errorCode, o.report?.['error-desc']);
  t.equal(o.report?.guest?.['running-after-failure'], true, 'the source guest runs on');
  assertOneLineError(t, o.stderr, errorCode);
}

const atSwitchover =
  (frame: (io: FakeIO) => void): FakeHooks['onRecord'] =>
  (rec: StreamRecord, io: FakeIO) => {
    if (rec.type === 'command' && rec.command === Command.SWITCHOVER_START) frame(io);
  };

async function hostile(t: Test, hooks: FakeHooks, extra: string[] = []): Promise<Outcome> {
  const fake = await startFakeDestination(t, { hooks });
  return migrateTo(t, fake.port, extra);
}

/** No bandwidth cap: the busy guest's final round is large (see BUSY_GUEST). */
const BIG_FINAL_ROUND = [...BUSY_GUEST, '--max-bandwidth', '0'];

t.test('TIME whose value is an object that converts to a number: MALFORMED, no crash', async (t) => {
  let sent = false;
  const o = await hostile(t, {
    onTimeProbe: (_value, io) => {
      if (sent) return false;
      sent = true;
      io.rp(rawRpFrame(RP.TIME, packBody({ value: { valueOf: 0, toString: 0 }, t: 1 })));
      return true;
    },
  });
  failedSafely(t, o, /MIG_ERR_MALFORMED/);
  t.match(o.report?.['error-desc'], /TIME\.value/, 'the error names the field');
});

t.test(
  'LOAD_COST whose waiting list is a number, in the final round: MALFORMED, guest resumed',
  async (t) => {
    const o = await hostile(t, {
      onRecord: atSwitchover((io) =>
        io.rp(rawRpFrame(RP.LOAD_COST, packBody({ 'final-load-ms': 1, waiting: 1, approvals: {} }))),
      ),
    });
    failedSafely(t, o, /MIG_ERR_MALFORMED/);
    t.match(o.report?.['error-desc'], /LOAD_COST\.waiting/);
  },
);

t.test('RESUMED with a uint64 checkpoint (a BigInt once decoded): MALFORMED, guest resumed', async (t) => {
  const o = await hostile(t, {
    onRecord: atSwitchover((io) => io.rp(rawRpFrame(RP.RESUMED, packBody({ checkpoints: { x: 5n } })))),
  });
  failedSafely(t, o, /MIG_ERR_MALFORMED/);
  t.match(o.report?.['error-desc'], /RESUMED\.checkpoints\.x/);
});

t.test('RESUMED with 4000 checkpoints: refused before it is merged', async (t) => {
  const many: Record<string, number> = {};
  for (let i = 0; i < 4000; i++) many[`c${i}`] = i;
  const o = await hostile(t, {
    onRecord: atSwitchover((io) => io.rp(rawRpFrame(RP.RESUMED, packBody({ checkpoints: many })))),
  });
  failedSafely(t, o, /MIG_ERR_MALFORMED/);
  t.match(o.report?.['error-desc'], /4000 entries/);
});

t.test('SHUT(0) at SWITCHOVER_START, before EOF: a protocol error, not success', async (t) => {
  const o = await hostile(
    t,
    {
      onRecord: atSwitchover((io) => io.rp(encodeRp({ type: 'shut', status: 0 }))),
    },
    BIG_FINAL_ROUND,
  );
  failedSafely(t, o, /MIG_ERR_STATE/);
  t.match(o.report?.['error-desc'], /SHUT\(0\) before/);
});

t.test('a PONG on the main socket (only one ERROR may come back there): refused', async (t) => {
  let sent = false;
  const o = await hostile(t, {
    onRecord: (rec, io) => {
      if (sent || rec.type !== 'command' || rec.command !== Command.PING) return;
      sent = true;
      io.main(encodeRp({ type: 'pong', value: 1 }));
    },
  });
  failedSafely(t, o, /MIG_ERR_UNKNOWN_MESSAGE/);
  t.match(o.report?.['error-desc'], /may send one ERROR here, got 'pong'/);
});

/** A TCP server that records what it got and answers (or not) like something that is not ours. */
async function stranger(t: Test, answer: Buffer | null): Promise<{ port: number; received: () => number }> {
  let received = 0;
  const server: Server = createServer((s) => {
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      received += d.length;
      if (answer) s.end(answer);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.close();
  });
  return { port: (server.address() as { port: number }).port, received: () => received };
}

t.test(
  'an HTTP server is not a destination: named, with what it said, and it got only the hello',
  async (t) => {
    const http = await stranger(t, Buffer.from('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n'));
    const o = await migrateTo(t, http.port);
    failedSafely(t, o, /MIG_ERR_BAD_HELLO/);
    t.match(
      o.report?.['error-desc'],
      /127\.0\.0\.1:\d+ is not a switchover destination: it answered "HTTP\/1\.1 400/,
    );
    t.equal(http.received(), 56, 'it received the 56-byte hello and nothing of the guest');
  },
);

t.test('a silent server is not a destination: named within the connect timeout, nothing sent', async (t) => {
  const silent = await stranger(t, null);
  const o = await migrateTo(t, silent.port);
  failedSafely(t, o, /MIG_ERR_TIMEOUT/);
  t.match(o.report?.['error-desc'], /is not a switchover destination: no answer to the main hello/);
  t.equal(silent.received(), 56, 'only the hello');
});

t.test('SHUT(0) and then no guest report: the source completes without waiting a minute', async (t) => {
  const fake = await startFakeDestination(t, {
    completeAtEof: true,
    // the second RESUMED (the destination guest's self-check) never comes; probes are still answered
    outgoing: (frame) =>
      frame.readUInt16BE(0) === RP.RESUMED && frame.includes('self-check') ? Buffer.alloc(0) : frame,
  });
  const started = Date.now();
  const o = await migrateTo(t, fake.port);
  const ms = Date.now() - started;
  t.equal(o.code, 0, 'exit 0: the migration completed', { stderr: o.stderr });
  t.equal(o.report?.status, 'completed');
  t.ok(
    ms < 25_000,
    `the source ended ${ms} ms after it started (its report wait is 5 s + 5 s per GiB, was 60 s)`,
  );
});
