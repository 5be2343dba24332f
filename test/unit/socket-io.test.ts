/**
 * ChannelWriter.flush() must settle when the bytes left Node's buffer, even when the last write was
 * small and accepted under the high-water mark while the kernel send buffer was full: 'drain' only
 * follows a write() that returned false, so waiting for it hung until the peer closed (the chaos
 * suite's split brain: the destination ran the guest, the source failed and resumed it too).
 */
import net from 'node:net';
import t from 'tap';
import { ChannelWriter } from '../../shared/socket-io.js';

t.test('flush settles after a small write queued behind a full kernel buffer', async (t) => {
  t.setTimeout(20_000);
  let peer: net.Socket | null = null;
  const server = net.createServer((s) => {
    peer = s;
    s.pause(); // a slow reader: the writer's kernel buffer fills
    setTimeout(() => s.resume(), 500);
    s.on('data', () => {});
  });
  t.teardown(() => {
    peer?.destroy();
    server.close();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const sock = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  t.teardown(() => sock.destroy());
  await new Promise((r) => sock.once('connect', r));
  const w = new ChannelWriter(sock, 'main');
  const batch = Buffer.alloc(1 << 20);
  for (let i = 0; i < 32; i++) await w.write(batch);
  // tiny writes until one is queued in Node (the kernel buffer is full), like the final EOF record
  while (sock.writableLength === 0) await w.write(Buffer.alloc(1024)); // under the 16 KiB high-water mark
  t.equal(sock.writableNeedDrain, false, 'the queued write did not ask for drain');
  const t0 = Date.now();
  await w.flush();
  t.equal(sock.writableLength, 0, 'everything left Node when flush settled');
  t.ok(Date.now() - t0 < 5000, `flush settled while the peer still reads (${Date.now() - t0} ms)`);
});
