/**
 * Wire constants for every channel. Byte layouts are drawn in the codec files and in docs/PROTOCOL.md.
 * All integers on the wire are big-endian, as in QEMU. Zero is INVALID wherever a code table exists.
 */

/** Channel hello magic, "SWOV". First 4 bytes of every TCP connection between the two sides. */
export const HELLO_MAGIC = 0x53574f56;
/** Protocol version carried in the hello; both sides must speak the same one. */
export const PROTOCOL_VERSION = 2;
/** Fixed hello size: magic 4, version 2, kind 1, index 1, migration id 16, auth tag 32. */
export const HELLO_LENGTH = 56;
export const MIGRATION_ID_LENGTH = 16;
export const AUTH_TAG_LENGTH = 32;

export const ChannelKind = {
  INVALID: 0,
  /** Sectioned migration stream, source → destination. */
  MAIN: 1,
  /** Destination → source messages (SHUT, PONG, SWITCHOVER_ACK, ...). Opened by the source. */
  RETURN_PATH: 2,
  /** Page batches (multifd analog). Opened by a destination page worker to a port the source announces. */
  PAGE: 3,
} as const;
export type ChannelKind = (typeof ChannelKind)[keyof typeof ChannelKind];

/** Stream file magic, "SWST" (ours, not QEMU's "QEVM": our RAM and device payloads are not QEMU's). */
export const STREAM_MAGIC = 0x53575354;
/**
 * Stream version. QEMU is at 3. 2: page-channel ports moved from a COMMAND into the RAM section
 * (RamRecord.PAGE_CHANNELS), the ROUND_SYNC command is gone, page channels end rounds with ROUND_END.
 */
export const STREAM_VERSION = 2;

/** Section type bytes: QEMU's values (savevm.h). */
export const SectionType = {
  EOF: 0x00,
  START: 0x01,
  PART: 0x02,
  END: 0x03,
  FULL: 0x04,
  VMDESCRIPTION: 0x06,
  CONFIGURATION: 0x07,
  COMMAND: 0x08,
  FOOTER: 0x7e,
} as const;
export type SectionType = (typeof SectionType)[keyof typeof SectionType];

/** In-band commands inside a COMMAND record. QEMU's numbers where QEMU has the command. */
export const Command = {
  INVALID: 0,
  /** Destination opens its return-path side; with switchover-ack and no device needing it, ACKs here. */
  OPEN_RETURN_PATH: 1,
  /** be32 value; destination answers PONG with the same value. */
  PING: 2,
  /** Source stopped the guest; END and FULL sections follow. */
  SWITCHOVER_START: 11,
} as const;
export type Command = (typeof Command)[keyof typeof Command];

/** Return-path message types. QEMU's numbers where QEMU has the message; ours from 0x20. */
export const RpType = {
  INVALID: 0,
  /** be32 status: 0 ok (guest runs on the destination), nonzero failed. */
  SHUT: 1,
  /** be32 echo of a PING value. */
  PONG: 2,
  /** No payload: destination is ready for the source to stop the guest. */
  SWITCHOVER_ACK: 7,
  /** Ours: msgpack, destination checkpoints and integrity after the guest resumed. */
  RESUMED: 0x20,
  /** Ours: msgpack, destination's measured load cost (bytes still to prepare, ms per byte). */
  LOAD_COST: 0x21,
  /** Ours: msgpack {code, message}; the destination's reason for failing. Also sent on the main socket. */
  ERROR: 0x22,
  /** Ours: be32 round; all page channels of that round are placed and verified. */
  ROUND_DONE: 0x23,
  /** Ours: msgpack {value, t, boot}; clock probe (source) and its answer (destination monotonic ms). */
  TIME: 0x24,
  /**
   * Ours: be16 protocol version; the destination's answer to a MAIN hello, on the main socket's
   * reverse direction. The source sends nothing of the guest before it (protocol 2).
   */
  ACCEPT: 0x25,
} as const;
export type RpType = (typeof RpType)[keyof typeof RpType];

/** Section payloads larger than this are refused before any allocation (hostile length fields). */
export const MAX_SECTION_PAYLOAD = 64 * 1024 * 1024;
/** COMMAND payload cap (QEMU's commands are small). */
export const MAX_COMMAND_PAYLOAD = 4096;
/** Configuration and VMDESCRIPTION body cap. */
export const MAX_CONFIG_PAYLOAD = 1024 * 1024;
/** idstr cap, as QEMU's 256-byte buffer. */
export const MAX_IDSTR = 255;

/** RAM page batch kinds (first byte of a RAM section payload). */
export const RamRecord = {
  INVALID: 0,
  /** START payload: RAM geometry (msgpack {pageSize, pageCount, blocks}). */
  GEOMETRY: 1,
  /** Page batch: descriptors + data. */
  PAGES: 2,
  /** End of this RAM chunk (QEMU RAM_SAVE_FLAG_EOS analog). */
  EOS: 3,
  /** Page channels: the number of the last round, sent once in the completion stage before EOS. */
  FINAL_ROUND: 4,
  /** Page channels only: every batch of this round on this channel has been sent (page-batch.ts). */
  ROUND_END: 5,
  /** RAM setup (a PART right after START): the source's page-channel listeners (ram-records.ts). */
  PAGE_CHANNELS: 6,
} as const;
export type RamRecord = (typeof RamRecord)[keyof typeof RamRecord];

/** Page descriptor flag bits. */
export const PageFlag = {
  /** Page is all zero; no data follows for it; checksum field must be 0. */
  ZERO: 0x01,
} as const;

/** Page batch header and descriptor sizes (see shared/protocol/ram-records.ts). */
export const PAGE_BATCH_HEADER = 16;
export const PAGE_DESCRIPTOR = 16;
/** Most pages one batch may carry (a hostile-length cap; the RAM saver sends 256-page, 1 MiB batches). */
export const MAX_BATCH_PAGES = 4096;
