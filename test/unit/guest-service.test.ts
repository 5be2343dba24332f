import { createSocket, type Socket } from 'node:dgram';
import t from 'tap';
import { GuestService } from '../../shared/guest/service.js';

/** Sends one probe and waits up to `ms` for a reply; null when none came. */
function ask(sock: Socket, port: number, seq: bigint, ms = 150): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const onMsg = (msg: Buffer) => {
      if (msg.length >= 8 && msg.readBigUInt64BE(0) !== seq) return;
      clearTimeout(timer);
      sock.off('message', onMsg);
      resolve(msg);
    };
    const timer = setTimeout(() => {
      sock.off('message', onMsg);
      resolve(null);
    }, ms);
    sock.on('message', onMsg);
    const req = Buffer.alloc(8);
    req.writeBigUInt64BE(seq);
    sock.send(req, port, '127.0.0.1');
  });
}

t.test('answers while running, silent while stopped', async (t) => {
  let running = true;
  let tick = 1234.5;
  const svc = new GuestService({ isRunning: () => running, tick: () => tick });
  const addr = await svc.start('127.0.0.1', 0);
  const client = createSocket('udp4');
  t.teardown(async () => {
    client.close();
    await svc.close();
  });
  await new Promise<void>((r) => client.bind(0, '127.0.0.1', r));
  t.equal(addr.host, '127.0.0.1');
  t.ok(addr.port > 0, 'port 0 picks a free port');
  t.same(svc.address(), addr);

  const r1 = await ask(client, addr.port, 0x0102030405060708n);
  t.ok(r1, 'reply while running');
  t.equal(r1!.length, 16);
  t.equal(r1!.readBigUInt64BE(0), 0x0102030405060708n, 'sequence echoed');
  t.equal(r1!.readDoubleBE(8), 1234.5, 'tick as f64 BE');

  running = false;
  t.equal(await ask(client, addr.port, 2n), null, 'no reply while stopped');
  t.equal(await ask(client, addr.port, 3n), null, 'still none');
  t.equal(svc.dropped, 2);

  running = true;
  tick = 99;
  const r4 = await ask(client, addr.port, 4n);
  t.ok(r4, 'answers again after resume');
  t.equal(r4!.readDoubleBE(8), 99);
  t.equal(svc.answered, 2);
});

t.test('longer requests echo only the first 8 bytes; short ones are ignored', async (t) => {
  const svc = new GuestService({ isRunning: () => true, tick: () => 7 });
  const { port } = await svc.start('127.0.0.1', 0);
  const client = createSocket('udp4');
  t.teardown(async () => {
    client.close();
    await svc.close();
  });
  await new Promise<void>((r) => client.bind(0, '127.0.0.1', r));
  const got: Buffer[] = [];
  client.on('message', (m) => got.push(m));
  client.send(Buffer.from([1, 2, 3]), port, '127.0.0.1');
  const long = Buffer.alloc(32, 0xab);
  long.writeBigUInt64BE(5n);
  client.send(long, port, '127.0.0.1');
  const deadline = Date.now() + 500;
  while (got.length < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 30));
  t.equal(got.length, 1, 'only the 32-byte request was answered');
  t.equal(got[0]!.length, 16);
  t.equal(got[0]!.readBigUInt64BE(0), 5n);
});

t.test('start twice, bad port, bind conflict; close is idempotent', async (t) => {
  const a = new GuestService({ isRunning: () => true, tick: () => 0 });
  const { port } = await a.start('127.0.0.1', 0);
  t.teardown(() => a.close());
  await t.rejects(a.start('127.0.0.1', 0), { code: 'MIG_ERR_STATE' });
  const b = new GuestService({ isRunning: () => true, tick: () => 0 });
  await t.rejects(b.start('127.0.0.1', 70000), { code: 'MIG_ERR_PARAMETER' });
  await t.rejects(b.start('127.0.0.1', port), { code: 'MIG_ERR_SOCKET' }, 'port in use');
  await b.close();
  await a.close();
  await a.close();
  t.equal(a.address(), undefined);
});
