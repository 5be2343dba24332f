/**
 * Accepts connections, authenticates them and hands each on by channel kind. A destination serves one
 * migration: the first MAIN hello fixes the migration id and its key K (shared/tls/binding.ts); later
 * MAIN hellos, channels with another id and channels whose auth tag is not bound to K are refused and
 * logged, without disturbing the migration in flight.
 *
 * Per connection, all within one hello deadline (--hello-timeout, default 5 s, a total, not an idle
 * timer: a peer sending a byte a second is cut off): the first byte is peeked — 0x16 is a TLS record —
 * then the TLS handshake when TLS is on, then the 56-byte hello. A plaintext hello at a TLS destination
 * is refused with MIG_ERR_AUTH (in plaintext, so the source can read why); a TLS ClientHello at a
 * plaintext destination with MIG_ERR_BAD_HELLO (the source's TLS stack reports "answered in plaintext").
 * At most MAX_PENDING connections may be between accept and hello at once; more are dropped.
 */
import net from 'node:net';
import type tls from 'node:tls';
import { asMigrationError, ErrorCode, MigrationError } from '../shared/errors.js';
import { ChannelKind, HELLO_LENGTH, HELLO_MAGIC, PROTOCOL_VERSION } from '../shared/protocol/constants.js';
import { decodeHello, type Hello } from '../shared/protocol/hello.js';
import { encodeRp } from '../shared/protocol/return-path-codec.js';
import { readExact } from '../shared/socket-io.js';
import { ChannelBinding } from '../shared/tls/binding.js';
import type { TlsConfig } from '../shared/tls/config.js';
import { describePeer, secureServer, TLS_HANDSHAKE_RECORD, TlsError } from '../shared/tls/secure.js';

export const DEFAULT_HELLO_TIMEOUT_MS = 5000;
/** Connections allowed between accept and a complete hello at the same time. */
export const MAX_PENDING = 32;

export interface ListenerEvents {
  onMain(socket: net.Socket, hello: Hello): void;
  onReturnPath(socket: net.Socket, hello: Hello): void;
  /** A refused connection (bad hello, failed TLS, second migration, wrong id or tag): logged, never fatal. */
  onRefused(err: MigrationError, remote: string): void;
  /** The MAIN channel was accepted: who, and over what (for the log). */
  onAccepted?(hello: Hello, remote: string, transport: string): void;
}

export interface ListenerOptions {
  /** Peek, TLS handshake and hello must all be done within this many ms of accept. */
  helloTimeoutMs?: number;
  /** TLS credentials (server role); plaintext when absent. */
  tls?: TlsConfig | null;
}

export class Listener {
  readonly server: net.Server;
  readonly helloTimeoutMs: number;
  readonly tls: TlsConfig | null;
  #migrationId: Buffer | null = null;
  #key: Buffer | null = null;
  #rpTaken = false;
  #pending = 0;
  #lastDropLog = 0;

  constructor(
    private readonly events: ListenerEvents,
    opts: ListenerOptions | number = {},
  ) {
    const o = typeof opts === 'number' ? { helloTimeoutMs: opts } : opts;
    this.helloTimeoutMs = o.helloTimeoutMs ?? DEFAULT_HELLO_TIMEOUT_MS;
    this.tls = o.tls ?? null;
    this.server = net.createServer({ noDelay: true, pauseOnConnect: true }, (s) => void this.#accept(s));
  }

  /** The migration key K once MAIN is accepted: page channels compute and check their tags with it. */
  get migrationKey(): Buffer | null {
    return this.#key;
  }

  listen(host: string, port: number): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.server.once('error', (err) => reject(asMigrationError(err, ErrorCode.SOCKET)));
      this.server.listen(port, host, () => {
        const a = this.server.address() as net.AddressInfo;
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  close(): void {
    this.server.close();
  }

  async #accept(raw: net.Socket): Promise<void> {
    const remote = `${raw.remoteAddress}:${raw.remotePort}`;
    raw.on('error', () => {}); // errors surface through the channel's owner or the refusal below
    if (this.#pending >= MAX_PENDING) {
      raw.destroy();
      if (Date.now() - this.#lastDropLog > 1000) {
        this.#lastDropLog = Date.now();
        this.events.onRefused(
          refusal(`more than ${MAX_PENDING} connections waiting for their hello`),
          remote,
        );
      }
      return;
    }
    this.#pending++;
    const deadline = Date.now() + this.helloTimeoutMs;
    const left = () => Math.max(1, deadline - Date.now());
    let socket: net.Socket = raw;
    try {
      const first = (await readExact(raw, 1, left(), `first byte from ${remote}`))[0]!;
      raw.unshift(Buffer.of(first));
      if (this.tls) {
        if (first !== TLS_HANDSHAKE_RECORD) throw plaintextAtTls(first, this.tls);
        socket = await secureServer(raw, this.tls, left());
      } else if (first === TLS_HANDSHAKE_RECORD) {
        throw badHello(
          'a TLS ClientHello arrived but this destination has no TLS: start it with the same --tls-creds/--tls-psk as the source, or the source without',
        );
      }
      const hello = decodeHello(await this.#readHello(socket, left(), remote));
      this.#route(socket, hello, remote);
    } catch (err) {
      const e = asMigrationError(err, ErrorCode.BAD_HELLO);
      this.events.onRefused(e, remote);
      if (err instanceof TlsError && err.socket) refuse(err.socket, e);
      else if (err instanceof TlsError) raw.destroy();
      else refuse(socket, e);
    } finally {
      this.#pending--;
    }
  }

  async #readHello(socket: net.Socket, timeoutMs: number, remote: string): Promise<Buffer> {
    try {
      return await readExact(socket, HELLO_LENGTH, timeoutMs, `hello from ${remote}`);
    } catch (err) {
      const e = asMigrationError(err);
      if (this.tls && e.code === ErrorCode.PEER_CLOSED && /after 0 bytes/.test(e.message)) {
        throw new MigrationError(
          ErrorCode.AUTH,
          `${remote} closed the TLS connection without a hello: did the source reject this destination's certificate? (check its ca-cert.pem and --tls-hostname)`,
        );
      }
      throw e;
    }
  }

  #route(socket: net.Socket, hello: Hello, remote: string): void {
    if (hello.kind === ChannelKind.MAIN) {
      if (this.#migrationId) throw refusal('a migration is already in progress or done on this destination');
      const key = ChannelBinding.acceptMain(socket, hello);
      if (!key) throw auth('main hello auth tag is not bound to its TLS session (relayed or forged hello)');
      this.#migrationId = hello.migrationId;
      this.#key = key;
      socket.setKeepAlive(true, 1000);
      // protocol 2: the source waits for this before it sends anything of its guest
      socket.write(encodeRp({ type: 'accept', version: PROTOCOL_VERSION }));
      this.events.onAccepted?.(hello, remote, this.tls ? describePeer(socket as tls.TLSSocket) : 'plaintext');
      this.events.onMain(socket, hello);
      return;
    }
    if (hello.kind === ChannelKind.RETURN_PATH) {
      if (!this.#migrationId || !hello.migrationId.equals(this.#migrationId))
        throw refusal('return path for an unknown migration');
      if (!ChannelBinding.verify(this.#key!, socket, hello))
        throw auth(
          "return path hello is not bound to this migration's main channel (auth tag mismatch: forged or replayed)",
        );
      if (this.#rpTaken) throw refusal('return path already open');
      this.#rpTaken = true;
      socket.setKeepAlive(true, 1000);
      this.events.onReturnPath(socket, hello);
      return;
    }
    throw refusal(`channel kind ${hello.kind} is not accepted here`);
  }
}

function plaintextAtTls(first: number, cfg: TlsConfig): MigrationError {
  const what =
    first === HELLO_MAGIC >>> 24
      ? 'a plaintext hello'
      : `plaintext (first byte 0x${first.toString(16).padStart(2, '0')})`;
  const flag = cfg.kind === 'psk' ? '--tls-psk FILE' : '--tls-creds DIR';
  return auth(`this destination requires TLS but the peer sent ${what}: start the source with ${flag} too`);
}

function refusal(message: string): MigrationError {
  return new MigrationError(ErrorCode.REFUSED, message);
}

function auth(message: string): MigrationError {
  return new MigrationError(ErrorCode.AUTH, message);
}

function badHello(message: string): MigrationError {
  return new MigrationError(ErrorCode.BAD_HELLO, message);
}

/** Tells the peer why (one ERROR frame) and closes. */
export function refuse(socket: net.Socket, err: MigrationError): void {
  if (socket.destroyed) return;
  socket.end(encodeRp({ type: 'error', code: err.code, message: err.message }));
  setTimeout(() => socket.destroy(), 1000).unref();
}
