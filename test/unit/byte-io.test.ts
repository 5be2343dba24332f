import t from 'tap';
import { ByteReader } from '../../shared/protocol/byte-reader.js';
import { ByteWriter } from '../../shared/protocol/byte-writer.js';
import * as B from '../helpers/byte-builder.js';

t.test('ByteReader reads big-endian fields and views', async (t) => {
  const buf = B.b().u8(1).u16(0x0203).u32(0x04050607).u64(0x08090a0b0c0d0e0fn).str('xyz').build();
  const r = new ByteReader(buf, 'test');
  t.equal(r.u8(), 1);
  t.equal(r.u16(), 0x0203);
  t.equal(r.u32(), 0x04050607);
  t.equal(r.u64(), 0x08090a0b0c0d0e0fn);
  t.equal(r.offset, 15);
  const view = r.bytes(3);
  t.equal(view.toString(), 'xyz');
  t.equal(view.buffer, buf.buffer, 'bytes() is a view, not a copy');
  t.equal(r.remaining(), 0);
  r.expectEnd();
});

t.test('ByteReader overruns are TRUNCATED with the offset, and leftovers MALFORMED', async (t) => {
  const r = new ByteReader(Buffer.from([1, 2, 3]), 'ctx', 100);
  r.u8();
  t.throws(() => r.u32(), { code: 'MIG_ERR_TRUNCATED', offset: 101, section: 'ctx' });
  t.throws(() => r.bytes(-1), { code: 'MIG_ERR_TRUNCATED' });
  t.throws(() => r.expectEnd(), { code: 'MIG_ERR_MALFORMED' });
});

t.test('ByteWriter grows past its capacity and matches the builder', async (t) => {
  const w = new ByteWriter(1);
  w.u8(1).u16(0x0203).u32(0x04050607).u64(0x08090a0b0c0d0e0fn).bytes(Buffer.from('xyz')).u32(0);
  w.patchU32(w.length - 4, 0xcafebabe);
  const expected = B.b()
    .u8(1)
    .u16(0x0203)
    .u32(0x04050607)
    .u64(0x08090a0b0c0d0e0fn)
    .str('xyz')
    .u32(0xcafebabe)
    .build();
  t.same(w.finish(), expected);
  t.equal(w.length, 0, 'finish() starts the writer afresh');
});

t.test('ByteWriter refuses out-of-range integers as MALFORMED', async (t) => {
  const w = new ByteWriter();
  t.throws(() => w.u8(256), { code: 'MIG_ERR_MALFORMED' });
  t.throws(() => w.u16(-1), { code: 'MIG_ERR_MALFORMED' });
  t.throws(() => w.u32(2 ** 32), { code: 'MIG_ERR_MALFORMED' });
  t.throws(() => w.u32(1.5, 'round'), { code: 'MIG_ERR_MALFORMED', field: 'round' });
  t.throws(() => w.u64(-1n), { code: 'MIG_ERR_MALFORMED' });
});
