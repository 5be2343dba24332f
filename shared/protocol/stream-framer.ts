/**
 * Incremental framer for the main-channel stream (layout in stream-codec.ts).
 *
 * ```
 *  feed(chunk) → queue → measure(head) ─ need more ─▶ wait (remember how many bytes)
 *                               └─ size known, all there ─▶ take(size) → decode → record
 * ```
 * `measure` reads only header fields, so every length is checked against its cap (OVERSIZE) and
 * every type byte and command against its table as soon as those bytes arrive — before any
 * payload is buffered or allocated. A record is taken from the queue only when complete: one view
 * or one exact copy, never repeated concatenation. The first error is sticky.
 */
import { ErrorCode, ProtocolError, VersionError } from '../errors.js';
import { ByteReader } from './byte-reader.js';
import { ChunkQueue } from './chunk-queue.js';
import {
  type Command,
  MAX_CONFIG_PAYLOAD,
  MAX_SECTION_PAYLOAD,
  SectionType,
  STREAM_MAGIC,
  STREAM_VERSION,
} from './constants.js';
import { SectionPayload } from './section-payload.js';
import {
  at,
  checkCommand,
  decodeConfigurationBody,
  decodeUtf8,
  decodeVmdescBody,
  type StreamRecord,
} from './stream-records.js';

/** Where the stream is: which records may come next. */
type Phase = 'header' | 'body' | 'after-eof' | 'done';
/**
 * Either the whole record's size, or how many buffered bytes are needed to learn more. Sections also
 * say where their payload starts and how long it is: the payload is taken as views, not copied.
 */
type Measure = { size: number } | { size: number; payloadAt: number; payloadLen: number } | { need: number };

export class StreamFramer {
  readonly #queue = new ChunkQueue();
  readonly #maxSectionPayload: number;
  #phase: Phase = 'header';
  /** Bytes of the stream already returned as records (offset of the queue's head). */
  #consumed = 0;
  /** Skip measuring until this many bytes are buffered. */
  #need = 1;
  #error: unknown;

  /** Chunks fed in live in reused memory: payloads say so (SectionPayload.transient). */
  readonly #transient: boolean;

  constructor(opts: { maxSectionPayload?: number; transient?: boolean } = {}) {
    this.#maxSectionPayload = opts.maxSectionPayload ?? MAX_SECTION_PAYLOAD;
    this.#transient = opts.transient ?? false;
  }

  /** Bytes of the stream returned as records so far (everything before this offset is processed by the caller once it handled them). */
  get consumed(): number {
    return this.#consumed;
  }

  /** Bytes buffered but not yet a record. */
  get buffered(): number {
    return this.#queue.length;
  }

  /**
   * Feed bytes as they arrive; returns every complete record, keeps the partial tail. First record
   * is always the header. On a bad record this throws (records before it in the same chunk are not
   * returned) and every later feed() or end() throws the same error.
   */
  feed(chunk: Buffer): StreamRecord[] {
    if (this.#error !== undefined) throw this.#error;
    try {
      this.#queue.push(chunk);
      const out: StreamRecord[] = [];
      while (this.#queue.length >= this.#need) {
        const m = this.#measure();
        if ('need' in m) {
          this.#need = m.need;
          break;
        }
        const start = this.#consumed;
        const rec =
          'payloadAt' in m ? this.#takeSection(m, start) : this.#decode(this.#queue.take(m.size), start);
        this.#consumed += m.size;
        this.#need = 1;
        out.push(rec);
      }
      return out;
    } catch (err) {
      this.#error = err;
      throw err;
    }
  }

  /** Call at end of input: throws TRUNCATED if a partial record is buffered. */
  end(): void {
    if (this.#error !== undefined) throw this.#error;
    if (this.#queue.length > 0) {
      this.#error = new ProtocolError(
        ErrorCode.TRUNCATED,
        `stream ended inside a record: ${this.#queue.length} bytes buffered${at(this.#consumed)}`,
        { offset: this.#consumed },
      );
      throw this.#error;
    }
  }

  #measure(): Measure {
    const q = this.#queue;
    if (this.#phase === 'header') return measureHeader(q, this.#consumed);
    const type = q.peekU8(0);
    this.#checkPhase(type);
    switch (type) {
      case SectionType.EOF:
        return { size: 1 };
      case SectionType.CONFIGURATION:
      case SectionType.VMDESCRIPTION:
        return measureLengthPrefixed(q, type, this.#consumed);
      case SectionType.START:
      case SectionType.FULL:
        return this.#measureFullSection(q);
      case SectionType.PART:
      case SectionType.END:
        return this.#measurePayload(q, 5);
      case SectionType.COMMAND:
        return measureCommand(q, this.#consumed);
      default:
        throw unknownType(type, this.#consumed);
    }
  }

  #checkPhase(type: number): void {
    const afterEof = this.#phase === 'after-eof';
    if (this.#phase === 'done' || (afterEof && type !== SectionType.VMDESCRIPTION)) {
      throw new ProtocolError(
        ErrorCode.MALFORMED,
        `record type 0x${hex(type)} after EOF${at(this.#consumed)}`,
        {
          offset: this.#consumed,
        },
      );
    }
    if (!afterEof && type === SectionType.VMDESCRIPTION) {
      throw new ProtocolError(ErrorCode.MALFORMED, `VMDESCRIPTION before EOF${at(this.#consumed)}`, {
        offset: this.#consumed,
      });
    }
  }

  #measureFullSection(q: ChunkQueue): Measure {
    if (q.length < 6) return { need: 6 };
    const n = q.peekU8(5);
    if (n === 0) {
      throw new ProtocolError(
        ErrorCode.MALFORMED,
        `section ${q.peekU32(1)} has an empty idstr${at(this.#consumed)}`,
        {
          section: q.peekU32(1),
          offset: this.#consumed + 5,
        },
      );
    }
    return this.#measurePayload(q, 6 + n + 8);
  }

  /** `lenAt` is where payload_len sits in the section header. */
  #measurePayload(q: ChunkQueue, lenAt: number): Measure {
    if (q.length < lenAt + 4) return { need: lenAt + 4 };
    const len = q.peekU32(lenAt);
    if (len > this.#maxSectionPayload) {
      const id = q.peekU32(1);
      throw new ProtocolError(
        ErrorCode.OVERSIZE,
        `section ${id} payload ${len} bytes exceeds ${this.#maxSectionPayload}${at(this.#consumed + lenAt)}`,
        { section: id, offset: this.#consumed + lenAt },
      );
    }
    const size = lenAt + 4 + len + 5;
    return q.length >= size ? { size, payloadAt: lenAt + 4, payloadLen: len } : { need: size };
  }

  /** A whole section is buffered: its header and footer are read, its payload taken as chunk views. */
  #takeSection(m: { payloadAt: number; payloadLen: number }, start: number): StreamRecord {
    const head = this.#queue.take(m.payloadAt);
    const payload = new SectionPayload(this.#queue.takeParts(m.payloadLen), this.#transient);
    const footer = this.#queue.take(5);
    const r = new ByteReader(head, 'stream', start);
    const type = r.u8();
    const sectionId = r.u32();
    checkFooter(footer, sectionId, start + m.payloadAt + m.payloadLen);
    if (type === SectionType.PART || type === SectionType.END)
      return { type: type === SectionType.PART ? 'part' : 'end', sectionId, payload };
    const idstr = decodeUtf8(r.bytes(r.u8()), `section ${sectionId} idstr`);
    const instanceId = r.u32();
    const versionId = r.u32();
    const kind = type === SectionType.START ? 'start' : 'full';
    return { type: kind, sectionId, idstr, instanceId, versionId, payload };
  }

  #decode(buf: Buffer, start: number): StreamRecord {
    if (this.#phase === 'header') {
      this.#phase = 'body';
      return { type: 'header', version: buf.readUInt32BE(4) };
    }
    const r = new ByteReader(buf, 'stream', start);
    const type = r.u8();
    switch (type) {
      case SectionType.EOF:
        this.#phase = 'after-eof';
        return { type: 'eof' };
      case SectionType.CONFIGURATION:
        return { type: 'configuration', body: decodeConfigurationBody(r.bytes(r.u32())) };
      case SectionType.VMDESCRIPTION:
        this.#phase = 'done';
        return { type: 'vmdesc', json: decodeVmdescBody(r.bytes(r.u32())) };
      case SectionType.COMMAND:
        return decodeCommand(r);
      default:
        throw unknownType(type, start); // sections go through #takeSection
    }
  }
}

/** Decodes a whole stream held in one buffer (tools and tests). */
export function decodeStream(buf: Buffer, opts?: { maxSectionPayload?: number }): StreamRecord[] {
  const framer = new StreamFramer(opts);
  const records = framer.feed(buf);
  framer.end();
  return records;
}

function measureHeader(q: ChunkQueue, offset: number): Measure {
  if (q.length < 4) return { need: 4 };
  const magic = q.peekU32(0);
  if (magic !== STREAM_MAGIC) {
    throw new ProtocolError(
      ErrorCode.BAD_MAGIC,
      `stream magic 0x${hex(magic)}, expected 0x${hex(STREAM_MAGIC)}`,
      {
        section: 'header',
        offset,
      },
    );
  }
  if (q.length < 8) return { need: 8 };
  const version = q.peekU32(4);
  if (version !== STREAM_VERSION) {
    throw new VersionError(
      ErrorCode.VERSION,
      `stream version ${version}, this side loads ${STREAM_VERSION}`,
      {
        section: 'header',
        offset: offset + 4,
        field: 'version',
      },
    );
  }
  return { size: 8 };
}

function measureLengthPrefixed(q: ChunkQueue, type: number, offset: number): Measure {
  if (q.length < 5) return { need: 5 };
  const len = q.peekU32(1);
  if (len > MAX_CONFIG_PAYLOAD) {
    const what = type === SectionType.CONFIGURATION ? 'configuration' : 'vmdesc';
    throw new ProtocolError(
      ErrorCode.OVERSIZE,
      `${what} body ${len} bytes exceeds ${MAX_CONFIG_PAYLOAD}${at(offset)}`,
      {
        section: what,
        offset: offset + 1,
      },
    );
  }
  return q.length >= 5 + len ? { size: 5 + len } : { need: 5 + len };
}

function measureCommand(q: ChunkQueue, offset: number): Measure {
  if (q.length < 5) return { need: 5 };
  const len = q.peekU16(3);
  checkCommand(q.peekU16(1), len, offset);
  return q.length >= 5 + len ? { size: 5 + len } : { need: 5 + len };
}

function decodeCommand(r: ByteReader): StreamRecord {
  const command = r.u16() as Command;
  return { type: 'command', command, payload: r.bytes(r.u16()) };
}

/** `footer` is the section's last 5 bytes, at stream offset `offset`. */
function checkFooter(footer: Buffer, sectionId: number, offset: number): void {
  const marker = footer[0]!;
  const id = footer.readUInt32BE(1);
  if (marker !== SectionType.FOOTER) {
    throw new ProtocolError(
      ErrorCode.FOOTER_MISMATCH,
      `section ${sectionId}: missing footer, found byte 0x${hex(marker)}${at(offset)}`,
      { section: sectionId, offset },
    );
  }
  if (id !== sectionId) {
    throw new ProtocolError(
      ErrorCode.FOOTER_MISMATCH,
      `section ${sectionId}: footer names section ${id}${at(offset + 1)}`,
      { section: sectionId, offset: offset + 1 },
    );
  }
}

function unknownType(type: number, offset: number): ProtocolError {
  return new ProtocolError(
    ErrorCode.UNKNOWN_SECTION_TYPE,
    `unknown section type 0x${hex(type)}${at(offset)}`,
    {
      offset,
    },
  );
}

function hex(v: number): string {
  return v.toString(16).padStart(2, '0');
}
