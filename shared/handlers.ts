/**
 * The handler table every migratable thing implements, modeled on QEMU's SaveVMHandlers
 * (include/migration/register.h). RAM is one handler; devices are others. All methods run on the
 * process's main thread (event loop); long work must yield (return 'more') rather than block.
 */

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

export interface SaveHandlers {
  /** Identity: (idstr, instanceId) must be unique; version is the stream version of this section. */
  readonly idstr: string;
  readonly instanceId: number;
  readonly version: number;
  /** Iterative handlers get START/PART/END sections; others only one FULL section at switchover. */
  readonly iterative: boolean;
  /** START payload (iterative only). */
  saveSetup?(sink: SectionSink): Promise<void>;
  /** One turn of sending while the guest runs: 'done' when nothing is pending right now. */
  saveIterate?(sink: SectionSink): Promise<'more' | 'done'>;
  /** Guest stopped: send everything left (END for iterative, the FULL payload otherwise). */
  saveComplete(sink: SectionSink): Promise<void>;
  /** Cheap pending estimate (no dirty-log sync). */
  pendingEstimate?(): Pending;
  /** Exact pending (may sync the dirty log). Called only when the estimate is under the threshold. */
  pendingExact?(): Pending;
  /** Release resources after completion or failure. */
  saveCleanup?(): void;
}

export interface LoadContext {
  /** Called by a handler that needed switchover-ack once it is ready (QEMU qemu_loadvm_approve_switchover). */
  approveSwitchover(idstr: string): void;
}

export interface LoadHandlers {
  readonly idstr: string;
  readonly instanceId: number;
  /** Highest section version this side loads; a newer stream version is refused. */
  readonly version: number;
  /** Oldest section version this side still loads. */
  readonly minVersion: number;
  loadSetup?(ctx: LoadContext): void;
  /** One section payload (START, PART, END or FULL). May be async (resource preparation). */
  loadState(
    kind: 'start' | 'part' | 'end' | 'full',
    payload: Buffer,
    versionId: number,
  ): void | Promise<void>;
  loadCleanup?(): void;
  /** Destination only: does this handler hold the switchover until it approves? */
  switchoverAckNeeded?(): boolean;
}
