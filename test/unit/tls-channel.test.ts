/**
 * The destination's Listener and the source's connectChannel in one process, over loopback: TLS (PSK
 * and x509), the channel binding of the hello's auth tag (forged, foreign and replayed hellos refused
 * without disturbing the real channels), plaintext/TLS mix-ups recognised on both sides, and the
 * hello deadline as a total (a peer trickling bytes is cut off).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { Listener, type ListenerOptions, MAX_PENDING } from '../../destination/listener.js';
import type { MigrationError } from '../../shared/errors.js';
import { ChannelKind } from '../../shared/protocol/constants.js';
import { encodeHello } from '../../shared/protocol/hello.js';
import { RpFramer, type RpMessage } from '../../shared/protocol/return-path-codec.js';
import type { ChannelWriter } from '../../shared/socket-io.js';
import { ChannelBinding, channelTag } from '../../shared/tls/binding.js';
import { loadTlsConfig, type TlsConfig, type X509Config } from '../../shared/tls/config.js';
import { generatePsk, generateX509, haveOpenssl } from '../../shared/tls/generate.js';
import { secureClient } from '../../shared/tls/secure.js';
import { bindingFor, type ConnectOptions, connectChannel } from '../../source/channel.js';

const root = await mkdtemp(join(tmpdir(), 'swov-tlsch-'));
t.teardown(() => rm(root, { recursive: true, force: true }));
const pskFile = await generatePsk(join(root, 'keys.psk'));
const psk = loadTlsConfig({ tlsPsk: pskFile }, 'client')!;

interface Started {
  listener: Listener;
  port: number;
  mains: net.Socket[];
  rps: net.Socket[];
  refused: MigrationError[];
}

async function listen(t: Test, opts: ListenerOptions): Promise<Started> {
  const s: Omit<Started, 'listener' | 'port'> = { mains: [], rps: [], refused: [] };
  const listener = new Listener(
    {
      onMain: (sock) => s.mains.push(sock),
      onReturnPath: (sock) => s.rps.push(sock),
      onRefused: (e) => s.refused.push(e),
    },
    opts,
  );
  const { port } = await listener.listen('127.0.0.1', 0);
  t.teardown(() => {
    listener.close();
    for (const x of [...s.mains, ...s.rps]) x.destroy();
  });
  return { ...s, listener, port };
}

function conn(port: number, tls: TlsConfig | null, extra: Partial<ConnectOptions> = {}): ConnectOptions {
  return { host: '127.0.0.1', port, migrationId: randomBytes(16), connectTimeoutMs: 3000, tls, ...extra };
}

async function until(pred: () => boolean, ms = 3000): Promise<boolean> {
  const end = Date.now() + ms;
  while (!pred() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  return pred();
}

/** Every RP frame the peer sends back until it closes (a refusal is one ERROR frame). */
function replies(socket: net.Socket): Promise<RpMessage[]> {
  const framer = new RpFramer();
  const out: RpMessage[] = [];
  return new Promise((resolve) => {
    socket.on('data', (d: Buffer) => {
      try {
        out.push(...framer.feed(d));
      } catch {}
    });
    socket.on('error', () => {});
    socket.on('close', () => resolve(out));
  });
}

const errorOf = (m: RpMessage[]) =>
  m.find((x) => x.type === 'error') as { code: string; message: string } | undefined;

async function rawTls(port: number, cfg: TlsConfig): Promise<net.Socket> {
  return secureClient({ host: '127.0.0.1', port }, cfg, { host: '127.0.0.1', timeoutMs: 3000 });
}

t.test(
  'PSK: main and return path bound to one key; forged, foreign and replayed hellos refused',
  async (t) => {
    const d = await listen(t, { tls: loadTlsConfig({ tlsPsk: pskFile }, 'server') });
    const c = conn(d.port, psk);
    const main = await connectChannel(c, ChannelKind.MAIN, 'main');
    t.ok(await until(() => d.mains.length === 1), 'main accepted');
    t.same(d.listener.migrationKey, bindingFor(c).key, 'both ends hold the same migration key K');

    // an insider with the PSK but not the main session: right migration id, its own key
    const forged = conn(d.port, psk, { migrationId: c.migrationId, binding: new ChannelBinding() });
    forged.binding!.key = randomBytes(32);
    const w1 = await connectChannel(forged, ChannelKind.RETURN_PATH, 'rp');
    t.match(errorOf(await replies(w1.socket))?.code, 'MIG_ERR_AUTH', 'forged tag: MIG_ERR_AUTH to the peer');
    const foreign = conn(d.port, psk, { binding: forged.binding });
    const w2 = await connectChannel(foreign, ChannelKind.RETURN_PATH, 'rp');
    t.match(errorOf(await replies(w2.socket))?.message, /unknown migration/, 'other migration id: refused');

    const rp = await connectChannel(c, ChannelKind.RETURN_PATH, 'return-path');
    t.ok(await until(() => d.rps.length === 1), 'the real return path is still accepted after the intruders');

    // replay the real return path's exact hello bytes on a new TLS session (the tag binds E_rp)
    const fields = { kind: ChannelKind.RETURN_PATH, migrationId: c.migrationId };
    const realHello = encodeHello({ ...fields, authTag: channelTag(bindingFor(c).key!, fields, rp.socket) });
    const replay = await rawTls(d.port, psk);
    const got = replies(replay);
    replay.write(realHello);
    const e = errorOf(await got);
    t.equal(e?.code, 'MIG_ERR_AUTH', 'replayed hello: MIG_ERR_AUTH');
    t.match(e?.message, /not bound to this migration's main channel/);

    await t.rejects(
      connectChannel(conn(d.port, psk), ChannelKind.MAIN, 'main'),
      { code: 'MIG_ERR_REFUSED', message: /refused the migration: MIG_ERR_REFUSED: .*already in progress/ },
      'a second MAIN: refused, and connectChannel says so (protocol 2: the refusal answers the hello)',
    );
    t.same(
      d.refused.map((x) => x.code),
      ['MIG_ERR_AUTH', 'MIG_ERR_REFUSED', 'MIG_ERR_AUTH', 'MIG_ERR_REFUSED'],
      'each intruder logged once',
    );
    t.equal(d.mains.length + d.rps.length, 2, 'exactly the real channels were handed on');
    t.notOk(main.socket.destroyed || rp.socket.destroyed, 'the real channels are untouched');
    // the real channels carry data both ways
    const echoed = new Promise<Buffer>((r) => d.mains[0]!.once('data', r));
    d.mains[0]!.resume();
    await main.write(Buffer.from('ping'));
    t.equal((await echoed).toString(), 'ping');
    const back = new Promise<Buffer>((r) => rp.socket.once('data', r));
    d.rps[0]!.write('pong');
    t.equal((await back).toString(), 'pong');
  },
);

t.test(
  'peers that reset after their refusal, or mid-handshake, do not take the destination down',
  async (t) => {
    const d = await listen(t, { tls: loadTlsConfig({ tlsPsk: pskFile }, 'server') });
    for (let i = 0; i < 5; i++) {
      const tcp = net.connect({ host: '127.0.0.1', port: d.port }).on('error', () => {});
      await new Promise((r) => tcp.once('connect', r));
      const s = await secureClient({ socket: tcp }, psk, { host: '127.0.0.1', timeoutMs: 3000 });
      s.write(encodeHello({ kind: ChannelKind.RETURN_PATH, migrationId: randomBytes(16) }));
      await until(() => d.refused.length > 2 * i, 1000);
      tcp.resetAndDestroy(); // RST while the destination is still writing its refusal
      const raw = net.connect({ host: '127.0.0.1', port: d.port }).on('error', () => {});
      raw.write(Buffer.from([0x16, 0x03, 0x01]));
      await until(() => false, 30);
      raw.resetAndDestroy();
      await until(() => d.refused.length >= 2 * (i + 1), 1000);
    }
    await until(() => false, 200);
    const c = conn(d.port, psk);
    await connectChannel(c, ChannelKind.MAIN, 'main');
    await connectChannel(c, ChannelKind.RETURN_PATH, 'return-path');
    t.ok(await until(() => d.rps.length === 1), 'the destination still serves the real migration');
    t.equal(d.refused.length, 10, 'ten refusals logged');
  },
);

t.test('plaintext: the RP hello carries HMAC(K) where K came in the main hello', async (t) => {
  const d = await listen(t, {});
  const c = conn(d.port, null);
  await connectChannel(c, ChannelKind.MAIN, 'main');
  t.ok(await until(() => d.mains.length === 1));
  const zero = net.connect({ host: '127.0.0.1', port: d.port });
  const got = replies(zero);
  zero.write(encodeHello({ kind: ChannelKind.RETURN_PATH, migrationId: c.migrationId }));
  t.equal(errorOf(await got)?.code, 'MIG_ERR_AUTH', 'right id, zero tag: MIG_ERR_AUTH');
  await connectChannel(c, ChannelKind.RETURN_PATH, 'return-path');
  t.ok(await until(() => d.rps.length === 1), 'HMAC(K, fields) accepted');
});

t.test(
  'mix-ups: plaintext to a TLS destination, TLS to a plaintext one — refused with a reason on both sides',
  async (t) => {
    const tlsDst = await listen(t, { tls: loadTlsConfig({ tlsPsk: pskFile }, 'server') });
    await t.rejects(
      connectChannel(conn(tlsDst.port, null), ChannelKind.MAIN, 'main'),
      {
        code: 'MIG_ERR_AUTH',
        message: /requires TLS but the peer sent a plaintext hello: start the source with --tls-psk/,
      },
      'the plaintext source reads MIG_ERR_AUTH',
    );
    t.equal(tlsDst.refused[0]?.code, 'MIG_ERR_AUTH', 'and the destination logs it');

    const plainDst = await listen(t, {});
    await t.rejects(connectChannel(conn(plainDst.port, psk), ChannelKind.MAIN, 'main'), {
      code: 'MIG_ERR_AUTH',
      message: /no TLS on the other side: the destination answered in plaintext/,
    });
    t.ok(await until(() => plainDst.refused.length === 1));
    t.equal(plainDst.refused[0]?.code, 'MIG_ERR_BAD_HELLO');
    t.match(plainDst.refused[0]?.message, /TLS ClientHello arrived but this destination has no TLS/);
    t.equal(tlsDst.mains.length + plainDst.mains.length, 0, 'nothing handed on');
  },
);

t.test('hello deadline is a total: silent and byte-a-tick peers are cut off at it', async (t) => {
  const HELLO_MS = 800;
  const cases: [string, ListenerOptions, Buffer][] = [
    ['plaintext, silent', {}, Buffer.alloc(0)],
    ['plaintext, a byte every 100 ms', {}, encodeHello({ kind: 1, migrationId: randomBytes(16) })],
    [
      'TLS, a ClientHello byte every 100 ms',
      { tls: loadTlsConfig({ tlsPsk: pskFile }, 'server') },
      tlsTrickle(),
    ],
  ];
  for (const [name, opts, bytes] of cases) {
    const d = await listen(t, { ...opts, helloTimeoutMs: HELLO_MS });
    const s = net.connect({ host: '127.0.0.1', port: d.port });
    s.on('error', () => {});
    s.resume(); // read the refusal, so 'end' and 'close' follow
    const started = Date.now();
    let i = 0;
    const tick = () => {
      if (i < bytes.length && !s.destroyed) s.write(bytes.subarray(i, ++i));
    };
    tick();
    const timer = setInterval(tick, 100);
    await new Promise((r) => s.once('close', r));
    clearInterval(timer);
    const took = Date.now() - started;
    t.ok(took >= HELLO_MS - 50 && took < HELLO_MS + 400, `${name}: closed after ${took} ms`);
    t.equal(d.refused[0]?.code, 'MIG_ERR_TIMEOUT', `${name}: refused with MIG_ERR_TIMEOUT`);
  }
});

/** The start of a TLS ClientHello record (what a real client sends first), padded. */
function tlsTrickle(): Buffer {
  return Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x01, 0x00, 0x01]), Buffer.alloc(60, 0)]);
}

t.test(`at most ${MAX_PENDING} connections wait for their hello at once`, async (t) => {
  const d = await listen(t, { helloTimeoutMs: 3000 });
  const idle: net.Socket[] = [];
  for (let i = 0; i < MAX_PENDING; i++)
    idle.push(net.connect({ host: '127.0.0.1', port: d.port }).on('error', () => {}));
  await until(() => false, 200);
  const extra = net.connect({ host: '127.0.0.1', port: d.port }).on('error', () => {});
  const closed = await new Promise<boolean>((r) => {
    extra.once('close', () => r(true));
    setTimeout(() => r(false), 1000);
  });
  t.ok(closed, 'the one over the cap is dropped at once');
  t.match(d.refused[0]?.message, /more than 32 connections waiting/);
  t.ok(
    idle.every((s) => !s.destroyed),
    'the others still wait',
  );
  for (const s of idle) s.destroy();
});

t.test('x509: verify-peer with client certificates; missing client cert and unknown CA named', async (t) => {
  if (!(await haveOpenssl())) {
    t.comment('no openssl command: skipped');
    return;
  }
  const good = await generateX509(join(root, 'good'));
  const other = await generateX509(join(root, 'other'), { caName: 'another CA' });
  const srcOnlyCa = await generateX509(join(root, 'noclient'), { client: false });
  const d = await listen(t, { tls: loadTlsConfig({ tlsCreds: good }, 'server') });
  const c = conn(d.port, loadTlsConfig({ tlsCreds: good }, 'client'));
  await connectChannel(c, ChannelKind.MAIN, 'main');
  await connectChannel(c, ChannelKind.RETURN_PATH, 'return-path');
  t.ok(await until(() => d.rps.length === 1), 'main and return path over x509 with client certificates');

  const d2 = await listen(t, { tls: loadTlsConfig({ tlsCreds: good }, 'server') });
  const noCert = loadTlsConfig({ tlsCreds: srcOnlyCa }, 'client')!;
  // this source trusts another CA for the server: give it the right one, but no client certificate
  const goodCa = (loadTlsConfig({ tlsCreds: good }, 'client') as X509Config).ca;
  await t.rejects(
    connectChannel(conn(d2.port, { ...(noCert as X509Config), ca: goodCa }), ChannelKind.MAIN, 'main'),
    { code: 'MIG_ERR_AUTH', message: /presented no client certificate/ },
    'no client cert: told why',
  );
  await t.rejects(
    connectChannel(conn(d2.port, loadTlsConfig({ tlsCreds: other }, 'client')), ChannelKind.MAIN, 'main'),
    { code: 'MIG_ERR_AUTH', message: /destination's certificate: unknown CA/ },
    'a source trusting another CA names it',
  );
  await t.rejects(
    connectChannel(
      conn(d2.port, {
        ...(loadTlsConfig({ tlsCreds: good }, 'client') as TlsConfig),
        hostname: 'example.org',
      } as TlsConfig),
      ChannelKind.MAIN,
      'main',
    ),
    { code: 'MIG_ERR_AUTH', message: /not for this host/ },
    'tls-hostname mismatch',
  );
});

t.test(
  'secureClient({host, port, onread}) reads into the caller buffer (tls.connect-created sockets only)',
  async (t) => {
    const d = await listen(t, { tls: loadTlsConfig({ tlsPsk: pskFile }, 'server') });
    const c = conn(d.port, psk);
    await connectChannel(c, ChannelKind.MAIN, 'main');
    await until(() => d.mains.length === 1);
    // a second connection whose bogus hello is refused: the ERROR frame arrives through onread
    const buf = Buffer.alloc(64);
    let n = 0;
    const got = new Promise<void>((resolve) => {
      void secureClient(
        {
          host: '127.0.0.1',
          port: d.port,
          onread: {
            buffer: buf,
            callback: (k: number) => {
              n += k;
              if (n > 0) resolve();
              return true;
            },
          },
        },
        psk,
        { host: '127.0.0.1', timeoutMs: 3000 },
      ).then((s: ChannelWriter['socket']) => s.write(Buffer.alloc(56, 0x53)));
    });
    await got;
    t.ok(n > 0 && buf.includes('MIG_ERR'), 'the refusal frame arrived through onread into our buffer');
  },
);
