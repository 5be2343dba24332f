/**
 * Typed errors with stable codes. Callers and tests match on `code`, never on message text.
 *
 * Every error a user can see is one of these; the CLI prints `code: message` on one line and exits
 * non-zero (see source/main.ts, destination/main.ts). Subclasses name the phase; fields name the
 * thing that was wrong (section id, page index, byte offset, field name).
 */

export const ErrorCode = {
  BAD_MAGIC: 'MIG_ERR_BAD_MAGIC',
  VERSION: 'MIG_ERR_VERSION',
  BAD_HELLO: 'MIG_ERR_BAD_HELLO',
  TRUNCATED: 'MIG_ERR_TRUNCATED',
  OVERSIZE: 'MIG_ERR_OVERSIZE',
  FOOTER_MISMATCH: 'MIG_ERR_FOOTER_MISMATCH',
  UNKNOWN_SECTION: 'MIG_ERR_UNKNOWN_SECTION',
  UNKNOWN_SECTION_TYPE: 'MIG_ERR_UNKNOWN_SECTION_TYPE',
  UNKNOWN_COMMAND: 'MIG_ERR_UNKNOWN_COMMAND',
  UNKNOWN_MESSAGE: 'MIG_ERR_UNKNOWN_MESSAGE',
  BAD_LENGTH: 'MIG_ERR_BAD_LENGTH',
  MALFORMED: 'MIG_ERR_MALFORMED',
  CHECKSUM: 'MIG_ERR_CHECKSUM',
  DIGEST: 'MIG_ERR_DIGEST',
  CAPABILITY: 'MIG_ERR_CAPABILITY',
  CAPABILITY_MISMATCH: 'MIG_ERR_CAPABILITY_MISMATCH',
  PARAMETER: 'MIG_ERR_PARAMETER',
  CONFIG_MISMATCH: 'MIG_ERR_CONFIG_MISMATCH',
  STATE: 'MIG_ERR_STATE',
  SOCKET: 'MIG_ERR_SOCKET',
  CONNECT: 'MIG_ERR_CONNECT',
  PEER_CLOSED: 'MIG_ERR_PEER_CLOSED',
  TIMEOUT: 'MIG_ERR_TIMEOUT',
  PEER_FAILED: 'MIG_ERR_PEER_FAILED',
  CANCELLED: 'MIG_ERR_CANCELLED',
  NOT_CONVERGING: 'MIG_ERR_NOT_CONVERGING',
  PROGRESS_TIMEOUT: 'MIG_ERR_PROGRESS_TIMEOUT',
  COMPLETION_TIMEOUT: 'MIG_ERR_COMPLETION_TIMEOUT',
  REFUSED: 'MIG_ERR_REFUSED',
  AUTH: 'MIG_ERR_AUTH',
  USAGE: 'MIG_ERR_USAGE',
  DEVICE: 'MIG_ERR_DEVICE',
  INTERNAL: 'MIG_ERR_INTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface MigrationErrorFields {
  /** Section id, idstr or record name the error is about. */
  section?: string | number;
  /** Byte offset into the record or stream where the problem was found. */
  offset?: number;
  /** Page index (RAM errors). */
  page?: number;
  /** The field that was wrong, for bad hellos and parameters. */
  field?: string;
}

export class MigrationError extends Error {
  readonly code: ErrorCode;
  readonly section?: string | number;
  readonly offset?: number;
  readonly page?: number;
  readonly field?: string;

  constructor(code: ErrorCode, message: string, fields: MigrationErrorFields = {}, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.section = fields.section;
    this.offset = fields.offset;
    this.page = fields.page;
    this.field = fields.field;
  }

  /** One line for humans and logs: `MIG_ERR_X: message`. */
  toLine(): string {
    return `${this.code}: ${this.message}`;
  }
}

/** Bytes on the wire are not what the protocol allows (magic, framing, lengths, unknown types). */
export class ProtocolError extends MigrationError {}
/** A page or image checksum did not match. */
export class ChecksumError extends MigrationError {}
/** Capabilities are refused (dependency rules) or disagree between the two sides. */
export class CapabilityError extends MigrationError {}
/** A stream or section version this side cannot load. */
export class VersionError extends MigrationError {}
/** A parameter or command-line option is out of range or malformed. */
export class ParameterError extends MigrationError {}
/** A socket failed, closed early, timed out or could not connect. */
export class SocketError extends MigrationError {}

/** Turns anything thrown into a MigrationError, keeping the original as `cause`. */
export function asMigrationError(err: unknown, fallback: ErrorCode = ErrorCode.INTERNAL): MigrationError {
  if (err instanceof MigrationError) return err;
  const e = err as NodeJS.ErrnoException | undefined;
  const message = e?.message ?? String(err);
  if (e?.code === 'ECONNREFUSED' || e?.code === 'EHOSTUNREACH' || e?.code === 'ENETUNREACH') {
    return new SocketError(
      ErrorCode.CONNECT,
      `connection refused or unreachable (${e.code}): ${message}`,
      {},
      { cause: err },
    );
  }
  if (e?.code === 'ECONNRESET' || e?.code === 'EPIPE') {
    return new SocketError(
      ErrorCode.PEER_CLOSED,
      `peer reset the connection (${e.code})`,
      {},
      { cause: err },
    );
  }
  if (e?.code === 'ETIMEDOUT') {
    return new SocketError(ErrorCode.TIMEOUT, `connection timed out (${e.code})`, {}, { cause: err });
  }
  return new MigrationError(fallback, message, {}, { cause: err });
}
