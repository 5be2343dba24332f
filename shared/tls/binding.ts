/**
 * Channel binding: the hello of every channel proves it belongs to the migration whose MAIN channel the
 * destination accepted. The 32-byte auth tag of the hello (shared/protocol/hello.ts) carries the proof.
 *
 * With TLS (x509 or PSK):
 *   K   = TLS-Exporter(main session, "EXPORTER-switchover-migration", context = migration id, 32)
 *   E_c = TLS-Exporter(session of channel c, "EXPORTER-switchover-channel", context = empty, 32)
 *         (RFC 5705 / RFC 8446 §7.5: both ends of a session derive the same bytes, nobody else can)
 *   tag = HMAC-SHA256(K, hello[0..24) ‖ E_c)        for every channel c, MAIN included (E_main from main)
 *   K is known only to the two ends of the main TLS session, so no other TLS client — even one holding
 *   valid credentials — can attach a channel to this migration; E_c makes a tag valid on one TLS session
 *   only, so a hello cannot be replayed on another connection even by someone who saw it in clear.
 * Without TLS:
 *   the source draws K at random; the MAIN hello carries K itself as its tag; later channels carry
 *   HMAC-SHA256(K, hello[0..24)). This only stops peers that can connect but cannot read the traffic
 *   (other local users on loopback); it is why plaintext is loopback-only unless --insecure.
 *
 * hello[0..24) = magic, version, kind, index, migration id: the tag covers every field it travels with.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type net from 'node:net';
import tls from 'node:tls';
import { ErrorCode, MigrationError } from '../errors.js';
import { AUTH_TAG_LENGTH, type ChannelKind } from '../protocol/constants.js';
import { encodeHello } from '../protocol/hello.js';

export const MIGRATION_KEY_LABEL = 'EXPORTER-switchover-migration';
export const CHANNEL_LABEL = 'EXPORTER-switchover-channel';
export const HELLO_FIELDS_LENGTH = 24;
const NO_CONTEXT = Buffer.alloc(0);

export interface HelloFields {
  kind: ChannelKind;
  index?: number;
  migrationId: Buffer;
}

export function isTls(socket: net.Socket): socket is tls.TLSSocket {
  return socket instanceof tls.TLSSocket;
}

/** The first 24 bytes of the hello: everything but the tag. */
export function helloFields(h: HelloFields): Buffer {
  return encodeHello({ kind: h.kind, index: h.index ?? 0, migrationId: h.migrationId }).subarray(
    0,
    HELLO_FIELDS_LENGTH,
  );
}

/** K of a migration from its main TLS session (both ends compute the same bytes). */
export function migrationKey(main: tls.TLSSocket, migrationId: Buffer): Buffer {
  return main.exportKeyingMaterial(AUTH_TAG_LENGTH, MIGRATION_KEY_LABEL, migrationId);
}

/** The tag channel `socket` must carry in its hello, given the migration key K. */
export function channelTag(key: Buffer | Uint8Array, h: HelloFields, socket: net.Socket): Buffer {
  const mac = createHmac('sha256', key).update(helloFields(h));
  if (isTls(socket)) mac.update(socket.exportKeyingMaterial(AUTH_TAG_LENGTH, CHANNEL_LABEL, NO_CONTEXT));
  return mac.digest();
}

export function tagsEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * Per-migration binding state. The source creates one per migration attempt: the MAIN connection
 * sets the key, later channels use it. Page-channel workers receive `key` (32 bytes) as workerData.
 */
export class ChannelBinding {
  key: Buffer | null = null;

  /** Source side of the MAIN channel: fixes K and returns the MAIN hello's tag. */
  mainTag(socket: net.Socket, h: HelloFields): Buffer {
    if (isTls(socket)) {
      this.key = migrationKey(socket, h.migrationId);
      return channelTag(this.key, h, socket);
    }
    this.key = randomBytes(AUTH_TAG_LENGTH);
    return Buffer.from(this.key);
  }

  /** The tag for any channel after MAIN. */
  tag(socket: net.Socket, h: HelloFields): Buffer {
    if (!this.key)
      throw new MigrationError(
        ErrorCode.INTERNAL,
        'channel binding: the main channel must be connected first',
      );
    return channelTag(this.key, h, socket);
  }

  /**
   * Destination side of a MAIN hello: the migration key if the hello's tag is right, else null.
   * Plaintext: the tag is K (any value; an all-zero K is what a raw test client sends).
   */
  static acceptMain(socket: net.Socket, h: HelloFields & { authTag: Buffer }): Buffer | null {
    if (!isTls(socket)) return Buffer.from(h.authTag);
    const key = migrationKey(socket, h.migrationId);
    return tagsEqual(channelTag(key, h, socket), h.authTag) ? key : null;
  }

  /** Does a later channel's hello carry the right tag for migration key K? */
  static verify(key: Buffer | Uint8Array, socket: net.Socket, h: HelloFields & { authTag: Buffer }): boolean {
    return tagsEqual(channelTag(key, h, socket), h.authTag);
  }
}
