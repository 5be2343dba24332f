/**
 * QMP error replies: `{"error": {"class": CLASS, "desc": TEXT}}`. The classes are QEMU's QapiErrorClass
 * (qapi/error.json); a command handler throws a QmpError to choose both, anything else it throws is
 * reported as GenericError with its message (see server.ts).
 */

export type QmpErrorClass =
  | 'GenericError'
  | 'CommandNotFound'
  | 'DeviceNotActive'
  | 'DeviceNotFound'
  | 'KVMMissingCap';

export class QmpError extends Error {
  constructor(
    readonly errorClass: QmpErrorClass,
    desc: string,
  ) {
    super(desc);
    this.name = 'QmpError';
  }

  /** The reply's `desc` (the same text as `message`). */
  get desc(): string {
    return this.message;
  }
}
