/**
 * Channel hello: the first 56 bytes of every TCP connection between the two sides.
 *
 * ```
 *  0        4        6    7     8                        24                               56
 *  +--------+--------+----+-----+------------------------+--------------------------------+
 *  | magic  | version|kind|index| migration id (16)      | auth tag (32, zeros if unused) |
 *  | "SWOV" | be16   | u8 | u8  |                        |                                |
 *  +--------+--------+----+-----+------------------------+--------------------------------+
 * ```
 * kind is a ChannelKind (MAIN, RETURN_PATH, PAGE); index numbers page channels (0 otherwise).
 * The auth tag is carried, not checked, here: the channel layer decides what it must be.
 */
import { ErrorCode, ProtocolError, VersionError } from '../errors.js';
import {
  AUTH_TAG_LENGTH,
  ChannelKind,
  HELLO_LENGTH,
  HELLO_MAGIC,
  MIGRATION_ID_LENGTH,
  PROTOCOL_VERSION,
} from './constants.js';

export interface Hello {
  kind: ChannelKind;
  index: number;
  migrationId: Buffer;
  authTag: Buffer;
}

const KIND_NAMES: Readonly<Record<number, string>> = {
  [ChannelKind.MAIN]: 'main',
  [ChannelKind.RETURN_PATH]: 'return-path',
  [ChannelKind.PAGE]: 'page',
};

/** Human name of a channel kind, `unknown(n)` for values outside the table. */
export function channelKindName(kind: number): string {
  return KIND_NAMES[kind] ?? `unknown(${kind})`;
}

export function encodeHello(h: {
  kind: ChannelKind;
  index?: number;
  migrationId: Buffer;
  authTag?: Buffer;
}): Buffer {
  if (KIND_NAMES[h.kind] === undefined) {
    throw badHello('kind', `cannot send a hello of channel kind ${h.kind}`);
  }
  checkLength(h.migrationId, MIGRATION_ID_LENGTH, 'migrationId');
  const authTag = h.authTag ?? Buffer.alloc(AUTH_TAG_LENGTH);
  checkLength(authTag, AUTH_TAG_LENGTH, 'authTag');
  const index = h.index ?? 0;
  if (!Number.isInteger(index) || index < 0 || index > 0xff) {
    throw badHello('index', `hello index must be 0..255, got ${index}`);
  }
  const out = Buffer.alloc(HELLO_LENGTH);
  out.writeUInt32BE(HELLO_MAGIC, 0);
  out.writeUInt16BE(PROTOCOL_VERSION, 4);
  out[6] = h.kind;
  out[7] = index;
  h.migrationId.copy(out, 8);
  authTag.copy(out, 8 + MIGRATION_ID_LENGTH);
  return out;
}

/** Decodes and checks a hello. The returned id and tag are copies, safe to keep. */
export function decodeHello(buf: Buffer, expect: { kind?: ChannelKind; migrationId?: Buffer } = {}): Hello {
  if (buf.length < HELLO_LENGTH) {
    throw new ProtocolError(ErrorCode.TRUNCATED, `hello is ${buf.length} bytes, expected ${HELLO_LENGTH}`, {
      section: 'hello',
      offset: buf.length,
    });
  }
  if (buf.length > HELLO_LENGTH) {
    throw new ProtocolError(ErrorCode.BAD_LENGTH, `hello is ${buf.length} bytes, expected ${HELLO_LENGTH}`, {
      section: 'hello',
    });
  }
  const magic = buf.readUInt32BE(0);
  if (magic !== HELLO_MAGIC) {
    throw new ProtocolError(
      ErrorCode.BAD_MAGIC,
      `hello magic ${hex32(magic)}, expected ${hex32(HELLO_MAGIC)}`,
      {
        section: 'hello',
        offset: 0,
      },
    );
  }
  const version = buf.readUInt16BE(4);
  if (version !== PROTOCOL_VERSION) {
    throw new VersionError(
      ErrorCode.VERSION,
      `peer speaks protocol ${version}, this side speaks ${PROTOCOL_VERSION}`,
      {
        section: 'hello',
        offset: 4,
        field: 'version',
      },
    );
  }
  const hello: Hello = {
    kind: buf[6] as ChannelKind,
    index: buf[7]!,
    migrationId: Buffer.from(buf.subarray(8, 8 + MIGRATION_ID_LENGTH)),
    authTag: Buffer.from(buf.subarray(8 + MIGRATION_ID_LENGTH, HELLO_LENGTH)),
  };
  checkExpected(hello, expect);
  return hello;
}

function checkExpected(hello: Hello, expect: { kind?: ChannelKind; migrationId?: Buffer }): void {
  if (KIND_NAMES[hello.kind] === undefined) {
    throw badHello('kind', `hello has unknown channel kind ${hello.kind}`);
  }
  if (expect.kind !== undefined && hello.kind !== expect.kind) {
    throw badHello(
      'kind',
      `hello is for a ${channelKindName(hello.kind)} channel, expected ${channelKindName(expect.kind)}`,
    );
  }
  if (expect.migrationId !== undefined && !hello.migrationId.equals(expect.migrationId)) {
    throw badHello(
      'migrationId',
      `hello migration id ${hello.migrationId.toString('hex')}, expected ${expect.migrationId.toString('hex')}`,
    );
  }
}

function checkLength(b: Buffer, length: number, field: string): void {
  if (!Buffer.isBuffer(b) || b.length !== length) {
    throw badHello(
      field,
      `hello ${field} must be ${length} bytes, got ${Buffer.isBuffer(b) ? b.length : typeof b}`,
    );
  }
}

function badHello(field: string, message: string): ProtocolError {
  return new ProtocolError(ErrorCode.BAD_HELLO, message, { section: 'hello', field });
}

function hex32(v: number): string {
  return `0x${v.toString(16).padStart(8, '0')}`;
}
