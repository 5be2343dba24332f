/**
 * bench:codec — throughput of the protocol codecs, measured against a raw memcpy of the same bytes.
 *
 * Usage: npm run bench:codec [-- --quick] [--runs N] [--mib N] [--out DIR]
 *   --quick    about 5 s: 3 runs over 32 MiB instead of 7 runs over 256 MiB
 *   --runs N   measured runs per case, after one warm-up run (default 7)
 *   --mib N    MiB of page data encoded/decoded per run (default 256)
 *   --out DIR  directory for the JSON result (default bench/results)
 *
 * Cases (median of the runs, with min–max):
 *   memcpy            Buffer.copy of each batch's 1 MiB of page data: the baseline
 *   batch encode      PageBatchWriter reset + 256 × add (copy, zero-detect, xxh64) + finish + PART gather list
 *   batch decode      StreamFramer.feed of PART sections in 64 KiB chunks + decodeRamPayload
 *   batch decode+ver  the same, then verifyBatch (xxh64 of every page)
 *   small encode      commands, PING, START/END sections with small msgpack payloads
 *   small decode      StreamFramer over the same records in 64 KiB chunks
 *   rp encode/decode  every return-path message through encodeRp / RpFramer
 * Page data is random (no zero pages), 4 KiB pages, 256-page batches.
 * Writes bench/results/codec-<ISO timestamp>.json.
 */
import { randomFillSync } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { packr } from '../../shared/protocol/msgpack.js';
import { decodeRamPayload, PageBatchWriter, verifyBatch } from '../../shared/protocol/ram-records.js';
import { encodeRp, RpFramer, type RpMessage } from '../../shared/protocol/return-path-codec.js';
import {
  encodeOpenReturnPath,
  encodePing,
  encodeRoundSync,
  encodeSectionEnd,
  encodeSectionPart,
  encodeSectionStart,
  encodeStreamHeader,
  encodeSwitchoverStart,
  StreamFramer,
} from '../../shared/protocol/stream-codec.js';

const PAGE = 4096;
const BATCH = 256;
const BATCH_BYTES = PAGE * BATCH;
const CHUNK = 64 * 1024;
const GUEST_BYTES = 64 * 1024 * 1024;
const SMALL_ROUNDS = 20_000;

interface Result {
  name: string;
  unit: 'GiB/s' | 'records/s';
  median: number;
  min: number;
  max: number;
  samples: number[];
  /** Median divided by the memcpy median (GiB/s cases only). */
  vsMemcpy?: number;
}

function options() {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      runs: { type: 'string' },
      mib: { type: 'string' },
      out: { type: 'string', default: 'bench/results' },
    },
  });
  const runs = Number(values.runs ?? (values.quick ? 3 : 7));
  const mib = Number(values.mib ?? (values.quick ? 32 : 256));
  return { quick: values.quick === true, runs, mib, out: values.out ?? 'bench/results' };
}

/** Runs `once` warm-up + n times; each call returns units of work done, turned into units/s. */
function measure(name: string, unit: Result['unit'], runs: number, once: () => number): Result {
  once();
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    const work = once();
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    samples.push(work / seconds / (unit === 'GiB/s' ? 2 ** 30 : 1));
  }
  const sorted = [...samples].sort((a, b) => a - b);
  return { name, unit, median: sorted[sorted.length >> 1]!, min: sorted[0]!, max: sorted.at(-1)!, samples };
}

function memcpyCase(guest: Buffer, batches: number): () => number {
  const dst = Buffer.allocUnsafe(BATCH_BYTES);
  return () => {
    for (let b = 0; b < batches; b++) {
      const at = (b * BATCH_BYTES) % GUEST_BYTES;
      guest.copy(dst, 0, at, at + BATCH_BYTES);
    }
    return batches * BATCH_BYTES;
  };
}

function encodeCase(guest: Buffer, batches: number): () => number {
  const w = new PageBatchWriter(BATCH, PAGE);
  return () => {
    let sink = 0;
    for (let b = 0; b < batches; b++) {
      const base = (b * BATCH_BYTES) % GUEST_BYTES;
      w.reset(0, 1);
      for (let p = 0; p < BATCH; p++)
        w.add(base / PAGE + p, guest.subarray(base + p * PAGE, base + (p + 1) * PAGE));
      sink += encodeSectionPart(0, w.finish()).length;
    }
    if (sink === 0) throw new Error('nothing encoded');
    return batches * BATCH_BYTES;
  };
}

/** The whole guest as a stream of PART sections, one batch each. */
function encodedGuest(guest: Buffer): Buffer {
  const w = new PageBatchWriter(BATCH, PAGE);
  const parts: Buffer[] = [encodeStreamHeader()];
  for (let base = 0; base < GUEST_BYTES; base += BATCH_BYTES) {
    w.reset(0, 1);
    for (let p = 0; p < BATCH; p++)
      w.add(base / PAGE + p, guest.subarray(base + p * PAGE, base + (p + 1) * PAGE));
    parts.push(...encodeSectionPart(0, w.finish()).map((b) => Buffer.from(b)));
  }
  return Buffer.concat(parts);
}

function decodeCase(stream: Buffer, mib: number, verify: boolean): () => number {
  const passes = Math.max(1, Math.round((mib * 2 ** 20) / GUEST_BYTES));
  return () => {
    let pages = 0;
    for (let pass = 0; pass < passes; pass++) {
      const f = new StreamFramer();
      for (let i = 0; i < stream.length; i += CHUNK) {
        for (const rec of f.feed(stream.subarray(i, i + CHUNK))) {
          if (rec.type !== 'part') continue;
          const r = decodeRamPayload(rec.payload, PAGE);
          if (r.kind !== 'pages') throw new Error('expected a page batch');
          if (verify) verifyBatch(r.batch, PAGE);
          pages += r.batch.count;
        }
      }
      f.end();
    }
    return pages * PAGE;
  };
}

const device = { counter: 42, regs: [1, 2, 3, 4, 5, 6, 7, 8], name: 'cpu0', running: true };
const header = { sectionId: 3, idstr: 'cpu', instanceId: 0, versionId: 1 };

/** One round of small stream records: 6 records. */
function smallRound(i: number): Buffer[] {
  const payload = packr.pack({ ...device, counter: i });
  return [
    encodeOpenReturnPath(),
    encodePing(i),
    encodeRoundSync(i),
    encodeSwitchoverStart(),
    ...encodeSectionStart(header, payload),
    ...encodeSectionEnd(3, payload),
  ];
}

const rpMessages: RpMessage[] = [
  { type: 'shut', status: 0 },
  { type: 'pong', value: 7 },
  { type: 'switchover-ack' },
  { type: 'round-done', round: 3 },
  { type: 'load-cost', body: { pendingBytes: 1 << 20, nsPerByte: 2.5 } },
  { type: 'time', body: { t0: 123456789, t1: 123456999 } },
];

function smallEncodeCase(): number {
  let sink = 0;
  for (let i = 0; i < SMALL_ROUNDS; i++) sink += smallRound(i).length;
  if (sink === 0) throw new Error('nothing encoded');
  return SMALL_ROUNDS * 6;
}

function smallDecodeCase(stream: Buffer): () => number {
  return () => {
    const f = new StreamFramer();
    let n = 0;
    for (let i = 0; i < stream.length; i += CHUNK) n += f.feed(stream.subarray(i, i + CHUNK)).length;
    f.end();
    return n - 1;
  };
}

function rpEncodeCase(): number {
  let sink = 0;
  for (let i = 0; i < SMALL_ROUNDS; i++) for (const m of rpMessages) sink += encodeRp(m).length;
  if (sink === 0) throw new Error('nothing encoded');
  return SMALL_ROUNDS * rpMessages.length;
}

function rpDecodeCase(frames: Buffer): () => number {
  return () => {
    const f = new RpFramer();
    let n = 0;
    for (let i = 0; i < frames.length; i += CHUNK) n += f.feed(frames.subarray(i, i + CHUNK)).length;
    f.end();
    return n;
  };
}

function table(results: Result[]): string {
  const fmt = (r: Result, v: number) => (r.unit === 'GiB/s' ? v.toFixed(2) : `${(v / 1e6).toFixed(2)}M`);
  const rows = results.map((r) => [
    r.name,
    r.unit,
    fmt(r, r.median),
    `${fmt(r, r.min)}–${fmt(r, r.max)}`,
    r.vsMemcpy === undefined ? '' : `${(r.vsMemcpy * 100).toFixed(0)}%`,
  ]);
  const all = [['case', 'unit', 'median', 'min–max', 'vs memcpy'], ...rows];
  const widths = all[0]!.map((_, c) => Math.max(...all.map((row) => row[c]!.length)));
  return all.map((row) => row.map((cell, c) => cell.padEnd(widths[c]!)).join('  ')).join('\n');
}

function main(): void {
  const opts = options();
  const batches = Math.max(1, Math.round((opts.mib * 2 ** 20) / BATCH_BYTES));
  const guest = randomFillSync(Buffer.allocUnsafe(GUEST_BYTES));
  const pageStream = encodedGuest(guest);
  const smallStream = Buffer.concat([
    encodeStreamHeader(),
    ...Array.from({ length: SMALL_ROUNDS }, (_, i) => smallRound(i)).flat(),
  ]);
  const rpFrames = Buffer.concat(Array.from({ length: SMALL_ROUNDS }, () => rpMessages.map(encodeRp)).flat());

  const memcpy = measure('memcpy (baseline)', 'GiB/s', opts.runs, memcpyCase(guest, batches));
  const results = [
    memcpy,
    measure('batch encode', 'GiB/s', opts.runs, encodeCase(guest, batches)),
    measure('batch decode', 'GiB/s', opts.runs, decodeCase(pageStream, opts.mib, false)),
    measure('batch decode+verify', 'GiB/s', opts.runs, decodeCase(pageStream, opts.mib, true)),
    measure('small records encode', 'records/s', opts.runs, smallEncodeCase),
    measure('small records decode', 'records/s', opts.runs, smallDecodeCase(smallStream)),
    measure('rp messages encode', 'records/s', opts.runs, rpEncodeCase),
    measure('rp messages decode', 'records/s', opts.runs, rpDecodeCase(rpFrames)),
  ];
  for (const r of results) if (r.unit === 'GiB/s') r.vsMemcpy = r.median / memcpy.median;

  console.log(
    `bench:codec  node ${process.version}  ${cpus()[0]?.model ?? 'cpu?'}  runs=${opts.runs}  ${opts.mib} MiB/run`,
  );
  console.log(table(results));
  mkdirSync(opts.out, { recursive: true });
  const file = join(opts.out, `codec-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  const config = {
    pageSize: PAGE,
    batchPages: BATCH,
    chunk: CHUNK,
    mibPerRun: opts.mib,
    runs: opts.runs,
    quick: opts.quick,
  };
  writeFileSync(
    file,
    `${JSON.stringify({ bench: 'codec', node: process.version, cpu: cpus()[0]?.model, config, results }, null, 2)}\n`,
  );
  console.log(`wrote ${file}`);
}

main();
