/**
 * The source's side of accepting one page channel (used inside a page worker). The port is announced
 * on the main channel, so anybody who can reach it may try it: every connection that is not the
 * destination's page channel for this index is dropped and reported as a stranger, and the migration
 * goes on. Only a channel that never arrives is a failure (the main thread's deadline).
 *
 * A connection is the channel when, within HELLO_DEADLINE_MS of accepting it: it comes from the main
 * connection's peer address, it completes TLS (the source is the TLS client here, whoever opened the
 * TCP connection), and its hello names this migration and index with a tag bound to the migration
 * key (shared/tls/binding.ts). At most MAX_PENDING strangers are worked on at once; more are dropped
 * on arrival.
 */
import type net from 'node:net';
import { MigrationError } from '../../shared/errors.js';
import type { ChannelSecurity } from '../../shared/handlers.js';
import { ChannelKind, HELLO_LENGTH } from '../../shared/protocol/constants.js';
import { decodeHello } from '../../shared/protocol/hello.js';
import { readExact } from '../../shared/socket-io.js';
import { ChannelBinding } from '../../shared/tls/binding.js';
import { secureClient, TlsError } from '../../shared/tls/secure.js';

export const HELLO_DEADLINE_MS = 5000;
export const MAX_PENDING = 8;

export interface PagePortOptions {
  index: number;
  migrationId: Buffer;
  security: ChannelSecurity;
  /** The destination's address on the main connection; null accepts any address (tests). */
  peerAddress: string | null;
  onChannel(socket: net.Socket): void;
  onStranger(remote: string, reason: string): void;
}

/** Loopback and IPv4-mapped forms compare equal ("::ffff:127.0.0.1" is "127.0.0.1"). */
export function sameAddress(a: string | undefined, b: string): boolean {
  const norm = (x: string) => x.replace(/^::ffff:/i, '').toLowerCase();
  return a !== undefined && norm(a) === norm(b);
}

export class PagePort {
  #pending = 0;
  #taken = false;

  constructor(private readonly o: PagePortOptions) {}

  get taken(): boolean {
    return this.#taken;
  }

  /** Handles one accepted connection (the server was created with pauseOnConnect). */
  async accept(raw: net.Socket): Promise<void> {
    const remote = `${raw.remoteAddress}:${raw.remotePort}`;
    raw.on('error', () => {});
    if (this.#taken) return void raw.destroy();
    if (this.o.peerAddress !== null && !sameAddress(raw.remoteAddress, this.o.peerAddress)) {
      raw.destroy();
      return this.o.onStranger(remote, `not the destination's address (${this.o.peerAddress})`);
    }
    if (this.#pending >= MAX_PENDING) {
      raw.destroy();
      return this.o.onStranger(remote, `more than ${MAX_PENDING} connections waiting for their hello`);
    }
    this.#pending++;
    let socket: net.Socket = raw;
    try {
      socket = await this.#authenticate(raw, remote);
      if (this.#taken) throw new Error('the channel is already connected');
      this.#taken = true;
      this.o.onChannel(socket);
    } catch (err) {
      socket.destroy();
      raw.destroy();
      this.o.onStranger(remote, reasonOf(err));
    } finally {
      this.#pending--;
    }
  }

  async #authenticate(raw: net.Socket, remote: string): Promise<net.Socket> {
    const { security, index, migrationId } = this.o;
    const deadline = Date.now() + HELLO_DEADLINE_MS;
    const left = () => Math.max(1, deadline - Date.now());
    const socket = security.tls
      ? await secureClient({ socket: raw }, security.tls, {
          host: security.host ?? remote,
          timeoutMs: left(),
          what: `page port ${index}`,
        })
      : raw;
    const hello = decodeHello(await readExact(socket, HELLO_LENGTH, left(), `page channel ${index} hello`), {
      kind: ChannelKind.PAGE,
      migrationId,
    });
    if (hello.index !== index)
      throw new Error(`hello names page channel ${hello.index}, this port is ${index}`);
    if (!ChannelBinding.verify(security.key, socket, hello))
      throw new Error('hello carries a wrong auth tag');
    return socket;
  }
}

/** One line saying why a connection was not the channel (never "the destination answered ..."). */
function reasonOf(err: unknown): string {
  if (err instanceof TlsError) {
    const code = (err.cause as { code?: string } | undefined)?.code;
    return err.code === 'MIG_ERR_TIMEOUT'
      ? 'no TLS handshake in time'
      : `TLS handshake failed${code ? ` (${code})` : ''}`;
  }
  if (err instanceof MigrationError) return `${err.code}: ${err.message}`;
  return (err as Error)?.message ?? String(err);
}
