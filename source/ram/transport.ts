/**
 * How the RAM save handler (ram-save.ts) moves a round's pages: on the main channel, inside RAM
 * sections (main-channel.ts), or on page channels owned by worker threads (page-channels.ts). The
 * handler owns the dirty log, the rounds and the counters; a transport only sends what a round lists
 * (list[0..count) in the shared list) and says when it is done.
 *
 * A round's life: startRound → pump (while the guest runs) until it returns true → next round. At
 * the switchover: closeRound (an open round is put back or finished), then one last startRound with
 * the guest stopped and finish (send it all; the destination is told what to wait for).
 *
 * Shaped for what comes next: postcopy will add urgent single-page sends ahead of the rounds (a
 * transport builds batches from any list), and the convergence policies read measuredBandwidth().
 */
import type { GuestMemory } from '../../shared/guest/memory.js';
import type { SaveContext, SectionSink } from '../../shared/handlers.js';
import type { RpMessage } from '../../shared/protocol/return-path-codec.js';
import type { NativeHash } from '../../shared/ram/native-hash.js';
import type { ChecksumBackend } from '../../shared/ram/page-batch-builder.js';
import { BATCH_PAGES } from '../../shared/ram/page-channel.js';

export interface RoundStats {
  /** Pages sent, of which zero pages (sent without data). */
  pages: number;
  zero: number;
  /** Bytes of batches (headers, descriptors, data). */
  bytes: number;
  /** The guest was stopped while they were sent (downtime bytes). */
  guestStopped: boolean;
}

export interface PageTransport {
  readonly kind: 'main-channel' | 'page-channels';
  readonly backend: ChecksumBackend;
  attach(ctx: SaveContext): void;
  /** RAM records the destination needs at setup (sent as PARTs right after the START section). */
  setup(): Promise<Buffer[]>;
  /** A round: list[0..count) of the shared list. May wait (page channels: until they are connected). */
  startRound(round: number, count: number, guestStopped: boolean): Promise<void>;
  /** Moves the open round along for up to `ms`; true once it is done (sent, and confirmed where rounds are). */
  pump(sink: SectionSink, ms: number): Promise<boolean>;
  /** Pages of the open round not yet on their way (still pending). */
  unsentPages(): number;
  /**
   * Before the final round: an open round is ended, its unsent pages handed to `requeue` (main
   * channel) or the round waited for (page channels, bounded).
   */
  closeRound(requeue: (from: number, to: number) => void): Promise<void>;
  /** Sends the final round (guest stopped) entirely, or hands it over and names it (FINAL_ROUND). */
  finish(sink: SectionSink): Promise<void>;
  /** Resolves once the checksums of every page sent are recorded (the image digest needs them). */
  handedOver(): Promise<void>;
  /** False while a round is on its way unconfirmed. */
  settled(): boolean;
  sideChannelBytes(): number;
  refill(bytesPerWindow: number): void;
  measuredBandwidth(): number | null;
  onPeerMessage(m: RpMessage): void;
  close(): void;
}

/** Counts what a transport sent, per round, for the handler's counters. */
export type RoundListener = (stats: RoundStats) => void;

/** What the RAM handler shares with its transport. */
export interface TransportTables {
  memory: GuestMemory;
  /** The round's page list (SharedArrayBuffer-backed: page workers read it). */
  list: Int32Array;
  /** Checksum of the last copy sent of each page (SharedArrayBuffer-backed: page workers write it). */
  sent: BigUint64Array;
  native: NativeHash | null;
  /** Called as pages go out (per batch, or per page-channel round). */
  onSent: RoundListener;
}

/**
 * Pages per batch: 256 (1 MiB of 4 KiB pages), fewer when max-bandwidth allows less per 100 ms
 * window, so a 1 MiB/s limit is 10 small batches a second rather than one 1 MiB burst (min 16).
 */
export function batchPagesFor(maxBandwidth: number, pageSize: number): number {
  if (maxBandwidth <= 0) return BATCH_PAGES;
  return Math.max(16, Math.min(BATCH_PAGES, Math.floor(maxBandwidth / 10 / pageSize)));
}
