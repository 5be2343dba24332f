/**
 * Destination page worker: connects to one source page port and reads batches straight into guest
 * RAM (`onread` with a caller-supplied buffer: the decoder, shared/protocol/page-batch.ts, says where
 * the next bytes belong), then verifies each batch in place (shared/ram/page-batch-verifier.ts). The
 * guest is not running yet, so bytes landing before verification are harmless. A ROUND_END is
 * reported once everything before it on this channel is placed and verified.
 */
import net from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';
import { asMigrationError, ErrorCode, MigrationError, SocketError } from '../../shared/errors.js';
import { ChannelKind } from '../../shared/protocol/constants.js';
import { encodeHello } from '../../shared/protocol/hello.js';
import { PageChannelDecoder, type PageChannelEvent } from '../../shared/protocol/page-batch.js';
import { loadNativeHash } from '../../shared/ram/native-hash.js';
import { PageBatchVerifier } from '../../shared/ram/page-batch-verifier.js';
import type { PageWorkerCommand, PageWorkerEvent, PageWorkerShared } from '../../shared/ram/page-channel.js';
import { channelTag } from '../../shared/tls/binding.js';
import { secureServer } from '../../shared/tls/secure.js';

interface DestWorkerData extends PageWorkerShared {
  received: SharedArrayBuffer;
  verified: SharedArrayBuffer;
}

const cfg = workerData as DestWorkerData;
const ram = new Uint8Array(cfg.ram);
const verified = new Int32Array(cfg.verified);
const post = (e: PageWorkerEvent) => parentPort!.postMessage(e);
const decoder = new PageChannelDecoder(ram, cfg.pageSize);
const verifier = new PageBatchVerifier(
  {
    ram,
    pageSize: cfg.pageSize,
    checksums: new BigUint64Array(cfg.checksums),
    received: new Uint8Array(cfg.received),
  },
  loadNativeHash(cfg.nativeHash),
);
let pagesThisRound = 0;
let tornThisRound = 0;
let failed = false;
let closing = false;
let current: net.Socket | null = null;
/**
 * Fault injection for tests: SWITCHOVER_TEST_CHANNEL_DELAY=INDEX:MS makes page channel INDEX pause
 * MS after every batch, so its data lands late, the way a congested path would deliver it; `*:MS`
 * slows every channel, after each round's end too (the main channel then runs ahead of all of them,
 * even when a round has one batch per channel).
 */
const [slowSpec, slowDelay] = (process.env.SWITCHOVER_TEST_CHANNEL_DELAY ?? '-1:0').split(':');
const slowAll = slowSpec === '*';
const slowIndex = slowAll ? cfg.index : Number(slowSpec);
const slowMs = Number(slowDelay);

function onEvent(e: PageChannelEvent): void {
  if (e.kind === 'round-end') {
    post({ type: 'round-done', round: e.round, pages: pagesThisRound, torn: tornThisRound });
    pagesThisRound = 0;
    tornThisRound = 0;
    // `*` mode: the next round's first batch waits too, so even a one-batch last round lands late
    if (slowAll) pauseChannel();
    return;
  }
  const torn = verifier.verify(e.descriptors, e.count);
  Atomics.add(verified, cfg.index, e.count - torn);
  pagesThisRound += e.count;
  tornThisRound += torn;
  if (cfg.index === slowIndex) pauseChannel();
}

function pauseChannel(): void {
  if (slowMs <= 0 || !current) return;
  const s = current;
  s.pause();
  setTimeout(() => s.resume(), slowMs);
}

function fail(err: unknown): void {
  if (failed || closing) return;
  failed = true;
  const e = asMigrationError(err, ErrorCode.SOCKET);
  post({ type: 'error', code: e.code, message: `page channel ${cfg.index}: ${e.message}`, page: e.page });
  current?.destroy();
}

/** Plaintext: read straight into guest RAM (`onread`); the hello's tag binds the channel to K. */
function connectPlain(host: string, port: number, from: string): void {
  const socket = net.connect({
    host,
    port,
    localAddress: from || undefined,
    noDelay: true,
    onread: {
      buffer: () => decoder.target(),
      callback: (n: number) => {
        try {
          const e = decoder.advance(n);
          if (e) onEvent(e);
        } catch (err) {
          fail(err);
          return false;
        }
        return true;
      },
    },
  });
  socket.on('connect', () => {
    sendHello(socket);
    post({ type: 'connected' });
  });
  own(socket);
}

/**
 * TLS: this side is the TLS server on the connection it opened. A TLS socket cannot read into a
 * caller's buffer, so decrypted chunks are copied through the decoder (one copy more).
 */
function connectTls(host: string, port: number, from: string): void {
  const raw = net.connect({ host, port, localAddress: from || undefined, noDelay: true });
  raw.on('error', fail);
  raw.once('connect', async () => {
    try {
      const s = await secureServer(raw, cfg.security.tls!, 5000);
      own(s);
      s.on('data', (chunk: Buffer) => {
        try {
          decoder.feed(chunk, onEvent);
        } catch (err) {
          fail(err);
        }
      });
      sendHello(s);
      post({ type: 'connected' });
    } catch (err) {
      fail(err);
      raw.destroy();
    }
  });
}

function sendHello(s: net.Socket): void {
  const fields = { kind: ChannelKind.PAGE, index: cfg.index, migrationId: Buffer.from(cfg.migrationId) };
  s.write(encodeHello({ ...fields, authTag: channelTag(cfg.security.key, fields, s) }));
}

function own(socket: net.Socket): void {
  current = socket;
  socket.setKeepAlive(true, 1000);
  socket.on('error', fail);
  socket.on('close', () =>
    fail(
      decoder.atFrameBoundary
        ? new SocketError(ErrorCode.PEER_CLOSED, 'closed by the source')
        : new MigrationError(ErrorCode.TRUNCATED, 'closed by the source inside a frame'),
    ),
  );
}

/**
 * Fault injection for tests: SWITCHOVER_TEST_PAGE_CONNECT_DELAY_MS=MS connects MS late, so strangers
 * can reach the source's page ports first (test/integration/page-port-strangers.test.ts).
 */
const connectDelay = Number(process.env.SWITCHOVER_TEST_PAGE_CONNECT_DELAY_MS ?? 0);
let connecting = false;

parentPort!.on('message', (m: PageWorkerCommand) => {
  if (m.type === 'connect' && !connecting) {
    connecting = true;
    // an IPv4 connection accepted on a dual-stack socket reports ::ffff:a.b.c.d as its address
    const from = net.isIPv4(m.host) ? m.from.replace(/^::ffff:/i, '') : m.from;
    const connect = () => (cfg.security.tls ? connectTls : connectPlain)(m.host, m.port, from);
    if (connectDelay > 0) setTimeout(connect, connectDelay);
    else connect();
  }
  if (m.type === 'close') {
    closing = true;
    current?.destroy();
    parentPort!.close();
  }
});
