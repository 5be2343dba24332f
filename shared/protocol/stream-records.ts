/**
 * Record types of the main-channel stream and the checks shared by its encoder and framer:
 * the COMMAND length table, configuration and vmdesc body validation, idstr decoding.
 * Byte layouts are drawn in stream-codec.ts.
 */
import { ErrorCode, ProtocolError } from '../errors.js';
import { Command, MAX_COMMAND_PAYLOAD, MAX_IDSTR } from './constants.js';
import { isPlainObject, malformed, unpackMap } from './msgpack.js';
import type { SectionPayload } from './section-payload.js';

export interface ConfigurationBody {
  machine: string;
  pageSize: number;
  ramSize: number;
  capabilities: Record<string, boolean>;
  [key: string]: unknown;
}

export interface SectionHeader {
  sectionId: number;
  idstr: string;
  instanceId: number;
  versionId: number;
}

export type StreamRecord =
  | { type: 'header'; version: number }
  | { type: 'configuration'; body: ConfigurationBody }
  | {
      type: 'start' | 'full';
      sectionId: number;
      idstr: string;
      instanceId: number;
      versionId: number;
      payload: SectionPayload;
    }
  | { type: 'part' | 'end'; sectionId: number; payload: SectionPayload }
  | { type: 'command'; command: Command; payload: Buffer }
  | { type: 'eof' }
  | { type: 'vmdesc'; json: unknown };

export interface CommandSpec {
  name: string;
  /** Fixed payload length, or 'variable' up to `max`. */
  length: number | 'variable';
  max?: number;
}

/** QEMU's mig_cmd_args analog: checked before a COMMAND payload is read. */
export const COMMAND_TABLE: Readonly<Record<number, CommandSpec>> = {
  [Command.OPEN_RETURN_PATH]: { name: 'OPEN_RETURN_PATH', length: 0 },
  [Command.PING]: { name: 'PING', length: 4 },
  [Command.SWITCHOVER_START]: { name: 'SWITCHOVER_START', length: 0 },
};

/** Throws UNKNOWN_COMMAND, BAD_LENGTH or OVERSIZE unless (cmd, len) fits the table. */
export function checkCommand(cmd: number, len: number, offset?: number): CommandSpec {
  const spec = Object.hasOwn(COMMAND_TABLE, cmd) ? COMMAND_TABLE[cmd] : undefined;
  if (spec === undefined) {
    throw new ProtocolError(ErrorCode.UNKNOWN_COMMAND, `unknown COMMAND 0x${cmd.toString(16)}${at(offset)}`, {
      section: 'command',
      offset,
    });
  }
  if (spec.length === 'variable') {
    const max = spec.max ?? MAX_COMMAND_PAYLOAD;
    if (len > max) {
      throw new ProtocolError(
        ErrorCode.OVERSIZE,
        `COMMAND ${spec.name} payload ${len} bytes exceeds ${max}${at(offset)}`,
        {
          section: spec.name,
          offset,
        },
      );
    }
  } else if (len !== spec.length) {
    throw new ProtocolError(
      ErrorCode.BAD_LENGTH,
      `COMMAND ${spec.name} payload is ${len} bytes, expected ${spec.length}${at(offset)}`,
      { section: spec.name, offset },
    );
  }
  return spec;
}

/** Validates a decoded configuration body: an object with the four typed fields. */
export function decodeConfigurationBody(buf: Buffer): ConfigurationBody {
  const what = 'configuration';
  const body = unpackMap(buf, what);
  if (typeof body.machine !== 'string') throw malformed(what, 'machine must be a string', 'machine');
  for (const field of ['pageSize', 'ramSize'] as const) {
    const v = body[field];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
      throw malformed(what, `${field} must be a non-negative integer`, field);
    }
  }
  const caps = body.capabilities;
  if (!isPlainObject(caps) || !Object.values(caps).every((v) => typeof v === 'boolean')) {
    throw malformed(what, 'capabilities must map names to booleans', 'capabilities');
  }
  return body as ConfigurationBody;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Strict UTF-8 decode; invalid sequences are MALFORMED, not replacement characters. */
export function decodeUtf8(buf: Buffer, what: string): string {
  try {
    return utf8.decode(buf);
  } catch (err) {
    throw new ProtocolError(
      ErrorCode.MALFORMED,
      `${what}: not valid UTF-8`,
      { section: what },
      { cause: err },
    );
  }
}

export function decodeVmdescBody(buf: Buffer): unknown {
  const text = decodeUtf8(buf, 'vmdesc');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ProtocolError(
      ErrorCode.MALFORMED,
      'vmdesc: body is not JSON',
      { section: 'vmdesc' },
      { cause: err },
    );
  }
}

/** idstr bytes for a section header: 1..MAX_IDSTR bytes of UTF-8. */
export function encodeIdstr(idstr: string): Buffer {
  const bytes = Buffer.from(idstr, 'utf8');
  if (bytes.length < 1 || bytes.length > MAX_IDSTR) {
    throw new ProtocolError(ErrorCode.MALFORMED, `idstr must be 1..${MAX_IDSTR} bytes, got ${bytes.length}`, {
      section: idstr,
      field: 'idstr',
    });
  }
  return bytes;
}

export function at(offset: number | undefined): string {
  return offset === undefined ? '' : ` at offset ${offset}`;
}
