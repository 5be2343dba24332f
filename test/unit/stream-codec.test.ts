import t from 'tap';
import { Command } from '../../shared/protocol/constants.js';
import {
  decodeStream,
  encodeCommand,
  encodeConfiguration,
  encodeEof,
  encodeOpenReturnPath,
  encodePing,
  encodeSectionEnd,
  encodeSectionFull,
  encodeSectionPart,
  encodeSectionStart,
  encodeStreamHeader,
  encodeSwitchoverStart,
  encodeVmdesc,
  readPing,
  StreamFramer,
  type StreamRecord,
} from '../../shared/protocol/stream-codec.js';
import * as B from '../helpers/byte-builder.js';
import { configBody, normalize, sampleStream, vmdescJson } from '../helpers/sample-stream.js';

const cat = (parts: Buffer[]) => Buffer.concat(parts);
const payload = Buffer.from('payload bytes');

t.test('encoders produce exactly the independent builder bytes', async (t) => {
  t.same(encodeStreamHeader(), B.streamHeader());
  t.same(encodeConfiguration(configBody), B.configuration(B.msgpack(configBody)));
  const h = { sectionId: 7, idstr: 'ram', instanceId: 2, versionId: 4 };
  t.same(cat(encodeSectionStart(h, payload)), B.sectionWithHeader(0x01, 7, 'ram', 2, 4, payload));
  t.same(cat(encodeSectionFull(h, payload)), B.sectionWithHeader(0x04, 7, 'ram', 2, 4, payload));
  t.same(cat(encodeSectionPart(7, payload)), B.sectionShort(0x02, 7, payload));
  t.same(cat(encodeSectionEnd(0xffffffff, payload)), B.sectionShort(0x03, 0xffffffff, payload));
  t.same(encodeOpenReturnPath(), B.command(1));
  t.same(encodePing(0xdeadbeef), B.command(2, B.be32(0xdeadbeef)));
  t.same(encodeSwitchoverStart(), B.command(11));
  t.same(encodeEof(), B.eof());
  t.same(encodeVmdesc(vmdescJson), B.vmdesc(JSON.stringify(vmdescJson)));
});

t.test('section encoders gather the payload without copying it', async (t) => {
  const a = Buffer.from('aa');
  const c = Buffer.from('ccc');
  const list = encodeSectionPart(1, [a, c]);
  t.equal(list.length, 4);
  t.equal(list[1], a, 'payload buffers are passed through by reference');
  t.equal(list[2], c);
  t.same(cat(list), B.sectionShort(0x02, 1, Buffer.from('aaccc')));
});

t.test('command payload readers invert the encoders', async (t) => {
  const [ping] = decodeStream(cat([encodeStreamHeader(), encodePing(42)])).slice(1) as Extract<
    StreamRecord,
    { type: 'command' }
  >[];
  t.equal(ping!.command, Command.PING);
  t.equal(readPing(ping!.payload), 42);
});

t.test('a stream of every record kind decodes to the expected records', async (t) => {
  const s = sampleStream();
  t.same(normalize(decodeStream(s.bytes)), s.expected);
});

t.test('every record split at every byte boundary decodes the same', async (t) => {
  const s = sampleStream();
  let checked = 0;
  for (let r = 0; r < s.parts.length; r++) {
    const before = cat(s.parts.slice(0, r));
    const rec = s.parts[r]!;
    for (let cut = 0; cut <= rec.length; cut++) {
      const f = new StreamFramer();
      const out = [...f.feed(cat([before, rec.subarray(0, cut)])), ...f.feed(rec.subarray(cut))];
      if (cut < rec.length && f.buffered > rec.length) t.fail('buffers more than the record');
      const got = normalize(out);
      if (JSON.stringify(got) !== JSON.stringify(s.expected.slice(0, r + 1))) {
        t.fail(`record ${r} split at ${cut}`);
        return;
      }
      checked++;
    }
  }
  t.ok(checked > 100, `${checked} splits decoded identically`);
});

t.test('the whole stream split into two chunks anywhere decodes the same', async (t) => {
  const s = sampleStream();
  for (let cut = 0; cut <= s.bytes.length; cut++) {
    const f = new StreamFramer();
    const out = [...f.feed(s.bytes.subarray(0, cut)), ...f.feed(s.bytes.subarray(cut))];
    f.end();
    if (JSON.stringify(normalize(out)) !== JSON.stringify(s.expected)) {
      t.fail(`split at ${cut}`);
      return;
    }
  }
  t.pass(`${s.bytes.length + 1} splits`);
});

t.test('byte-at-a-time feeding yields each record on its last byte', async (t) => {
  const s = sampleStream();
  const f = new StreamFramer();
  const ends: number[] = [];
  const out: StreamRecord[] = [];
  for (let i = 0; i < s.bytes.length; i++) {
    const got = f.feed(s.bytes.subarray(i, i + 1));
    if (got.length > 0) ends.push(i + 1);
    out.push(...got);
  }
  f.end();
  t.same(normalize(out), s.expected);
  let total = 0;
  t.same(
    ends,
    s.parts.map((p) => {
      total += p.length;
      return total;
    }),
  );
});

t.test('payloads returned early still hold their bytes after later feeds', async (t) => {
  const s = sampleStream();
  const f = new StreamFramer();
  const bytes = Buffer.from(s.bytes);
  const out: StreamRecord[] = [];
  for (let i = 0; i < bytes.length; i += 7) out.push(...f.feed(bytes.subarray(i, i + 7)));
  t.same(normalize(out), s.expected);
});

t.test('a large section fed in 64 KiB chunks is framed in linear time', async (t) => {
  const size = 32 * 1024 * 1024;
  const body = Buffer.alloc(size, 0xab);
  const bytes = cat([encodeStreamHeader(), ...encodeSectionPart(3, body)]);
  const f = new StreamFramer();
  const started = performance.now();
  const out: StreamRecord[] = [];
  for (let i = 0; i < bytes.length; i += 65536) out.push(...f.feed(bytes.subarray(i, i + 65536)));
  const ms = performance.now() - started;
  t.equal(out.length, 2);
  const part = out[1] as Extract<StreamRecord, { type: 'part' | 'end' }>;
  t.equal(part.payload.length, size);
  t.equal(part.payload.parts.length, 513, 'the payload is the views of the chunks it arrived in, not a copy');
  t.ok(part.payload.bytes().equals(body));
  t.ok(ms < 2000, `framed 32 MiB in ${ms.toFixed(0)} ms`);
  t.equal(f.buffered, 0);
});

t.test('encodeCommand checks the command table too', async (t) => {
  t.throws(() => encodeCommand(Command.PING, Buffer.alloc(3)), { code: 'MIG_ERR_BAD_LENGTH' });
  t.throws(() => encodeCommand(Command.INVALID), { code: 'MIG_ERR_UNKNOWN_COMMAND' });
  t.throws(() => encodeSectionStart({ sectionId: 1, idstr: '', instanceId: 0, versionId: 1 }, payload), {
    code: 'MIG_ERR_MALFORMED',
  });
  t.throws(() => encodeSectionPart(-1, payload), { code: 'MIG_ERR_MALFORMED' });
});
