/**
 * The destination's return-path writer: SHUT, PONG, SWITCHOVER_ACK and our messages. Opened by the
 * source's RP connection; OPEN_RETURN_PATH on the main channel may arrive before that connection is
 * accepted, so sending waits (bounded) for it.
 */
import type net from 'node:net';
import { withDeadline } from '../shared/deadline.js';
import {
  asMigrationError,
  ErrorCode,
  type MigrationError,
  ProtocolError,
  SocketError,
} from '../shared/errors.js';
import { encodeRp, RpFramer, type RpMessage } from '../shared/protocol/return-path-codec.js';
import { ChannelWriter } from '../shared/socket-io.js';
import { TraceEvent, type Tracer } from '../shared/trace.js';

export class ReturnPath {
  #writer: ChannelWriter | null = null;
  #opened: (() => void) | null = null;
  readonly #openPromise = new Promise<void>((resolve) => {
    this.#opened = resolve;
  });

  /** Called for each clock probe the source sends on the return path. */
  onTimeProbe?: (value: number) => void;

  constructor(private readonly tracer: Tracer) {}

  get open(): boolean {
    return this.#writer !== null;
  }

  attach(socket: net.Socket, onDown: (e: MigrationError) => void): void {
    this.#writer = new ChannelWriter(socket, 'return-path');
    const writer = this.#writer;
    socket.on('close', () =>
      onDown(writer.error ?? new SocketError(ErrorCode.PEER_CLOSED, 'return path closed by the source')),
    );
    // the source sends only clock probes (TIME) this way; anything else is a protocol error
    const framer = new RpFramer();
    socket.on('data', (chunk: Buffer) => {
      try {
        for (const m of framer.feed(chunk)) {
          if (m.type !== 'time')
            throw new ProtocolError(
              ErrorCode.UNKNOWN_MESSAGE,
              `return path: unexpected '${m.type}' from the source`,
            );
          this.onTimeProbe?.(m.body.value);
        }
      } catch (err) {
        onDown(asMigrationError(err, ErrorCode.MALFORMED));
        socket.destroy();
      }
    });
    socket.resume(); // the listener paused it after the hello
    this.#opened?.();
  }

  async waitOpen(timeoutMs: number): Promise<void> {
    if (this.#writer) return;
    await withDeadline(
      this.#openPromise,
      timeoutMs,
      () =>
        new SocketError(
          ErrorCode.TIMEOUT,
          `return path not connected within ${timeoutMs} ms of OPEN_RETURN_PATH`,
        ),
    );
  }

  /**
   * Sends one message if the return path is open; a no-op otherwise (return-path capability off).
   * Never waits for the source to read: answers are small, and a source that leaves more than
   * POST_HARD_CAP unread is cut off (the writer fails, the socket closes, onDown fires) instead of
   * growing our memory one queued answer at a time. Rejects once the return path has failed.
   */
  async send(msg: RpMessage): Promise<void> {
    const writer = this.#writer;
    if (!writer) return;
    this.tracer.emit(TraceEvent.RP_SEND, { type: msg.type });
    if (!writer.post(encodeRp(msg)) && writer.error) throw writer.error;
  }

  close(): void {
    this.#writer?.socket.end();
  }
}
