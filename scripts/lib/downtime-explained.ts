/**
 * The three downtimes of a pair run on one clock. The source's (its stop to the destination's
 * SHUT), the guest's (its last heartbeat on the source to its first on the destination) and the
 * service's (the outside probe's last answer from the source guest to its first from the
 * destination guest) measure different edges of the same handover; on one host every process reads
 * the same monotonic clock, so their edges can be put on one line, in ms from the source's stop.
 * Each consecutive pair of events is a part; the parts between two edges add up to that downtime.
 */

import { reportField } from '../../shared/report-keys.js';

type Json = Record<string, unknown>;

export interface DowntimeEvent {
  event: string;
  /** ms from src-downtime-start (negative: before the source began its stop). */
  at: number;
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/** The handover's events in time order, or undefined when the clocks are not one (or it did not complete). */
export function explainDowntime(r: Json): DowntimeEvent[] | undefined {
  const start = num(r['downtime-start-t']);
  const breakdown = r['downtime-breakdown'] as Record<string, number> | undefined;
  if (r.status !== 'completed' || start === undefined || !breakdown) return undefined;
  if (reportField(r, 'guest.clock') !== 'shared') return undefined; // two hosts: the offset estimate is not exact enough
  const events: DowntimeEvent[] = Object.entries(breakdown)
    .filter(([, at]) => num(at) !== undefined)
    .map(([event, at]) => ({ event, at }));
  const abs = (event: string, t: unknown) => {
    const v = num(t);
    if (v !== undefined) events.push({ event, at: Math.round((v - start) * 100) / 100 });
  };
  abs('guest-last-heartbeat-source', reportField(r, 'guest.resume-gap.gap-start-ms'));
  abs('guest-first-heartbeat-destination', reportField(r, 'guest.resume-gap.gap-end-ms'));
  if (reportField(r, 'probe.handover') === true) {
    abs('service-last-answer-source', reportField(r, 'probe.gap-start'));
    abs('service-first-answer-destination', reportField(r, 'probe.gap-end'));
  }
  return events.sort((a, b) => a.at - b.at);
}
