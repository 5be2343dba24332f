/**
 * How the destination reads its main channel: chunks, in order, for the stream framer, with a bound
 * on what waits in memory. Two readers:
 *
 * - RingReader (plaintext, with the native addon): the accepted socket is re-opened on a duplicate
 *   descriptor as a socket Node reads into a caller's buffer (`onread`), here the free part of a
 *   reused 32 MiB ring. Node's own reads are 64 KiB each into a fresh buffer: on a 1 GiB guest that
 *   was ~16,000 reads, each with its JavaScript callback, allocation and page faults, and held the
 *   main channel to ~0.8 GB/s here; reads into the ring return up to 1 MiB and fault nothing
 *   (measured 1.5 GB/s). A chunk's bytes stay valid until the consumer releases them (release(), by
 *   stream offset, once every record that used them has been processed); when the ring is full, a
 *   read goes into a fresh buffer instead of waiting.
 * - ChunkReader (TLS, or no addon): Node's 'data' events, paused while the consumer is busy.
 *
 *   ring:  [ free | released… | in use: chunks the framer or a record still holds | free → ]
 *                                ^tail                                              ^head
 */
import net from 'node:net';
import type tls from 'node:tls';
import { loadNativeHash, type NativeHash, prepareNativeHash } from '../shared/ram/native-hash.js';

export interface MainReader {
  /** The socket to write (a refusal) and to close: the re-opened one when the reader re-opened it. */
  readonly socket: net.Socket;
  /** Chunk views point into reused memory: payload bytes must be copied to be kept (SectionPayload transient). */
  readonly transient: boolean;
  /** The next chunk, or null once the source closed the channel. */
  next(): Promise<Buffer | null>;
  /** Every stream byte before `offset` has been processed: its memory may be reused. */
  release(offset: number): void;
}

/** The best reader for this socket; the accepted socket is closed if it was re-opened. */
export function openMainReader(socket: net.Socket): MainReader {
  const native = loadNativeHash(prepareNativeHash());
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (!native || (socket as tls.TLSSocket).encrypted || typeof fd !== 'number' || fd < 0)
    return new ChunkReader(socket);
  return RingReader.reopen(socket, fd, native) ?? new ChunkReader(socket);
}

const RING_BYTES = 32 << 20;
/** The largest read into the ring, and the smallest free stretch worth reading into. */
const MAX_READ = 1 << 20;
const MIN_READ = 64 << 10;
/** Chunks waiting for the consumer before the socket is paused. */
const QUEUE_MAX = 16;

/** Chunks read and not yet taken by the consumer, and the wait for the next one. */
abstract class QueuedChunks {
  protected readonly queue: Buffer[] = [];
  #ended = false;
  #wake: (() => void) | null = null;

  /** The next chunk, or null once the source closed the channel. */
  async next(): Promise<Buffer | null> {
    while (this.queue.length === 0) {
      if (this.#ended) return null;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
      this.#wake = null;
    }
    const c = this.queue.shift()!;
    this.taken();
    return c;
  }

  /** A chunk was taken: the reader may read again. */
  protected abstract taken(): void;

  protected arrived(chunk: Buffer): void {
    this.queue.push(chunk);
    this.#wake?.();
  }

  protected watchEnd(socket: net.Socket): void {
    const end = () => {
      this.#ended = true;
      this.#wake?.();
    };
    socket.on('end', end);
    socket.on('close', end);
    socket.on('error', end);
  }
}

interface Extent {
  /** Stream offset just past this chunk. */
  end: number;
  /** Ring bytes freed with it (its own, plus a stretch skipped at the ring's end before it), 0 if not in the ring. */
  ringBytes: number;
}

class RingReader extends QueuedChunks implements MainReader {
  readonly transient = true;
  readonly socket: net.Socket;
  readonly #ring: Buffer;
  /** In use: ring positions [tail, tail + inUse) (cyclic); the next read goes at head = tail + inUse. */
  #tail = 0;
  #inUse = 0;
  /** A stretch at the ring's end skipped for the read now pending at position 0 (freed with it). */
  #skipped = 0;
  /** Chunks handed out and not yet released, in stream order. */
  readonly #extents: Extent[] = [];
  #offset = 0;

  /** The same connection on a duplicate descriptor, read into the ring; null if that fails. */
  static reopen(accepted: net.Socket, fd: number, native: NativeHash): RingReader | null {
    const copy = native.dupFd(fd);
    if (copy < 0) return null;
    // bytes Node already read past the hello (unshifted by the listener) come first
    const early = accepted.read() as Buffer | null;
    accepted.setTimeout(0);
    accepted.removeAllListeners();
    accepted.on('error', () => {});
    accepted.destroy(); // closes the first descriptor; the connection lives on in the copy
    return new RingReader(copy, early, native);
  }

  private constructor(fd: number, early: Buffer | null, native: NativeHash) {
    super();
    const ram = new SharedArrayBuffer(RING_BYTES);
    native.adviseHugePages(new Uint8Array(ram));
    // touched only as far as the stream reaches (with page channels the main channel carries a few
    // MiB); in 2 MiB pages the whole ring is 16 faults
    this.#ring = Buffer.from(ram);
    if (early?.length) this.#push(Buffer.from(early), 0);
    // Node 20 honours onread for a socket made from a descriptor; its type declarations omit it
    const opts: net.SocketConstructorOpts & { onread: net.OnReadOpts } = {
      fd,
      readable: true,
      writable: true,
      onread: { buffer: () => this.#nextBuffer(), callback: (n, buf) => this.#onRead(n, buf) },
    };
    this.socket = new net.Socket(opts);
    this.watchEnd(this.socket);
  }

  protected taken(): void {
    if (this.queue.length < QUEUE_MAX / 2 && this.socket.isPaused()) this.socket.resume();
  }

  release(offset: number): void {
    const ex = this.#extents;
    while (ex.length > 0 && ex[0]!.end <= offset) {
      const { ringBytes } = ex.shift()!;
      this.#tail = (this.#tail + ringBytes) % RING_BYTES;
      this.#inUse -= ringBytes;
    }
  }

  /** Where the next read goes: the free stretch at head, else at the ring's start, else a fresh buffer. */
  #nextBuffer(): Buffer {
    if (this.#inUse === 0) this.#tail = 0; // empty: start over, the whole ring is one stretch
    const head = (this.#tail + this.#inUse) % RING_BYTES;
    const wrapped = this.#inUse > 0 && head <= this.#tail;
    const room = wrapped ? this.#tail - head : RING_BYTES - head;
    if (room >= MIN_READ) return this.#ring.subarray(head, head + Math.min(room, MAX_READ));
    if (!wrapped && this.#tail >= MIN_READ) {
      this.#skipped = RING_BYTES - head; // the end is too short: read at the start, free the end later
      this.#inUse += this.#skipped;
      return this.#ring.subarray(0, Math.min(this.#tail, MAX_READ));
    }
    return Buffer.allocUnsafe(MAX_READ); // full: do not stall the socket, read into fresh memory
  }

  #onRead(n: number, buf: Uint8Array): boolean {
    const inRing = buf.buffer === this.#ring.buffer;
    let ringBytes = 0;
    if (inRing) {
      ringBytes = n + this.#skipped;
      this.#skipped = 0;
      this.#inUse += n;
    }
    this.#push(Buffer.from(buf.buffer, buf.byteOffset, n), ringBytes);
    return this.queue.length < QUEUE_MAX;
  }

  #push(chunk: Buffer, ringBytes: number): void {
    this.#offset += chunk.length;
    this.#extents.push({ end: this.#offset, ringBytes });
    this.arrived(chunk);
  }
}

/** Node's own chunks ('data' events), the socket paused while the consumer is behind. */
class ChunkReader extends QueuedChunks implements MainReader {
  readonly transient = false;

  constructor(readonly socket: net.Socket) {
    super();
    socket.on('data', (c: Buffer) => {
      this.arrived(c);
      if (this.queue.length >= 8) socket.pause();
    });
    this.watchEnd(socket);
    socket.resume();
  }

  protected taken(): void {
    if (this.queue.length < 4) this.socket.resume();
  }

  /** Node's chunks are fresh buffers: nothing to reuse. */
  release(): void {}
}
