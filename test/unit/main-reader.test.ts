/**
 * The destination's main-channel reader over a real loopback connection: every byte arrives once, in
 * order, and a chunk's bytes stay intact until the consumer releases them, while later reads wrap
 * around the 32 MiB ring or, when it is full, go to fresh memory. A consumer that holds 40 MiB
 * unreleased (a big device section) must not see any of it overwritten.
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import t, { type Test } from 'tap';
import { openMainReader } from '../../destination/main-reader.js';
import { loadNativeHash, prepareNativeHash } from '../../shared/ram/native-hash.js';

const TOTAL = 112 << 20;

/** Deterministic stream bytes: byte i is a function of i, so any chunk can be checked on its own. */
function expected(offset: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) {
    const x = offset + i;
    b[i] = (x ^ (x >>> 8) ^ (x >>> 16) ^ (x >>> 24)) & 0xff;
  }
  return b;
}

async function connectedPair(t: Test) {
  let accepted!: (s: net.Socket) => void;
  const got = new Promise<net.Socket>((r) => {
    accepted = r;
  });
  const server = net.createServer({ pauseOnConnect: true }, (s) => accepted(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  t.teardown(() => {
    client.destroy();
    server.close();
  });
  return { client, server: await got };
}

async function send(client: net.Socket): Promise<void> {
  for (let at = 0; at < TOTAL; at += 1 << 20) {
    if (!client.write(expected(at, 1 << 20))) await new Promise((r) => client.once('drain', r));
  }
  client.end();
}

t.test('ring reader: in order, intact until released, through wraps and a 40 MiB hold', async (t) => {
  t.setTimeout(60_000);
  if (!loadNativeHash(prepareNativeHash())) {
    t.comment('no addon: the destination reads Node chunks instead (nothing to reuse)');
    return;
  }
  const { client, server } = await connectedPair(t);
  const reader = openMainReader(server);
  t.equal(reader.transient, true, 'the ring reader is in use');
  t.teardown(() => reader.socket.destroy());
  const sending = send(client);
  const held: { at: number; chunk: Buffer; sum: string }[] = [];
  let offset = 0;
  let bad = 0;
  const digest = (b: Buffer) => createHash('sha1').update(b).digest('hex');
  for (let c = await reader.next(); c !== null; c = await reader.next()) {
    if (!c.equals(expected(offset, c.length))) bad++;
    // hold everything between 8 MiB and 48 MiB, as a framer holds a large record; release the rest
    if (offset >= 8 << 20 && offset < 48 << 20) held.push({ at: offset, chunk: c, sum: digest(c) });
    offset += c.length;
    if (offset < 8 << 20 || offset >= 48 << 20) {
      for (const h of held) if (digest(h.chunk) !== h.sum) bad++;
      held.length = 0;
      reader.release(offset);
    }
  }
  await sending;
  t.equal(offset, TOTAL, 'every byte arrived once');
  t.equal(bad, 0, 'no chunk was wrong or overwritten before it was released');
});
