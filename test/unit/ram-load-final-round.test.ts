/**
 * FINAL_ROUND (page channels): accepted once, in the completion stage (PART or END), only when page
 * channels exist; anything else is MALFORMED before the destination would wait on a round.
 */
import t from 'tap';
import { RamLoader } from '../../destination/ram-load.js';
import { GuestMemory } from '../../shared/guest/memory.js';
import { encodeRamFinalRound } from '../../shared/protocol/ram-records.js';

const memory = GuestMemory.allocate(1 << 20);
const shared = () => ({
  checksums: new BigUint64Array(memory.pageCount),
  received: new Uint8Array(memory.pageCount),
  verified: new Int32Array(2),
});
const malformed = { code: 'MIG_ERR_MALFORMED' };

t.test('with page channels, a PART or END section sets the final round once', async (t) => {
  for (const kind of ['part', 'end'] as const) {
    const ram = new RamLoader(memory, shared());
    t.equal(ram.finalRound, null);
    ram.loadState(kind, encodeRamFinalRound(9));
    t.equal(ram.finalRound, 9, `${kind}: round 9`);
    t.throws(() => ram.loadState(kind, encodeRamFinalRound(10)), malformed, `${kind}: twice is refused`);
  }
});

t.test('in a START or FULL section, or without page channels, it is MALFORMED', async (t) => {
  for (const kind of ['start', 'full'] as const) {
    t.throws(() => new RamLoader(memory, shared()).loadState(kind, encodeRamFinalRound(3)), malformed, kind);
  }
  t.throws(
    () => new RamLoader(memory).loadState('end', encodeRamFinalRound(3)),
    { ...malformed, message: /without page channels/ },
    'main channel only',
  );
});
