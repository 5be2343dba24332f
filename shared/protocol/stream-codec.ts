/**
 * Main-channel stream: QEMU's savevm framing (migration/savevm.c) with our magic.
 *
 * ```
 *  header         | be32 magic "SWST" | be32 version |
 *  CONFIGURATION  | 0x07 | be32 len | msgpack {machine, pageSize, ramSize, capabilities, ...} |
 *  START / FULL   | 0x01/0x04 | be32 section_id | u8 n | idstr (n) | be32 instance_id | be32 version_id |
 *                 | be32 payload_len | payload | 0x7e | be32 section_id |        ← footer
 *  PART / END     | 0x02/0x03 | be32 section_id | be32 payload_len | payload | 0x7e | be32 section_id |
 *  COMMAND        | 0x08 | be16 cmd | be16 len | payload (len, checked against COMMAND_TABLE) |
 *  EOF            | 0x00 |
 *  VMDESCRIPTION  | 0x06 | be32 len | JSON (UTF-8) |                           ← only after EOF
 * ```
 * Unlike QEMU, section payloads carry their own length, so the framer never needs to know a
 * device's format. Section encoders return a gather list ([header, ...payload, footer]) so page
 * data is never copied on the way to the socket (`socket.cork(); write each; uncork()`).
 */
import { ErrorCode, ProtocolError } from '../errors.js';
import { ByteReader } from './byte-reader.js';
import { ByteWriter } from './byte-writer.js';
import {
  Command,
  MAX_CONFIG_PAYLOAD,
  MAX_SECTION_PAYLOAD,
  SectionType,
  STREAM_MAGIC,
  STREAM_VERSION,
} from './constants.js';
import { malformed, packBody } from './msgpack.js';
import { type ConfigurationBody, checkCommand, encodeIdstr, type SectionHeader } from './stream-records.js';

export { decodeStream, StreamFramer } from './stream-framer.js';
export type { CommandSpec, ConfigurationBody, SectionHeader, StreamRecord } from './stream-records.js';
export { COMMAND_TABLE, checkCommand } from './stream-records.js';

export function encodeStreamHeader(): Buffer {
  return new ByteWriter(8).u32(STREAM_MAGIC).u32(STREAM_VERSION).finish();
}

export function encodeConfiguration(body: ConfigurationBody): Buffer {
  return lengthPrefixed(SectionType.CONFIGURATION, packBody(body), 'configuration');
}

export function encodeSectionStart(h: SectionHeader, payload: Buffer | Buffer[]): Buffer[] {
  return fullHeaderSection(SectionType.START, h, payload);
}

export function encodeSectionFull(h: SectionHeader, payload: Buffer | Buffer[]): Buffer[] {
  return fullHeaderSection(SectionType.FULL, h, payload);
}

export function encodeSectionPart(sectionId: number, payload: Buffer | Buffer[]): Buffer[] {
  return shortHeaderSection(SectionType.PART, sectionId, payload);
}

export function encodeSectionEnd(sectionId: number, payload: Buffer | Buffer[]): Buffer[] {
  return shortHeaderSection(SectionType.END, sectionId, payload);
}

export function encodeCommand(command: Command, payload: Buffer = EMPTY): Buffer {
  checkCommand(command, payload.length);
  return new ByteWriter(5 + payload.length)
    .u8(SectionType.COMMAND)
    .u16(command, 'command')
    .u16(payload.length, 'command length')
    .bytes(payload)
    .finish();
}

export function encodePing(value: number): Buffer {
  return encodeCommand(Command.PING, be32(value, 'ping value'));
}

export function encodeOpenReturnPath(): Buffer {
  return encodeCommand(Command.OPEN_RETURN_PATH);
}

export function encodeSwitchoverStart(): Buffer {
  return encodeCommand(Command.SWITCHOVER_START);
}

export function readPing(payload: Buffer): number {
  return readBe32(payload, 'PING');
}

export function encodeEof(): Buffer {
  return Buffer.from([SectionType.EOF]);
}

export function encodeVmdesc(json: unknown): Buffer {
  const text = JSON.stringify(json);
  if (text === undefined) throw malformed('vmdesc', 'value has no JSON form');
  return lengthPrefixed(SectionType.VMDESCRIPTION, Buffer.from(text, 'utf8'), 'vmdesc');
}

const EMPTY = Buffer.alloc(0);

function lengthPrefixed(type: number, body: Buffer, what: string): Buffer {
  if (body.length > MAX_CONFIG_PAYLOAD) {
    throw new ProtocolError(
      ErrorCode.OVERSIZE,
      `${what} body ${body.length} bytes exceeds ${MAX_CONFIG_PAYLOAD}`,
      {
        section: what,
      },
    );
  }
  return new ByteWriter(5 + body.length).u8(type).u32(body.length).bytes(body).finish();
}

function fullHeaderSection(type: number, h: SectionHeader, payload: Buffer | Buffer[]): Buffer[] {
  const parts = Array.isArray(payload) ? payload : [payload];
  const idstr = encodeIdstr(h.idstr);
  const header = new ByteWriter(18 + idstr.length)
    .u8(type)
    .u32(h.sectionId, 'sectionId')
    .u8(idstr.length)
    .bytes(idstr)
    .u32(h.instanceId, 'instanceId')
    .u32(h.versionId, 'versionId')
    .u32(payloadLength(parts, h.sectionId), 'payload_len')
    .finish();
  return [header, ...parts, footer(h.sectionId)];
}

function shortHeaderSection(type: number, sectionId: number, payload: Buffer | Buffer[]): Buffer[] {
  const parts = Array.isArray(payload) ? payload : [payload];
  const header = new ByteWriter(9)
    .u8(type)
    .u32(sectionId, 'sectionId')
    .u32(payloadLength(parts, sectionId), 'payload_len')
    .finish();
  return [header, ...parts, footer(sectionId)];
}

function payloadLength(parts: Buffer[], sectionId: number): number {
  let n = 0;
  for (const p of parts) n += p.length;
  if (n > MAX_SECTION_PAYLOAD) {
    throw new ProtocolError(
      ErrorCode.OVERSIZE,
      `section ${sectionId} payload ${n} bytes exceeds ${MAX_SECTION_PAYLOAD}`,
      {
        section: sectionId,
      },
    );
  }
  return n;
}

function footer(sectionId: number): Buffer {
  return new ByteWriter(5).u8(SectionType.FOOTER).u32(sectionId, 'sectionId').finish();
}

function be32(v: number, field: string): Buffer {
  return new ByteWriter(4).u32(v, field).finish();
}

function readBe32(payload: Buffer, what: string): number {
  if (payload.length !== 4) {
    throw new ProtocolError(ErrorCode.BAD_LENGTH, `${what} payload is ${payload.length} bytes, expected 4`, {
      section: what,
    });
  }
  return new ByteReader(payload, what).u32();
}
