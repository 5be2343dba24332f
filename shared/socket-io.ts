/**
 * Socket helpers used by both sides: a backpressure-aware writer with a sticky first error, and
 * reading an exact number of bytes (for hellos) with a deadline.
 */
import type { Socket } from 'node:net';
import { withDeadline } from './deadline.js';
import { asMigrationError, ErrorCode, type MigrationError, SocketError } from './errors.js';

/**
 * Bounds on control messages written without waiting (post()): a droppable one (a clock probe or its
 * answer) is skipped once the peer has this much unread, and a peer with more than the hard cap unread
 * is not reading at all and is cut off. Control traffic is a few hundred bytes a second; 1 MiB unread
 * is minutes of it.
 */
export const POST_SOFT_CAP = 64 * 1024;
export const POST_HARD_CAP = 1024 * 1024;

export class ChannelWriter {
  #error: MigrationError | null = null;
  #bytes = 0;
  #lastFlushed: Promise<void> = Promise.resolve();
  /** A write that cannot drain for this long fails the channel (0 = wait forever). */
  stallTimeoutMs = 0;

  constructor(
    readonly socket: Socket,
    readonly name: string,
  ) {
    socket.on('error', (err) => this.fail(asMigrationError(err, ErrorCode.SOCKET)));
    socket.on('close', () =>
      this.fail(new SocketError(ErrorCode.PEER_CLOSED, `${name} channel closed by the peer`)),
    );
  }

  get bytesWritten(): number {
    return this.#bytes;
  }

  get error(): MigrationError | null {
    return this.#error;
  }

  /** First failure wins; later ones are ignored (the first is the cause). */
  fail(err: MigrationError): void {
    this.#error ??= err;
  }

  /** Writes a gather list; resolves when the socket can take more (drain) or rejects with the sticky error. */
  async write(chunks: Buffer | Buffer[]): Promise<void> {
    await this.writeTracked(chunks).accepted;
  }

  /**
   * Like write(), and also tells when the bytes have left Node's buffer. Node keeps a reference to a
   * written Buffer until then, so a caller that reuses its buffers must wait for `flushed`.
   */
  writeTracked(chunks: Buffer | Buffer[]): { accepted: Promise<void>; flushed: Promise<void> } {
    if (this.#error) {
      const rejected = Promise.reject(this.#error);
      rejected.catch(() => {});
      return { accepted: rejected, flushed: rejected };
    }
    const list = Array.isArray(chunks) ? chunks : [chunks];
    let ok = true;
    let resolveFlushed!: () => void;
    let rejectFlushed!: (e: unknown) => void;
    const flushed = new Promise<void>((res, rej) => {
      resolveFlushed = res;
      rejectFlushed = rej;
    });
    flushed.catch(() => {});
    this.#lastFlushed = flushed;
    this.socket.cork();
    list.forEach((c, i) => {
      this.#bytes += c.length;
      const last = i === list.length - 1;
      ok = this.socket.write(c, last ? (err) => (err ? rejectFlushed(err) : resolveFlushed()) : undefined);
    });
    this.socket.uncork();
    return { accepted: ok ? Promise.resolve() : this.#drain(), flushed };
  }

  /**
   * Writes a small control message without waiting for the peer to read (answers, probes, acks): no
   * drain listener per message, so a peer that never reads cannot pile up listeners or promises.
   * `droppable` messages are skipped (false) once POST_SOFT_CAP bytes are unread; past POST_HARD_CAP
   * the channel fails with MIG_ERR_OVERSIZE and the socket is destroyed.
   */
  post(chunk: Buffer, droppable = false): boolean {
    if (this.#error || this.socket.destroyed) return false;
    if (droppable && this.socket.writableLength >= POST_SOFT_CAP) return false;
    this.#bytes += chunk.length;
    this.socket.write(chunk);
    const unread = this.socket.writableLength;
    if (unread > POST_HARD_CAP) {
      this.fail(
        new SocketError(
          ErrorCode.OVERSIZE,
          `${this.name} channel: the peer is not reading (${unread} bytes unread, cap ${POST_HARD_CAP}); cut off`,
        ),
      );
      this.socket.destroy();
      return false;
    }
    return true;
  }

  /**
   * Resolves once everything written so far has left Node's buffer. Waits on the last write's own
   * callback: 'drain' fires only after a write() that returned false, so a small last write
   * accepted under the high-water mark would never see one.
   */
  async flush(): Promise<void> {
    if (this.#error) throw this.#error;
    if (this.stallTimeoutMs <= 0) return this.#lastFlushed;
    await withDeadline(this.#lastFlushed, this.stallTimeoutMs, () => {
      const err = new SocketError(
        ErrorCode.TIMEOUT,
        `${this.name} channel made no progress for ${this.stallTimeoutMs} ms (stall-timeout)`,
      );
      this.fail(err);
      this.socket.destroy();
      return err;
    });
  }

  #drain(): Promise<void> {
    const socket = this.socket;
    return new Promise((resolve, reject) => {
      const timer =
        this.stallTimeoutMs > 0
          ? setTimeout(() => {
              const err = new SocketError(
                ErrorCode.TIMEOUT,
                `${this.name} channel made no progress for ${this.stallTimeoutMs} ms (stall-timeout)`,
              );
              this.fail(err);
              done(err);
              socket.destroy();
            }, this.stallTimeoutMs)
          : null;
      const done = (err?: MigrationError) => {
        if (timer) clearTimeout(timer);
        socket.off('drain', onDrain);
        socket.off('close', onClose);
        socket.off('error', onClose);
        if (err) reject(err);
        else resolve();
      };
      const onDrain = () => done();
      const onClose = () =>
        done(
          this.#error ?? new SocketError(ErrorCode.PEER_CLOSED, `${this.name} channel closed while writing`),
        );
      socket.on('drain', onDrain);
      socket.on('close', onClose);
      socket.on('error', onClose);
      if (socket.destroyed) onClose();
    });
  }
}

/** Reads exactly n bytes from a socket (paused mode), or fails at the deadline / on close. */
export function readExact(socket: Socket, n: number, timeoutMs: number, what: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let have = 0;
    const timer = setTimeout(
      () => finish(new SocketError(ErrorCode.TIMEOUT, `${what}: no complete hello within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const onData = (chunk: Buffer) => {
      parts.push(chunk);
      have += chunk.length;
      if (have < n) return;
      const all = Buffer.concat(parts);
      const rest = all.subarray(n);
      // detach first: unshift() re-emits 'data' at once, which would re-enter this handler
      finish(null, all.subarray(0, n));
      if (rest.length > 0) socket.unshift(rest);
    };
    const onClose = () =>
      finish(new SocketError(ErrorCode.PEER_CLOSED, `${what}: connection closed after ${have} bytes`));
    const onError = (err: Error) => finish(asMigrationError(err, ErrorCode.SOCKET));
    function finish(err: MigrationError | null, buf?: Buffer) {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.off('error', onError);
      socket.pause();
      if (err) reject(err);
      else resolve(buf!);
    }
    socket.on('data', onData);
    socket.on('close', onClose);
    socket.on('error', onError);
    socket.resume();
  });
}
