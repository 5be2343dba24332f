/**
 * Mutation fuzzing of every decoder with a seeded PRNG (reproducible: the seed and iteration of
 * the first failure are printed). Each mutated input is fed in random chunk sizes. A decoder may
 * only return records or throw a MigrationError (never INTERNAL, never any other exception), must
 * finish, and must never buffer more than it was given.
 */
import t from 'tap';
import { ErrorCode, MigrationError } from '../../shared/errors.js';
import { Command } from '../../shared/protocol/constants.js';
import {
  decodeRamPayload,
  encodeRamEos,
  encodeRamGeometry,
  PageBatchWriter,
  verifyBatch,
} from '../../shared/protocol/ram-records.js';
import { encodeRp, RpFramer } from '../../shared/protocol/return-path-codec.js';
import {
  encodeSectionPart,
  encodeStreamHeader,
  readPageChannels,
  readPing,
  readRoundSync,
  StreamFramer,
  type StreamRecord,
} from '../../shared/protocol/stream-codec.js';
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

/** Exercises the payload readers the engine applies to decoded records. */
function consume(rec: StreamRecord): void {
  if (rec.type === 'command') {
    if (rec.command === Command.PING) readPing(rec.payload);
    if (rec.command === Command.ROUND_SYNC) readRoundSync(rec.payload);
    if (rec.command === Command.PAGE_CHANNELS) readPageChannels(rec.payload);
  }
  if (rec.type === 'part' || rec.type === 'end' || (rec.type === 'start' && rec.idstr === 'ram')) {
    const r = decodeRamPayload(rec.payload, PAGE);
    if (r.kind === 'pages') verifyBatch(r.batch, PAGE);
  }
}

function bigBatchStream(): Buffer {
  const w = new PageBatchWriter(32, PAGE);
  w.reset(1, 2);
  for (let i = 0; i < 32; i++) w.add(i, i % 3 === 0 ? new Uint8Array(PAGE) : pageOf(i));
  return Buffer.concat([encodeStreamHeader(), ...encodeSectionPart(0, w.finish())]);
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
  const o = run(20_000, seeds, (rand, input) => feedAll(rand, input, new StreamFramer(), consume));
  report(t, 'stream', o);
  t.ok(o.outcomes.size >= 8, 'mutations reach many different checks');
});

t.test('the return-path framer survives 10,000 mutated frame sequences', async (t) => {
  const frames = Buffer.concat([
    encodeRp({ type: 'shut', status: 0 }),
    encodeRp({ type: 'pong', value: 1 }),
    encodeRp({ type: 'switchover-ack' }),
    encodeRp({ type: 'resumed', body: { t: 1, digest: 'abcdef0123456789', pages: [1, 2] } }),
    encodeRp({ type: 'load-cost', body: { pending: 10 } }),
    encodeRp({ type: 'error', code: 'MIG_ERR_CHECKSUM', message: 'page 3' }),
    encodeRp({ type: 'round-done', round: 4 }),
    encodeRp({ type: 'time', body: { t0: 1n, t1: 2 } }),
  ]);
  report(
    t,
    'return path',
    run(10_000, [frames], (rand, input) => feedAll(rand, input, new RpFramer(), () => {})),
  );
});

t.test('decodeRamPayload survives 10,000 mutated RAM payloads', async (t) => {
  const w = new PageBatchWriter(8, PAGE);
  w.reset(3, 1);
  for (let i = 0; i < 8; i++) w.add(100 + i, i % 2 ? new Uint8Array(PAGE) : pageOf(i));
  const seeds = [Buffer.concat(w.finish()), encodeRamGeometry(geometry), encodeRamEos()];
  const o = run(10_000, seeds, (_rand, input) => {
    try {
      const r = decodeRamPayload(input, PAGE);
      if (r.kind === 'pages') verifyBatch(r.batch, PAGE);
    } catch (err) {
      return judge(err);
    }
    return undefined;
  });
  report(t, 'ram', o);
});
