import t from 'tap';
import {
  checkRpHeader,
  encodeRp,
  RP_TABLE,
  RpFramer,
  type RpMessage,
} from '../../shared/protocol/return-path-codec.js';
import * as B from '../helpers/byte-builder.js';

const code = (c: string) => ({ code: `MIG_ERR_${c}` });

/** Every message with the bytes the builder says it must have. */
const cases: [RpMessage, Buffer][] = [
  [{ type: 'shut', status: 0 }, B.rp(1, B.be32(0))],
  [{ type: 'shut', status: 1 }, B.rp(1, B.be32(1))],
  [{ type: 'pong', value: 0xfffffffe }, B.rp(2, B.be32(0xfffffffe))],
  [{ type: 'switchover-ack' }, B.rp(7)],
  [
    { type: 'resumed', body: { checkpoints: { 'guest-started': 12.5 } } },
    B.rp(0x20, B.msgpack({ checkpoints: { 'guest-started': 12.5 } })),
  ],
  [
    { type: 'load-cost', body: { 'final-load-ms': 3, waiting: [], approvals: { nic0: 1 } } },
    B.rp(0x21, B.msgpack({ 'final-load-ms': 3, waiting: [], approvals: { nic0: 1 } })),
  ],
  [
    { type: 'error', code: 'MIG_ERR_CHECKSUM', message: 'page 5 differs' },
    B.rp(0x22, B.msgpack({ code: 'MIG_ERR_CHECKSUM', message: 'page 5 differs' })),
  ],
  [{ type: 'round-done', round: 17 }, B.rp(0x23, B.be32(17))],
  [{ type: 'time', body: { value: 1, t: 2.5 } }, B.rp(0x24, B.msgpack({ value: 1, t: 2.5 }))],
];

t.test('encodeRp produces the builder bytes for every message', async (t) => {
  for (const [msg, bytes] of cases) t.same(encodeRp(msg), bytes, msg.type);
});

t.test('every message round-trips through RpFramer', async (t) => {
  const f = new RpFramer();
  t.same(
    f.feed(Buffer.concat(cases.map((c) => c[1]))),
    cases.map((c) => c[0]),
  );
  t.equal(f.buffered, 0);
  f.end();
});

t.test('every frame split at every byte boundary, and byte-at-a-time, decodes the same', async (t) => {
  const all = Buffer.concat(cases.map((c) => c[1]));
  const expected = cases.map((c) => c[0]);
  for (let cut = 0; cut <= all.length; cut++) {
    const f = new RpFramer();
    const got = [...f.feed(all.subarray(0, cut)), ...f.feed(all.subarray(cut))];
    if (JSON.stringify(got) !== JSON.stringify(expected)) {
      t.fail(`split at ${cut}`);
      return;
    }
  }
  const f = new RpFramer();
  const got: RpMessage[] = [];
  for (let i = 0; i < all.length; i++) got.push(...f.feed(all.subarray(i, i + 1)));
  t.same(got, expected);
});

t.test('the RP table has QEMU lengths for QEMU messages and caps for variable ones', async (t) => {
  t.same(RP_TABLE[1], { name: 'SHUT', length: 4 });
  t.same(RP_TABLE[7], { name: 'SWITCHOVER_ACK', length: 0 });
  t.equal(RP_TABLE[0x22]!.length, 'variable');
  t.equal(RP_TABLE[0], undefined);
});

t.test('an unknown message type, including 0, is UNKNOWN_MESSAGE before the body arrives', async (t) => {
  t.throws(() => new RpFramer().feed(B.rp(0, Buffer.alloc(0), 4)), code('UNKNOWN_MESSAGE'));
  t.throws(() => new RpFramer().feed(B.rp(3, Buffer.alloc(0), 13)), code('UNKNOWN_MESSAGE'));
  t.throws(() => new RpFramer().feed(B.rp(0xffff)), code('UNKNOWN_MESSAGE'));
});

t.test('a fixed-length message with another length is BAD_LENGTH', async (t) => {
  t.throws(() => new RpFramer().feed(B.rp(1, Buffer.alloc(0), 5)), code('BAD_LENGTH'));
  t.throws(() => new RpFramer().feed(B.rp(7, Buffer.alloc(1))), code('BAD_LENGTH'));
  t.throws(() => new RpFramer().feed(B.rp(0x23, Buffer.alloc(3))), code('BAD_LENGTH'));
});

t.test('a variable message over its cap is OVERSIZE', async (t) => {
  const table = { 34: { name: 'ERROR', length: 'variable' as const, max: 64 } };
  t.throws(() => checkRpHeader(0x22, 65, table), code('OVERSIZE'));
  t.doesNotThrow(() => checkRpHeader(0x22, 64, table));
  t.throws(() => encodeRp({ type: 'time', body: { value: 1, boot: 'x'.repeat(70_000) } }), code('OVERSIZE'));
});

t.test('ERROR messages are cut to fit instead of failing to encode', async (t) => {
  const [msg] = new RpFramer().feed(
    encodeRp({ type: 'error', code: 'MIG_ERR_X', message: 'y'.repeat(100_000) }),
  );
  t.equal(msg!.type, 'error');
});

t.test('a body that is not a msgpack map is MALFORMED', async (t) => {
  t.throws(() => new RpFramer().feed(B.rp(0x20, B.msgpack([1, 2]))), code('MALFORMED'));
  t.throws(() => new RpFramer().feed(B.rp(0x21, B.msgpack('text'))), code('MALFORMED'));
  t.throws(() => new RpFramer().feed(B.rp(0x24, Buffer.from([0xc1]))), code('MALFORMED'));
  t.throws(() => new RpFramer().feed(B.rp(0x22, B.msgpack({ code: 1, message: 'm' }))), code('MALFORMED'));
  t.throws(() => new RpFramer().feed(B.rp(0x22, B.msgpack({ code: 'c' }))), code('MALFORMED'));
});

t.test('end() inside a frame is TRUNCATED and errors are sticky', async (t) => {
  const f = new RpFramer();
  t.same(f.feed(B.rp(2, B.be32(1)).subarray(0, 6)), []);
  t.throws(() => f.end(), code('TRUNCATED'));
  t.throws(() => f.feed(B.rp(7)), code('TRUNCATED'));
});
