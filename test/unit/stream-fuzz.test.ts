/**
 * Mutation fuzzing of every decoder with a seeded PRNG (reproducible: the seed and iteration of
 * the first failure are printed). Each mutated input is fed in random chunk sizes. A decoder may
 * only return records or throw a MigrationError (never INTERNAL, never any other exception), must
 * finish, and must never buffer more than it was given.
 */
import t from 'tap';
import { RamLoader } from '../../destination/ram/ram-load.js';
import { ErrorCode, MigrationError } from '../../shared/errors.js';
import { GuestMemory } from '../../shared/guest/memory.js';
import { Command } from '../../shared/protocol/constants.js';
import { encodeRoundEnd, PageChannelDecoder } from '../../shared/protocol/page-batch.js';
import { encodeRamEos, encodeRamGeometry } from '../../shared/protocol/ram-records.js';
import { encodeRp, RpFramer } from '../../shared/protocol/return-path-codec.js';
import { SectionPayload } from '../../shared/protocol/section-payload.js';
import {
  encodeSectionPart,
  encodeSectionStart,
  encodeStreamHeader,
  readPing,
  StreamFramer,
  type StreamRecord,
} from '../../shared/protocol/stream-codec.js';
import { loadNativeHash, prepareNativeHash } from '../../shared/ram/native-hash.js';
import { PageBatchBuilder } from '../../shared/ram/page-batch-builder.js';
import { PageBatchVerifier } from '../../shared/ram/page-batch-verifier.js';
import { mulberry32 } from '../helpers/prng.js';
import { geometry, PAGE, pageOf, sampleStream } from '../helpers/sample-stream.js';

const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed);

type Rand = () => number;
const int = (rand: Rand, n: number) => Math.floor(rand() * n);
const HUGE = [0xffffffff, 0x7fffffff, 0x04000001, 0x00100001, 0x0000ffff, 0x00001001];

function mutate(rand: Rand, input: Buffer): Buffer {
  let buf = Buffer.from(input);
  const steps = 1 + int(rand, 3);
  for (let s = 0; s < steps && buf.length > 0; s++) {
    const at = int(rand, buf.length);
    switch (int(rand, 6)) {
      case 0:
        buf[at]! ^= 1 << int(rand, 8);
        break;
      case 1:
        buf[at] = int(rand, 256);
        break;
      case 2:
        buf = Buffer.concat([
          buf.subarray(0, at),
          Buffer.from(Array.from({ length: 1 + int(rand, 8) }, () => int(rand, 256))),
          buf.subarray(at),
        ]);
        break;
      case 3:
        buf = Buffer.concat([buf.subarray(0, at), buf.subarray(at + 1 + int(rand, 16))]);
        break;
      case 4:
        buf = buf.subarray(0, at);
        break;
      default:
        overwriteLength(rand, buf, at);
    }
  }
  return buf;
}

function overwriteLength(rand: Rand, buf: Buffer, at: number): void {
  const v = HUGE[int(rand, HUGE.length)]!;
  if (rand() < 0.5 && at + 4 <= buf.length) buf.writeUInt32BE(v, at);
  else if (at + 2 <= buf.length) buf.writeUInt16BE(v & 0xffff, at);
}

/** Feeds `input` in random chunks; returns undefined (decoded), the error code, or a failure description. */
function feedAll<R>(
  rand: Rand,
  input: Buffer,
  framer: { feed(b: Buffer): R[]; end(): void; readonly buffered: number },
  each: (r: R) => void,
): string | undefined {
  try {
    for (let i = 0; i < input.length; ) {
      const n = 1 + int(rand, rand() < 0.2 ? 4 : 300);
      for (const r of framer.feed(input.subarray(i, i + n))) each(r);
      i += n;
      if (framer.buffered > input.length) return `buffered ${framer.buffered} > input ${input.length}`;
    }
    framer.end();
  } catch (err) {
    return judge(err);
  }
  return undefined;
}

function judge(err: unknown): string | undefined {
  if (!(err instanceof MigrationError)) return `non-MigrationError: ${String((err as Error)?.stack ?? err)}`;
  if (err.code === ErrorCode.INTERNAL) return `INTERNAL: ${err.message}`;
  return err.code;
}

/** A guest of `pages` PAGE-sized pages: pages i % 3 == 0 zero, the others pageOf(i). */
function guestOf(pages: number): GuestMemory {
  const m = GuestMemory.allocate(pages * PAGE, PAGE);
  for (let i = 0; i < pages; i++) if (i % 3 !== 0) m.bytes.set(pageOf(i), i * PAGE);
  return m;
}

/**
 * Applies decoded records as the destination does: commands read, every section of 'ram' through a
 * real RAM loader (geometry, batches placed and verified in a small guest), other payloads joined.
 */
function consumer(): (rec: StreamRecord) => void {
  let ram: RamLoader | null = null;
  let ramSection = -1;
  return (rec) => {
    if (rec.type === 'command' && rec.command === Command.PING) readPing(rec.payload);
    if (rec.type === 'start' && rec.idstr === 'ram') {
      ramSection = rec.sectionId;
      ram = new RamLoader(GuestMemory.allocate(64 * PAGE, PAGE), { pageChannels: 0 });
    }
    if (rec.type === 'start' || rec.type === 'full' || rec.type === 'part' || rec.type === 'end') {
      if (rec.sectionId === ramSection && ram) void ram.loadState(rec.type, rec.payload);
      else rec.payload.bytes();
    }
  };
}

/** A RAM section with one 32-page batch (a third of them zero) built by the page-batch builder. */
function bigBatchStream(): Buffer {
  const g = guestOf(64);
  const ram = Buffer.from(g.shared.ram, 0, 64 * PAGE);
  const batch = new PageBatchBuilder(32, PAGE, null).build(
    0,
    2,
    Int32Array.from({ length: 32 }, (_, i) => i),
    0,
    32,
    ram,
    new BigUint64Array(64),
  );
  const geo = encodeRamGeometry({ pageSize: PAGE, pageCount: 64, blocks: [{ name: 'pc.ram', pages: 64 }] });
  const header = { sectionId: 0, idstr: 'ram', instanceId: 0, versionId: 1 };
  return Buffer.concat([
    encodeStreamHeader(),
    ...encodeSectionStart(header, geo),
    ...encodeSectionPart(0, batch),
  ]);
}

interface Outcome {
  /** The first failure, with seed and iteration, or undefined. */
  failure?: string;
  ms: number;
  /** How often each error code (or 'ok') ended an input: shows the mutations reach deep. */
  outcomes: Map<string, number>;
}

function run(
  iterations: number,
  seeds: Buffer[],
  once: (rand: Rand, input: Buffer) => string | undefined,
): Outcome {
  const rand = mulberry32(SEED);
  const outcomes = new Map<string, number>();
  const started = performance.now();
  for (let i = 0; i < iterations; i++) {
    const input = mutate(rand, seeds[int(rand, seeds.length)]!);
    const why = once(rand, input);
    if (why !== undefined && !why.startsWith('MIG_ERR')) {
      return {
        failure: `seed ${SEED} iteration ${i} input ${input.toString('hex').slice(0, 200)}: ${why}`,
        ms: 0,
        outcomes,
      };
    }
    outcomes.set(why ?? 'ok', (outcomes.get(why ?? 'ok') ?? 0) + 1);
  }
  return { ms: performance.now() - started, outcomes };
}

function report(
  t: { equal: (a: unknown, b: unknown, m: string) => void; comment: (m: string) => void },
  name: string,
  o: Outcome,
): void {
  t.equal(o.failure, undefined, `${name}: no decoder failure (${o.ms.toFixed(0)} ms)`);
  t.comment([...o.outcomes].map(([k, v]) => `${k}=${v}`).join(' '));
}

t.test('the stream framer survives 20,000 mutated streams fed in random chunks', async (t) => {
  const seeds = [sampleStream().bytes, bigBatchStream()];
  const o = run(20_000, seeds, (rand, input) => feedAll(rand, input, new StreamFramer(), consumer()));
  report(t, 'stream', o);
  t.ok(o.outcomes.size >= 8, 'mutations reach many different checks');
});

t.test('the return-path framer survives 10,000 mutated frame sequences', async (t) => {
  const frames = Buffer.concat([
    encodeRp({ type: 'shut', status: 0 }),
    encodeRp({ type: 'pong', value: 1 }),
    encodeRp({ type: 'switchover-ack' }),
    encodeRp({ type: 'resumed', body: { checkpoints: { a: 1 }, gap: { gapStartMs: 1, gapEndMs: 2 } } }),
    encodeRp({ type: 'load-cost', body: { 'final-load-ms': 10, waiting: ['d'], approvals: {} } }),
    encodeRp({ type: 'error', code: 'MIG_ERR_CHECKSUM', message: 'page 3' }),
    encodeRp({ type: 'round-done', round: 4 }),
    encodeRp({ type: 'time', body: { value: 1, t: 2 } }),
  ]);
  report(
    t,
    'return path',
    run(10_000, [frames], (rand, input) => feedAll(rand, input, new RpFramer(), () => {})),
  );
});

t.test('the page-channel decoder and verifier survive 10,000 mutated channel streams', async (t) => {
  const g = guestOf(64);
  const ram = Buffer.from(g.shared.ram, 0, 64 * PAGE);
  const list = Int32Array.from({ length: 64 }, (_, i) => (i * 7) % 64);
  const b = new PageBatchBuilder(16, PAGE, null);
  const frames: Buffer[] = [];
  for (let round = 1; round <= 2; round++) {
    for (let from = 0; from < 32; from += 16)
      frames.push(
        Buffer.concat(
          b.build(
            0,
            round,
            list,
            from + (round - 1) * 32,
            from + (round - 1) * 32 + 16,
            ram,
            new BigUint64Array(64),
          ),
        ),
      );
    frames.push(encodeRoundEnd(round));
  }
  const native = loadNativeHash(prepareNativeHash());
  const o = run(10_000, [Buffer.concat(frames)], (rand, input) => {
    const dst = new Uint8Array(new SharedArrayBuffer(64 * PAGE));
    const decoder = new PageChannelDecoder(dst, PAGE);
    const tables = {
      ram: dst,
      pageSize: PAGE,
      checksums: new BigUint64Array(64),
      received: new Uint8Array(64),
    };
    const verifier = new PageBatchVerifier(tables, rand() < 0.5 ? native : null);
    const framer = {
      feed: (c: Buffer) => {
        // each batch verified while it is current, as the page worker does
        decoder.feed(c, (e) => {
          if (e.kind === 'batch') verifier.verify(e.descriptors, e.count);
        });
        return [];
      },
      end: () => {},
      get buffered() {
        return 0;
      },
    };
    return feedAll(rand, input, framer, () => {});
  });
  report(t, 'page channel', o);
  t.ok(o.outcomes.size >= 4, 'mutations reach several checks');
});

t.test('the RAM loader survives 10,000 mutated RAM payloads', async (t) => {
  const g = guestOf(64);
  const ram = Buffer.from(g.shared.ram, 0, 64 * PAGE);
  const batch = new PageBatchBuilder(8, PAGE, null).build(
    3,
    1,
    Int32Array.from([10, 11, 12, 13, 40, 41, 5, 6]),
    0,
    8,
    ram,
    new BigUint64Array(64),
  );
  const geo = encodeRamGeometry({ pageSize: PAGE, pageCount: 64, blocks: [{ name: 'pc.ram', pages: 64 }] });
  const seeds = [Buffer.concat(batch), encodeRamGeometry(geometry), encodeRamEos()];
  const o = run(10_000, seeds, (_rand, input) => {
    try {
      const loader = new RamLoader(GuestMemory.allocate(64 * PAGE, PAGE), { pageChannels: 0 });
      void loader.loadState('start', SectionPayload.of(geo));
      void loader.loadState('part', SectionPayload.of(input));
    } catch (err) {
      return judge(err);
    }
    return undefined;
  });
  report(t, 'ram', o);
});
