/** One tamper test per error code the stream framer can raise (Firecracker's snapshot tests). */
import t from 'tap';
import { MigrationError } from '../../shared/errors.js';
import { decodeStream, StreamFramer } from '../../shared/protocol/stream-codec.js';
import * as B from '../helpers/byte-builder.js';
import { configBody } from '../helpers/sample-stream.js';

const H = B.streamHeader();
const cat = (...parts: Buffer[]) => Buffer.concat(parts);
const payload = Buffer.from('device state');
const code = (c: string) => ({ code: `MIG_ERR_${c}` });

t.test('a wrong stream magic is BAD_MAGIC as soon as 4 bytes arrive', async (t) => {
  t.throws(() => new StreamFramer().feed(Buffer.from('QEVM')), code('BAD_MAGIC'));
});

t.test('another stream version is VERSION', async (t) => {
  t.throws(() => decodeStream(B.streamHeader(0x53575354, 1)), code('VERSION'));
  t.throws(() => decodeStream(B.streamHeader(0x53575354, 1)), { name: 'VersionError' });
});

t.test('a footer with the wrong marker byte is FOOTER_MISMATCH naming the section', async (t) => {
  t.throws(() => decodeStream(cat(H, B.sectionShort(0x02, 4, payload, { marker: 0x7f }))), {
    ...code('FOOTER_MISMATCH'),
    section: 4,
  });
});

t.test('a footer naming another section id is FOOTER_MISMATCH', async (t) => {
  const start = B.sectionWithHeader(0x01, 4, 'ram', 0, 4, payload, { id: 5 });
  t.throws(() => decodeStream(cat(H, start)), { ...code('FOOTER_MISMATCH'), section: 4 });
});

t.test('an unknown section type byte is UNKNOWN_SECTION_TYPE with its offset', async (t) => {
  t.throws(() => decodeStream(cat(H, Buffer.from([0x05]))), { ...code('UNKNOWN_SECTION_TYPE'), offset: 8 });
  t.throws(() => decodeStream(cat(H, Buffer.from([0x7e]))), code('UNKNOWN_SECTION_TYPE'));
});

t.test('an unknown command, including 0, is UNKNOWN_COMMAND', async (t) => {
  t.throws(() => decodeStream(cat(H, B.command(0))), code('UNKNOWN_COMMAND'));
  t.throws(() => decodeStream(cat(H, B.command(3))), code('UNKNOWN_COMMAND'));
});

t.test('a fixed-length command with another length is BAD_LENGTH before its payload arrives', async (t) => {
  t.throws(() => new StreamFramer().feed(cat(H, B.command(2, Buffer.alloc(0), 5))), code('BAD_LENGTH'));
  t.throws(() => decodeStream(cat(H, B.command(1, Buffer.alloc(1)))), code('BAD_LENGTH'));
  t.throws(() => decodeStream(cat(H, B.command(11, Buffer.alloc(2)))), code('BAD_LENGTH'));
});

t.test('a section length over the cap is OVERSIZE before any payload is buffered', async (t) => {
  const huge = B.b().u8(0x02).u32(1).u32(0xffffffff).build();
  t.throws(() => new StreamFramer().feed(cat(H, huge)), { ...code('OVERSIZE'), section: 1 });
  const start = B.b()
    .u8(0x01)
    .u32(2)
    .u8(3)
    .str('ram')
    .u32(0)
    .u32(4)
    .u32(64 * 1024 * 1024 + 1)
    .build();
  t.throws(() => new StreamFramer().feed(cat(H, start)), code('OVERSIZE'));
  const small = new StreamFramer({ maxSectionPayload: 8 });
  t.throws(() => small.feed(cat(H, B.sectionShort(0x03, 1, Buffer.alloc(9)))), code('OVERSIZE'));
});

t.test('a configuration or vmdesc length over 1 MiB is OVERSIZE', async (t) => {
  t.throws(
    () =>
      new StreamFramer().feed(
        cat(
          H,
          B.b()
            .u8(0x07)
            .u32(1024 * 1024 + 1)
            .build(),
        ),
      ),
    code('OVERSIZE'),
  );
  const vm = B.b().u8(0x06).u32(0x7fffffff).build();
  t.throws(() => new StreamFramer().feed(cat(H, B.eof(), vm)), code('OVERSIZE'));
});

t.test('end() with a partial record buffered is TRUNCATED', async (t) => {
  const f = new StreamFramer();
  const part = B.sectionShort(0x02, 1, payload);
  t.same(f.feed(cat(H, part.subarray(0, part.length - 1))).length, 1);
  t.throws(() => f.end(), code('TRUNCATED'));
  const g = new StreamFramer();
  g.feed(H.subarray(0, 5));
  t.throws(() => g.end(), code('TRUNCATED'));
});

t.test('a configuration body without the typed fields is MALFORMED', async (t) => {
  const bad = [
    B.msgpack([1, 2]),
    B.msgpack({ ...configBody, machine: 3 }),
    B.msgpack({ ...configBody, pageSize: '4096' }),
    B.msgpack({ ...configBody, capabilities: { 'return-path': 'yes' } }),
    Buffer.from([0x81]),
  ];
  for (const body of bad) t.throws(() => decodeStream(cat(H, B.configuration(body))), code('MALFORMED'));
});

t.test('records out of place and bad text are MALFORMED', async (t) => {
  t.throws(() => decodeStream(cat(H, B.vmdesc('{}'))), code('MALFORMED'), 'vmdesc before EOF');
  t.throws(() => decodeStream(cat(H, B.eof(), B.command(1))), code('MALFORMED'), 'command after EOF');
  t.throws(
    () => decodeStream(cat(H, B.eof(), B.vmdesc('{}'), B.eof())),
    code('MALFORMED'),
    'bytes after vmdesc',
  );
  t.throws(() => decodeStream(cat(H, B.eof(), B.vmdesc('{nope'))), code('MALFORMED'), 'vmdesc not JSON');
  const badIdstr = B.sectionWithHeader(0x01, 1, 'x', 0, 1, payload);
  badIdstr[6] = 0xff;
  t.throws(() => decodeStream(cat(H, badIdstr)), code('MALFORMED'), 'idstr not UTF-8');
  t.throws(() => decodeStream(cat(H, B.b().u8(0x01).u32(1).u8(0).build())), code('MALFORMED'), 'empty idstr');
});

t.test('the first error is sticky: later feeds and end() throw the same error', async (t) => {
  const f = new StreamFramer();
  let first: unknown;
  try {
    f.feed(Buffer.from('nope'));
  } catch (err) {
    first = err;
  }
  t.type(first, MigrationError);
  t.throws(() => f.feed(H), code('BAD_MAGIC'));
  try {
    f.end();
    t.fail('end() did not throw');
  } catch (err) {
    t.equal(err, first, 'the very same error object');
  }
});
