/**
 * RAM section records other than page batches (page-batch.test.ts has those): GEOMETRY, EOS,
 * FINAL_ROUND and PAGE_CHANNELS against the independent byte builder, and one tamper case per error.
 */
import t from 'tap';
import {
  decodeRamRecord,
  encodePageChannels,
  encodeRamEos,
  encodeRamFinalRound,
  encodeRamGeometry,
} from '../../shared/protocol/ram-records.js';
import { SectionPayload } from '../../shared/protocol/section-payload.js';
import * as B from '../helpers/byte-builder.js';
import { geometry, pageChannels } from '../helpers/sample-stream.js';

const code = (c: string) => ({ code: `MIG_ERR_${c}` });
const decode = (b: Buffer | number[]) => decodeRamRecord(SectionPayload.of(Buffer.from(b)));

t.test('geometry and EOS encode to the builder bytes and round-trip', async (t) => {
  t.same(encodeRamGeometry(geometry), B.ramGeometry(B.msgpack(geometry)));
  t.same(decode(encodeRamGeometry(geometry)), { kind: 'geometry', geometry });
  t.same(encodeRamEos(), Buffer.from([0x03]));
  t.same(decode(encodeRamEos()), { kind: 'eos' });
});

t.test('FINAL_ROUND is 0x04 and a be32 round; another length or round 0 is MALFORMED', async (t) => {
  t.same(encodeRamFinalRound(0x01020304), Buffer.from([0x04, 0x01, 0x02, 0x03, 0x04]));
  t.same(decode([0x04, 0, 0, 0, 7]), { kind: 'final-round', round: 7 });
  t.same(decode(encodeRamFinalRound(0xffffffff)), { kind: 'final-round', round: 0xffffffff });
  for (const bad of [[0x04], [0x04, 0, 0, 7], [0x04, 0, 0, 0, 7, 0], [0x04, 0, 0, 0, 0]])
    t.throws(() => decode(bad), code('MALFORMED'), bad.join(','));
});

t.test('PAGE_CHANNELS is 0x06, a be32 length and a msgpack {host, ports}', async (t) => {
  t.same(encodePageChannels(pageChannels), B.ramPageChannels(B.msgpack(pageChannels)));
  t.same(decode(encodePageChannels(pageChannels)), { kind: 'page-channels', channels: pageChannels });
  const extra = B.ramPageChannels(B.msgpack({ ...pageChannels, note: 'ignored' }));
  t.same(decode(extra), { kind: 'page-channels', channels: pageChannels }, 'only host and ports are kept');
  for (const body of [
    { host: '', ports: [1] },
    { host: 'h'.repeat(256), ports: [1] },
    { host: 'a', ports: [] },
    { host: 'a', ports: [0] },
    { host: 'a', ports: [65536] },
    { host: 'a', ports: [1.5] },
    { host: 'a', ports: Array.from({ length: 256 }, (_, i) => i + 1) },
    { host: 7, ports: [1] },
    [pageChannels],
  ])
    t.throws(
      () => decode(B.ramPageChannels(B.msgpack(body))),
      code('MALFORMED'),
      JSON.stringify(body).slice(0, 40),
    );
  const trailing = Buffer.concat([B.ramPageChannels(B.msgpack(pageChannels)), Buffer.alloc(1)]);
  t.throws(() => decode(trailing), code('MALFORMED'), 'trailing byte');
});

t.test('a page batch is left to the page-batch codec', async (t) => {
  t.same(decode(B.pageBatch(0, 1, [])), { kind: 'pages' });
});

t.test('empty payloads are TRUNCATED; unknown kinds and bad bodies MALFORMED', async (t) => {
  t.throws(() => decode([]), code('TRUNCATED'));
  t.throws(() => decode([0x03, 0x00]), code('MALFORMED'), 'EOS with a trailing byte');
  for (const kind of [0x00, 0x05, 0x07, 0xff])
    t.throws(() => decode([kind]), code('MALFORMED'), `kind ${kind}`);
  for (const body of [
    { ...geometry, pageSize: 0 },
    { ...geometry, pageCount: -1 },
    { ...geometry, blocks: [{ name: 1, pages: 2 }] },
    [geometry],
  ])
    t.throws(() => decode(B.ramGeometry(B.msgpack(body))), code('MALFORMED'));
  const trailing = Buffer.concat([B.ramGeometry(B.msgpack(geometry)), Buffer.alloc(1)]);
  t.throws(() => decode(trailing), code('MALFORMED'));
});
