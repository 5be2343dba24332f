/**
 * Section dispatch (QEMU qemu_loadvm_section_start_full / part_end): START and FULL find the handler by
 * (idstr, instance) and check the version; PART and END find it by the section id the source gave at
 * START. Also owns the switchover-ack count (QEMU switchover_ack_pending_num).
 */
import { ErrorCode, ProtocolError, VersionError } from '../shared/errors.js';
import type { LoadContext, LoadHandlers } from '../shared/handlers.js';
import type { StreamRecord } from '../shared/protocol/stream-codec.js';

type SectionRecord = Extract<StreamRecord, { type: 'start' | 'full' | 'part' | 'end' }>;

export class LoadVm {
  readonly #handlers = new Map<string, LoadHandlers>();
  readonly #bySection = new Map<number, { handler: LoadHandlers; versionId: number }>();
  #ackPending = 0;
  #approved = new Set<string>();
  /** Which handlers still hold the switchover (for the report and LOAD_COST). */
  readonly waiting = new Set<string>();

  constructor(handlers: LoadHandlers[]) {
    for (const h of handlers) this.#handlers.set(key(h.idstr, h.instanceId), h);
  }

  get handlers(): LoadHandlers[] {
    return [...this.#handlers.values()];
  }

  /** After the configuration: load setup, then count handlers that need the ACK (if the capability is on). */
  setup(ctx: LoadContext, switchoverAck: boolean): number {
    for (const h of this.#handlers.values()) h.loadSetup?.(ctx);
    if (!switchoverAck) return 0;
    for (const h of this.#handlers.values()) {
      if (h.switchoverAckNeeded?.()) {
        this.#ackPending++;
        this.waiting.add(h.idstr);
      }
    }
    return this.#ackPending;
  }

  get ackPending(): number {
    return this.#ackPending;
  }

  /** QEMU qemu_loadvm_approve_switchover: approving at zero is an error. True when the count reaches 0. */
  approve(idstr: string): boolean {
    if (this.#ackPending === 0 || this.#approved.has(idstr)) {
      throw new ProtocolError(
        ErrorCode.STATE,
        `switchover approval from '${idstr}' with no approval pending`,
        { section: idstr },
      );
    }
    this.#approved.add(idstr);
    this.waiting.delete(idstr);
    this.#ackPending--;
    return this.#ackPending === 0;
  }

  async load(rec: SectionRecord): Promise<void> {
    if (rec.type === 'start' || rec.type === 'full') {
      const handler = this.#handlers.get(key(rec.idstr, rec.instanceId));
      if (!handler) {
        throw new ProtocolError(
          ErrorCode.UNKNOWN_SECTION,
          `unknown section '${rec.idstr}' instance ${rec.instanceId}`,
          { section: rec.idstr },
        );
      }
      if (rec.versionId > handler.version || rec.versionId < handler.minVersion) {
        throw new VersionError(
          ErrorCode.VERSION,
          `section '${rec.idstr}' version ${rec.versionId} is not loadable here (supported ${handler.minVersion}…${handler.version})`,
          { section: rec.idstr },
        );
      }
      if (rec.type === 'start') this.#bySection.set(rec.sectionId, { handler, versionId: rec.versionId });
      await handler.loadState(rec.type, rec.payload, rec.versionId);
      return;
    }
    const entry = this.#bySection.get(rec.sectionId);
    if (!entry)
      throw new ProtocolError(
        ErrorCode.UNKNOWN_SECTION,
        `${rec.type.toUpperCase()} for section id ${rec.sectionId}, which was never started`,
        { section: rec.sectionId },
      );
    await entry.handler.loadState(rec.type, rec.payload, entry.versionId);
  }

  cleanup(): void {
    for (const h of this.#handlers.values()) h.loadCleanup?.();
  }
}

function key(idstr: string, instance: number): string {
  return `${idstr}\u0000${instance}`;
}
