/**
 * The guest's UDP echo service: what an outside probe (scripts/probe.ts) talks to.
 *
 * Request: at least 8 bytes, the first 8 being the probe's sequence number (u64 BE).
 * Reply (16 bytes): those 8 bytes echoed, then the guest tick as f64 BE.
 *
 * The service answers only while `isRunning()` is true. A stopped guest is silent — requests that
 * arrive meanwhile are read and dropped, not queued — so an outside probe sees the stop as a gap in
 * replies (README "Measuring downtime"). Datagrams shorter than 8 bytes are ignored.
 */
import { createSocket, type Socket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import { asMigrationError, ErrorCode, ParameterError, SocketError } from '../errors.js';

export interface GuestServiceOptions {
  /** True while the guest's vCPUs run; the service is silent otherwise. */
  isRunning: () => boolean;
  /** Current guest tick (heartbeat counter), sent back in every reply. */
  tick: () => number;
}

export const PROBE_REQUEST_BYTES = 8;
export const PROBE_REPLY_BYTES = 16;

export class GuestService {
  private socket: Socket | undefined;
  private closing: Promise<void> | undefined;
  /** Replies sent and requests dropped because the guest was stopped (for reports and tests). */
  answered = 0;
  dropped = 0;

  constructor(private readonly opts: GuestServiceOptions) {}

  /** Binds the UDP socket (port 0 = any free port) and resolves with the bound address. */
  async start(host: string, port: number): Promise<{ host: string; port: number }> {
    if (this.socket) throw new SocketError(ErrorCode.STATE, 'guest service already started');
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new ParameterError(ErrorCode.PARAMETER, `guest service port ${port} out of range`, {
        field: 'port',
      });
    }
    const socket = createSocket({ type: isIPv6(host.replace(/^\[(.*)\]$/, '$1')) ? 'udp6' : 'udp4' });
    this.socket = socket;
    socket.on('message', (msg, rinfo) => this.onMessage(socket, msg, rinfo.address, rinfo.port));
    try {
      await new Promise<void>((resolve, reject) => {
        const onError = (err: Error) => reject(err);
        socket.once('error', onError);
        socket.bind(port, host.replace(/^\[(.*)\]$/, '$1'), () => {
          socket.off('error', onError);
          resolve();
        });
      });
    } catch (err) {
      this.socket = undefined;
      socket.close();
      const e = asMigrationError(err, ErrorCode.SOCKET);
      throw new SocketError(
        e.code,
        `guest service cannot bind ${host}:${port}: ${e.message}`,
        {},
        { cause: err },
      );
    }
    // After bind, a send error (e.g. ICMP unreachable reported on some platforms) must not crash the guest.
    socket.on('error', () => {});
    const addr = socket.address();
    return { host: addr.address, port: addr.port };
  }

  /** The bound address, or undefined before start / after close. */
  address(): { host: string; port: number } | undefined {
    if (!this.socket || this.closing) return undefined;
    const a = this.socket.address();
    return { host: a.address, port: a.port };
  }

  private onMessage(socket: Socket, msg: Buffer, address: string, port: number): void {
    if (msg.length < PROBE_REQUEST_BYTES) return;
    if (!this.opts.isRunning()) {
      this.dropped++;
      return;
    }
    const reply = Buffer.allocUnsafe(PROBE_REPLY_BYTES);
    msg.copy(reply, 0, 0, PROBE_REQUEST_BYTES);
    reply.writeDoubleBE(this.opts.tick(), PROBE_REQUEST_BYTES);
    this.answered++;
    socket.send(reply, port, address, () => {
      // Errors are swallowed: a probe that went away must not disturb the guest.
    });
  }

  /** Closes the socket. Idempotent; resolves once the socket is closed. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    const socket = this.socket;
    if (!socket) return Promise.resolve();
    this.closing = new Promise<void>((resolve) => {
      try {
        socket.close(() => resolve());
      } catch {
        resolve();
      }
    });
    return this.closing;
  }
}
