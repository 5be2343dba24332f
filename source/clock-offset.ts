/**
 * Clock offset between the two sides, NTP style, from PING (main channel) → PONG + TIME (return
 * path): the destination stamps its monotonic clock when it answers; the sample with the shortest
 * round trip wins. offset = t_dst − (t_send + t_recv)/2, uncertainty = round trip / 2. On one host
 * both sides read the same monotonic clock and the offset comes out ≈ 0 ± a fraction of a ms.
 */
import { bootId } from '../shared/boot-id.js';

export interface ClockEstimate {
  /** 'shared' (same kernel clock, offset exactly 0) or 'estimated' (NTP-style from ping/pong). */
  kind: 'shared' | 'estimated';
  /** Destination clock minus source clock, ms. */
  offset: number;
  /** Half the round trip of the sample used, ms: the offset is right within ± this. */
  uncertainty: number;
  samples: number;
}

export class ClockOffset {
  readonly #sent = new Map<number, number>();
  #best: { offset: number; rtt: number } | null = null;
  #samples = 0;
  #shared = false;
  readonly #bootId = bootId();

  noteSent(value: number, now: number): void {
    this.#sent.set(value, now);
    if (this.#sent.size > 64) this.#sent.delete(this.#sent.keys().next().value!);
  }

  /** A TIME answer: the destination's clock when it answered PING `value`. */
  noteAnswer(value: number, dstTime: number, now: number, dstBootId?: unknown): void {
    if (dstBootId === this.#bootId) this.#shared = true;
    const t0 = this.#sent.get(value);
    if (t0 === undefined || !Number.isFinite(dstTime)) return;
    this.#sent.delete(value);
    const rtt = now - t0;
    this.#samples++;
    if (!this.#best || rtt < this.#best.rtt) this.#best = { offset: dstTime - (t0 + now) / 2, rtt };
  }

  estimate(): ClockEstimate | null {
    if (this.#shared) return { kind: 'shared', offset: 0, uncertainty: 0, samples: this.#samples };
    if (!this.#best) return null;
    return {
      kind: 'estimated',
      offset: this.#best.offset,
      uncertainty: this.#best.rtt / 2,
      samples: this.#samples,
    };
  }
}
