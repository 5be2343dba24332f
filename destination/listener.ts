/**
 * Accepts connections, reads each one's hello within a deadline and hands it on by channel kind.
 * A destination serves one migration: the first MAIN hello fixes the migration id; later MAIN hellos
 * and channels with another id are refused and logged, without disturbing the migration in flight.
 */
import net from 'node:net';
import { asMigrationError, ErrorCode, type MigrationError } from '../shared/errors.js';
import { ChannelKind, HELLO_LENGTH } from '../shared/protocol/constants.js';
import { decodeHello, type Hello } from '../shared/protocol/hello.js';
import { encodeRp } from '../shared/protocol/return-path-codec.js';
import { readExact } from '../shared/socket-io.js';

export interface ListenerEvents {
  onMain(socket: net.Socket, hello: Hello): void;
  onReturnPath(socket: net.Socket, hello: Hello): void;
  /** A refused connection (bad hello, second migration, wrong id): logged, never fatal. */
  onRefused(err: MigrationError, remote: string): void;
}

export class Listener {
  readonly server: net.Server;
  #migrationId: Buffer | null = null;
  #rpTaken = false;

  constructor(
    private readonly events: ListenerEvents,
    private readonly helloTimeoutMs = 5000,
  ) {
    this.server = net.createServer({ noDelay: true, pauseOnConnect: true }, (s) => void this.#accept(s));
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

  async #accept(socket: net.Socket): Promise<void> {
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    socket.on('error', () => {}); // errors surface through the channel's owner or the refusal below
    try {
      const hello = decodeHello(
        await readExact(socket, HELLO_LENGTH, this.helloTimeoutMs, `hello from ${remote}`),
      );
      this.#route(socket, hello);
    } catch (err) {
      const e = asMigrationError(err, ErrorCode.BAD_HELLO);
      this.events.onRefused(e, remote);
      void refuse(socket, e);
    }
  }

  #route(socket: net.Socket, hello: Hello): void {
    if (hello.kind === ChannelKind.MAIN) {
      if (this.#migrationId) throw refusal('a migration is already in progress or done on this destination');
      this.#migrationId = hello.migrationId;
      socket.setKeepAlive(true, 1000);
      this.events.onMain(socket, hello);
      return;
    }
    if (hello.kind === ChannelKind.RETURN_PATH) {
      if (!this.#migrationId || !hello.migrationId.equals(this.#migrationId))
        throw refusal('return path for an unknown migration');
      if (this.#rpTaken) throw refusal('return path already open');
      this.#rpTaken = true;
      socket.setKeepAlive(true, 1000);
      this.events.onReturnPath(socket, hello);
      return;
    }
    throw refusal(`channel kind ${hello.kind} is not accepted here`);
  }
}

function refusal(message: string): MigrationError {
  return asMigrationError(Object.assign(new Error(message), {}), ErrorCode.REFUSED);
}

/**
 * Tells the peer why (one ERROR frame) and closes. Keeps reading until the peer closes (or 1 s):
 * closing with unread input would send a reset, and a reset can discard the frame at the peer.
 */
export function refuse(socket: net.Socket, err: MigrationError): Promise<void> {
  if (socket.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      socket.destroy();
      resolve();
    }, 1000);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.on('data', () => {});
    socket.resume();
    socket.end(encodeRp({ type: 'error', code: err.code, message: err.message }));
  });
}
