/**
 * The destination's answer to the MAIN hello (protocol 2): ACCEPT with its protocol version, or one
 * ERROR frame saying why not. The source sends nothing of the guest (configuration, pages) until
 * ACCEPT arrives, so pointing it at the wrong port (a web server, a proxy, an old destination) costs
 * one 56-byte hello and ends with a line that says what answered instead.
 */
import type { Socket } from 'node:net';
import { ErrorCode, MigrationError, ProtocolError, SocketError } from '../shared/errors.js';
import { PROTOCOL_VERSION, RpType } from '../shared/protocol/constants.js';
import { decodeRpPayload, RP_HEADER_LENGTH } from '../shared/protocol/return-path-codec.js';

/** What is shown of an answer that is not ours. */
const PREFIX_SHOWN = 64;
/** An ERROR frame's payload is at most this (its return-path cap). */
const ERROR_MAX = 0xffff;

export function awaitAccept(socket: Socket, peer: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let got: Buffer = Buffer.alloc(0);
    const notOurs = (what: string) =>
      new ProtocolError(ErrorCode.BAD_HELLO, `${peer} is not a switchover destination: ${what}`);
    const timer = setTimeout(
      () =>
        finish(
          got.length === 0
            ? new SocketError(
                ErrorCode.TIMEOUT,
                `${peer} is not a switchover destination: no answer to the main hello within ${timeoutMs} ms (a destination older than protocol ${PROTOCOL_VERSION} does not answer)`,
              )
            : notOurs(`it answered ${printable(got)}`),
        ),
      timeoutMs,
    );
    const onData = (chunk: Buffer) => {
      got = got.length === 0 ? chunk : Buffer.concat([got, chunk]);
      try {
        const verdict = decide(got);
        if (verdict === 'more') return;
        finish(verdict.error, verdict.rest);
      } catch (err) {
        finish(err instanceof MigrationError ? err : notOurs(`it answered ${printable(got)}`));
      }
    };
    const decide = (b: Buffer): 'more' | { error: MigrationError | null; rest?: Buffer } => {
      if (b.length < RP_HEADER_LENGTH)
        return looksLikeOurs(b) ? 'more' : { error: notOurs(`it answered ${printable(b)}`) };
      const type = b.readUInt16BE(0);
      const len = b.readUInt16BE(2);
      if (type === RpType.ACCEPT && len === 2) {
        if (b.length < RP_HEADER_LENGTH + 2) return 'more';
        const version = b.readUInt16BE(RP_HEADER_LENGTH);
        if (version !== PROTOCOL_VERSION)
          return {
            error: new ProtocolError(
              ErrorCode.VERSION,
              `${peer} speaks protocol ${version}, this source speaks ${PROTOCOL_VERSION}: run the same switchover version on both sides`,
            ),
          };
        return { error: null, rest: b.subarray(RP_HEADER_LENGTH + 2) };
      }
      if (type === RpType.ERROR && len <= ERROR_MAX) {
        if (b.length < RP_HEADER_LENGTH + len) return 'more';
        const m = decodeRpPayload(type, b.subarray(RP_HEADER_LENGTH, RP_HEADER_LENGTH + len));
        if (m.type !== 'error') return { error: notOurs(`it answered ${printable(b)}`) };
        // the destination's own code (REFUSED, AUTH, VERSION) says what to fix; an unknown one is PEER_FAILED
        const known = (Object.values(ErrorCode) as string[]).includes(m.code);
        return {
          error: new MigrationError(
            known ? (m.code as ErrorCode) : ErrorCode.PEER_FAILED,
            `${peer} refused the migration: ${m.code}: ${m.message}`,
          ),
        };
      }
      return { error: notOurs(`it answered ${printable(b)}`) };
    };
    const onClose = () =>
      finish(
        got.length === 0
          ? notOurs(
              `it closed the connection without answering the main hello (a destination older than protocol ${PROTOCOL_VERSION} does not answer)`,
            )
          : notOurs(`it answered ${printable(got)} and closed`),
      );
    const onError = () => onClose();
    function finish(err: MigrationError | null, rest?: Buffer): void {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.off('error', onError);
      socket.pause();
      if (err) {
        socket.destroy();
        reject(err);
        return;
      }
      if (rest && rest.length > 0) socket.unshift(rest);
      resolve();
    }
    socket.on('data', onData);
    socket.on('close', onClose);
    socket.on('error', onError);
    socket.resume();
  });
}

/** Could these first bytes still become ACCEPT or ERROR (types 0x0025 / 0x0022)? */
function looksLikeOurs(b: Buffer): boolean {
  return b[0] === 0 && (b.length < 2 || b[1] === RpType.ACCEPT || b[1] === RpType.ERROR);
}

/** The first bytes of a foreign answer, non-printable bytes as '.', quoted. */
export function printable(b: Buffer): string {
  const head = b
    .subarray(0, PREFIX_SHOWN)
    .toString('latin1')
    .replace(/[^\x20-\x7e]/g, '.');
  return `${JSON.stringify(head)}${b.length > PREFIX_SHOWN ? '…' : ''} (${b.length} bytes)`;
}
