/**
 * Which 256-page slice of the round's list a source page worker sends next.
 *
 * Normally the slices go to whoever asks first: workers `Atomics.add` the shared cursor, so a free
 * worker takes the next slice and a slow channel simply carries less.
 *
 * Test hook, off unless set: SWITCHOVER_TEST_PIN_SLICES=N (N = --multifd-channels) pins the slices
 * instead: in round R, worker i sends exactly the slices s with (s + R) % N === i, so every page
 * changes channel from one round to the next. With one channel made slow on the destination
 * (SWITCHOVER_TEST_CHANNEL_DELAY), the slow channel must still carry its share of every round, the
 * final one included, so a source that started round R+1 before the destination confirmed round R
 * (ROUND_DONE) is caught every time: a page's newer copy travels on a fast channel while its older
 * copy is still queued on the slow one, and the image digest at EOF disagrees. Without pinning, a
 * backed-up channel stops claiming and the fast ones carry everything, which hides the race.
 * Rounds go on: a worker left with no slice returns -1 at once and ends its round as usual.
 * N must equal the channel count (a larger N leaves slices unsent, a smaller one leaves workers idle).
 */
import { BATCH_PAGES, SRC } from '../../shared/ram/page-channel.js';

const pinned = parsePin(process.env.SWITCHOVER_TEST_PIN_SLICES);
/** Pinned mode: the round being claimed and this worker's next slice in it. */
let pinRound = -1;
let pinNext = 0;

function parsePin(value: string | undefined): number {
  if (value === undefined || value === '') return 0;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 255)
    throw new RangeError(`SWITCHOVER_TEST_PIN_SLICES=${value}: expected the page channel count (1..255)`);
  return n;
}

/**
 * The first list entry of the next slice this worker sends in `round` (it ends at
 * min(count, start + batch)), or -1 when the round has nothing more for this worker.
 */
export function claimSlice(
  ctl: Int32Array,
  index: number,
  round: number,
  count: number,
  batch: number = BATCH_PAGES,
): number {
  if (pinned === 0) {
    const start = Atomics.add(ctl, SRC.CURSOR, batch);
    return start < count ? start : -1;
  }
  if (round !== pinRound) {
    pinRound = round;
    pinNext = (((index - round) % pinned) + pinned) % pinned;
  }
  if (index >= pinned) return -1;
  const start = pinNext * batch;
  if (start >= count) return -1;
  pinNext += pinned;
  return start;
}
