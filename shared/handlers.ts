/**
 * The handler table every migratable thing implements, modeled on QEMU's SaveVMHandlers
 * (include/migration/register.h). RAM is one handler; devices are others. All methods run on the
 * process's main thread (event loop); long work must yield (return 'more') rather than block.
 *
 * The orchestrators (source/migration.ts, destination/incoming.ts) only ever see this interface. A
 * handler that moves its data outside the main channel (RAM on page channels) says so through the
 * optional members below (side-channel bytes, bandwidth, in-flight data, peer messages) and is given
 * what it needs to do that safely (a context with the connection, a deadline and a cancel signal).
 */
import type { MigrationError } from './errors.js';
import type { RpMessage } from './protocol/return-path-codec.js';
import type { SectionPayload } from './protocol/section-payload.js';
import type { TlsConfig } from './tls/config.js';
import type { Tracer } from './trace.js';

export interface Pending {
  /** Bytes that must be sent before the guest can run on the destination. */
  mustPrecopy: number;
  /** Bytes that could move after switchover (postcopy; always 0 here). */
  canPostcopy: number;
}

/** Where a handler writes its section payloads; the savevm layer frames them (START/PART/END/FULL). */
export interface SectionSink {
  /**
   * Sends one section payload (gather list). Resolves when the socket accepted it (backpressure).
   * The returned `flushed` promise (when given) resolves once the bytes left Node's buffer, after
   * which the payload's memory may be reused.
   */
  emit(payload: Buffer | Buffer[]): Promise<void | { flushed: Promise<void> }>;
  /** True once the current 100 ms window's byte budget is spent. */
  rateLimited(): boolean;
}

/** How a side channel (page channel) proves it belongs to this migration: see shared/tls/binding.ts. */
export interface ChannelSecurity {
  tls: TlsConfig | null;
  /** The migration key K (32 bytes). */
  key: Uint8Array;
  /** Source: the name the destination's certificate must carry. */
  host?: string;
}

/** The source's main connection, as a handler with side channels needs to know it. */
export interface SourceLink {
  /** Our address on the main connection: side-channel listeners bind here. */
  localAddress: string;
  /** The destination's address on the main connection: side channels are accepted only from it. */
  peerAddress: string;
  migrationId: Buffer;
  security: ChannelSecurity;
}

/** What a save handler may use besides its sink; given once, before saveSetup. */
export interface SaveContext {
  link: SourceLink;
  /** Aborted when the migration fails or is cancelled: every wait of the handler must end then. */
  signal: AbortSignal;
  /** No progress for this long is a failure (ms; 0 = never). */
  stallTimeoutMs: number;
  /** The handler's own asynchronous failure (a side channel died): fails the migration. */
  fail(e: MigrationError): void;
  /** A line for the operator (e.g. a refused stranger); handlers rate-limit what they report. */
  warn(message: string): void;
  /** The migration's trace (named events, shared/trace.ts). */
  tracer: Tracer;
}

export interface SaveHandlers {
  /** Identity: (idstr, instanceId) must be unique; version is the stream version of this section. */
  readonly idstr: string;
  readonly instanceId: number;
  readonly version: number;
  /** Iterative handlers get START/PART/END sections; others only one FULL section at switchover. */
  readonly iterative: boolean;
  /** Before setup: the connection and the migration's deadline and cancel signal. */
  attach?(ctx: SaveContext): void;
  /** Setup payloads (iterative only): the first goes out as START, any further ones as PART. */
  saveSetup?(sink: SectionSink): Promise<void>;
  /** One turn of sending while the guest runs: 'done' when nothing is pending right now. */
  saveIterate?(sink: SectionSink): Promise<'more' | 'done'>;
  /** Guest stopped: send everything left (END for iterative, the FULL payload otherwise). */
  saveComplete(sink: SectionSink): Promise<void>;
  /** Cheap pending estimate (no dirty-log sync). */
  pendingEstimate?(): Pending;
  /** Exact pending (may sync the dirty log). Called only when the estimate is under the threshold. */
  pendingExact?(): Pending;
  /**
   * False while data the handler sent is still on its way unconfirmed (a page-channel round): a
   * switchover decided now would wait for it inside the downtime. Absent = always settled.
   */
  settled?(): boolean;
  /** Bytes sent outside the main channel so far (counted in `transferred` and against max-bandwidth). */
  sideChannelBytes?(): number;
  /** A new 100 ms rate window: the handler may send `bytes` outside the main channel in it (0 = no limit). */
  refillSideChannels?(bytes: number): void;
  /** The rate its own path measured (bytes/ms), or null: the switchover rule prefers it. */
  measuredBandwidth?(): number | null;
  /** A return-path message addressed to this handler (e.g. ROUND_DONE). */
  onPeerMessage?(m: RpMessage): void;
  /** Release resources after completion or failure. */
  saveCleanup?(): void;
}

/** The destination's main connection, as a loader with side channels needs to know it. */
export interface DestinationLink {
  /** The source's address on the main connection. */
  peerAddress: string;
  /**
   * Our address on the main connection: side channels are opened from it, so the source sees them
   * come from the address it accepts them from, even on a host with several addresses.
   */
  localAddress: string;
  migrationId: Buffer;
  security: ChannelSecurity;
}

export interface LoadContext {
  /** Called by a handler that needed switchover-ack once it is ready (QEMU qemu_loadvm_approve_switchover). */
  approveSwitchover(idstr: string): void;
  /** Sends a message to the source on the return path (dropped when there is none). */
  sendToSource(m: RpMessage): void;
  /** The handler's own asynchronous failure: fails the migration. */
  fail(e: MigrationError): void;
  link: DestinationLink;
  /** No progress for this long is a failure (ms; 0 = never). */
  stallTimeoutMs: number;
  /** Aborted when the migration fails: every wait must end then. */
  signal: AbortSignal;
}

export interface LoadHandlers {
  readonly idstr: string;
  readonly instanceId: number;
  /** Highest section version this side loads; a newer stream version is refused. */
  readonly version: number;
  /** Oldest section version this side still loads. */
  readonly minVersion: number;
  loadSetup?(ctx: LoadContext): void;
  /**
   * One section payload (START, PART, END or FULL). May be async (resource preparation, or RAM
   * waiting for page channels): nothing after this section loads until it resolves.
   */
  loadState(
    kind: 'start' | 'part' | 'end' | 'full',
    payload: SectionPayload,
    versionId: number,
  ): void | Promise<void>;
  loadCleanup?(): void;
  /** Destination only: does this handler hold the switchover until it approves? */
  switchoverAckNeeded?(): boolean;
}
