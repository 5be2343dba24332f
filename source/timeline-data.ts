/** Builds the timeline chart's data from a migration's trace records (ms since the migration began). */
import type { TimelineData } from '../shared/cli/timeline.js';
import { TraceEvent, type TraceRecord } from '../shared/trace.js';

export function timelineData(records: TraceRecord[], pageSize: number, title: string): TimelineData {
  const t0 = records.find((r) => r.event === TraceEvent.STATE && r.to === 'setup')?.t ?? records[0]?.t ?? 0;
  const rel = (t: number) => Math.round((t - t0) * 100) / 100;
  const samples = records
    .filter((r) => r.event === TraceEvent.ITERATION)
    .map((r) => ({
      t: rel(r.t),
      remaining: Number(r.remaining),
      transferredRate: (Number(r.mbps) * 1e6) / 8,
      dirtyRate: Number(r.dirtyPagesRate ?? 0) * pageSize,
    }));
  const checkpoint = (name: string) =>
    records.find((r) => r.event === TraceEvent.CHECKPOINT && r.name === name)?.t;
  const start = checkpoint('src-downtime-start');
  const end = checkpoint('src-downtime-end');
  const ack = records.find((r) => r.event === TraceEvent.SWITCHOVER_ACK)?.t;
  // the wait for the ACK: from the first time the remainder fitted the limit to the ACK
  const fitted = records.find((r) => r.event === TraceEvent.THRESHOLD_MET)?.t;
  const noProgress = records.find((r) => r.event === TraceEvent.NO_PROGRESS)?.t;
  return {
    title,
    samples,
    iterations: records.filter((r) => r.event === TraceEvent.DIRTY_SYNC).map((r) => rel(r.t)),
    ackAt: ack === undefined ? undefined : rel(ack),
    ackWait:
      ack !== undefined && fitted !== undefined && fitted < ack
        ? { start: rel(fitted), end: rel(ack) }
        : undefined,
    noProgressAt: noProgress === undefined ? undefined : rel(noProgress),
    decisions: records
      .filter((r) => r.event === TraceEvent.CONVERGENCE)
      .map((r) => ({ t: rel(r.t), label: decisionLabel(r) })),
    downtime: start !== undefined && end !== undefined ? { start: rel(start), end: rel(end) } : undefined,
  };
}

/** A decision in a few characters: "throttle 30 %", "dirty limit 1 MB/s", "downtime 600 ms", "pause". */
function decisionLabel(r: TraceRecord): string {
  switch (r.action) {
    case 'cpu-throttle':
      return `throttle ${r.value} %`;
    case 'dirty-limit':
      return `dirty limit ${r.value} MB/s`;
    case 'downtime-limit':
      return `downtime ${r.value} ms`;
    default:
      return `${String(r.kind)}: ${String(r.action)}`;
  }
}
