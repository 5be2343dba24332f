/**
 * Named trace events (QEMU trace-events analog). Declared once here; emitted as structured records
 * on a diagnostics_channel, kept in memory for the report/timeline, and printed as JSON lines on
 * stderr when SWITCHOVER_TRACE=1. Integration tests assert the ordered sequence.
 */
import diagnostics_channel from 'node:diagnostics_channel';

export const TraceEvent = {
  STATE: 'mig:state',
  SECTION_START: 'mig:section:start',
  ITERATION: 'mig:iteration',
  DIRTY_SYNC: 'mig:dirty-sync',
  THRESHOLD_MET: 'mig:threshold-met',
  RP_RECV: 'mig:rp:recv',
  RP_SEND: 'mig:rp:send',
  SWITCHOVER_ACK: 'mig:switchover-ack',
  CHECKPOINT: 'mig:checkpoint',
  ERROR: 'mig:error',
  LOAD: 'mig:load',
  /** Source: the page-channel ports announced to the destination ({host, ports}). */
  PAGE_CHANNELS: 'mig:page-channels',
  /** Source: a connection to a page port that was not the destination's channel ({remote, reason}). */
  STRANGER: 'mig:stranger',
  /** Source: no new low in `remaining` for the warning time ({lowest, lowestAtMs, afterMs}). */
  NO_PROGRESS: 'mig:no-progress',
  /** A convergence decision: a throttle step, a downtime step, a timeout's action. */
  CONVERGENCE: 'mig:convergence',
} as const;
export type TraceEvent = (typeof TraceEvent)[keyof typeof TraceEvent];

export interface TraceRecord {
  event: TraceEvent;
  /** Monotonic ms (process.hrtime, shared by processes on one host). */
  t: number;
  [field: string]: unknown;
}

const channel = diagnostics_channel.channel('switchover:trace');
const toStderr = process.env.SWITCHOVER_TRACE === '1';

export class Tracer {
  readonly records: TraceRecord[] = [];
  constructor(readonly role: 'source' | 'destination') {}

  emit(event: TraceEvent, fields: Record<string, unknown> = {}): TraceRecord {
    const rec: TraceRecord = { event, t: Number(process.hrtime.bigint()) / 1e6, ...fields };
    this.records.push(rec);
    if (channel.hasSubscribers) channel.publish({ role: this.role, ...rec });
    if (toStderr) process.stderr.write(`${JSON.stringify({ role: this.role, ...rec })}\n`);
    return rec;
  }
}
