import t from 'tap';
import { ChannelKind } from '../../shared/protocol/constants.js';
import { decodeHello, encodeHello } from '../../shared/protocol/hello.js';
import * as B from '../helpers/byte-builder.js';

const id = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
const other = Buffer.from('ffeeddccbbaa99887766554433221100', 'hex');
const tag = Buffer.alloc(32, 0x5a);
const code = (c: string) => ({ code: `MIG_ERR_${c}` });

t.test('encodeHello produces the builder bytes, zero auth tag by default', async (t) => {
  t.same(encodeHello({ kind: ChannelKind.MAIN, migrationId: id }), B.hello(1, 0, id));
  t.same(
    encodeHello({ kind: ChannelKind.PAGE, index: 3, migrationId: id, authTag: tag }),
    B.hello(3, 3, id, tag),
  );
  t.equal(encodeHello({ kind: ChannelKind.RETURN_PATH, migrationId: id }).length, 56);
});

t.test('decodeHello returns every field and copies the id and tag', async (t) => {
  const bytes = B.hello(3, 7, id, tag);
  const h = decodeHello(bytes, { kind: ChannelKind.PAGE, migrationId: id });
  t.same({ kind: h.kind, index: h.index }, { kind: ChannelKind.PAGE, index: 7 });
  t.same(h.migrationId, id);
  t.same(h.authTag, tag);
  bytes.fill(0);
  t.same(h.migrationId, id, 'unaffected by later changes to the input');
});

t.test('a short hello is TRUNCATED and a long one BAD_LENGTH', async (t) => {
  t.throws(() => decodeHello(B.hello(1, 0, id).subarray(0, 55)), code('TRUNCATED'));
  t.throws(() => decodeHello(Buffer.alloc(0)), code('TRUNCATED'));
  t.throws(() => decodeHello(Buffer.concat([B.hello(1, 0, id), Buffer.alloc(1)])), code('BAD_LENGTH'));
});

t.test('a wrong hello magic is BAD_MAGIC', async (t) => {
  const bytes = B.hello(1, 0, id);
  bytes.write('QEVM', 0, 'latin1');
  t.throws(() => decodeHello(bytes), code('BAD_MAGIC'));
});

t.test('another protocol version is VERSION', async (t) => {
  const bytes = B.hello(1, 0, id);
  bytes.writeUInt16BE(1, 4); // protocol 1 (before ACCEPT)
  t.throws(() => decodeHello(bytes), { ...code('VERSION'), name: 'VersionError' });
});

t.test('an unknown or unexpected channel kind is BAD_HELLO on field kind', async (t) => {
  t.throws(() => decodeHello(B.hello(0, 0, id)), { ...code('BAD_HELLO'), field: 'kind' });
  t.throws(() => decodeHello(B.hello(9, 0, id)), { ...code('BAD_HELLO'), field: 'kind' });
  t.throws(() => decodeHello(B.hello(2, 0, id), { kind: ChannelKind.MAIN }), {
    ...code('BAD_HELLO'),
    field: 'kind',
  });
});

t.test('another migration id is BAD_HELLO on field migrationId', async (t) => {
  t.throws(() => decodeHello(B.hello(1, 0, other), { migrationId: id }), {
    ...code('BAD_HELLO'),
    field: 'migrationId',
  });
});

t.test('encodeHello refuses ids, tags and indexes of the wrong size', async (t) => {
  t.throws(() => encodeHello({ kind: ChannelKind.MAIN, migrationId: id.subarray(1) }), code('BAD_HELLO'));
  t.throws(
    () => encodeHello({ kind: ChannelKind.MAIN, migrationId: id, authTag: tag.subarray(1) }),
    code('BAD_HELLO'),
  );
  t.throws(() => encodeHello({ kind: ChannelKind.PAGE, index: 256, migrationId: id }), code('BAD_HELLO'));
  t.throws(() => encodeHello({ kind: ChannelKind.INVALID, migrationId: id }), code('BAD_HELLO'));
});
