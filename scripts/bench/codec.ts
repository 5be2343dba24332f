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
 *   batch encode      PageBatchBuilder.build (zero-detect, xxh64, descriptors; pages as views) + PART gather list
 *   batch decode      StreamFramer.feed of PART sections in 64 KiB chunks (payloads as chunk views)
 *   batch place       the same, then the RAM loader: pages copied into guest RAM and verified there
 *   page channel      PageChannelDecoder.feed of the same batches (with round ends) into guest RAM + verify
 * The builder and verifier use the native addon when it is built (the `backend` line says which).
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
import { RamLoader } from '../../destination/ram/ram-load.js';
import { scriptArgs } from '../../shared/cli/script-args.js';
import { GuestMemory } from '../../shared/guest/memory.js';
import { packr } from '../../shared/protocol/msgpack.js';
import { encodeRoundEnd, PageChannelDecoder } from '../../shared/protocol/page-batch.js';
import { encodeRamGeometry } from '../../shared/protocol/ram-records.js';
import { encodeRp, RpFramer, type RpMessage } from '../../shared/protocol/return-path-codec.js';
import {
  encodeOpenReturnPath,
  encodePing,
  encodeSectionEnd,
  encodeSectionPart,
  encodeSectionStart,
  encodeStreamHeader,
  encodeSwitchoverStart,
  StreamFramer,
} from '../../shared/protocol/stream-codec.js';
import { loadNativeHash, prepareNativeHash } from '../../shared/ram/native-hash.js';
import { PageBatchBuilder } from '../../shared/ram/page-batch-builder.js';
import { PageBatchVerifier } from '../../shared/ram/page-batch-verifier.js';

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
  const values = scriptArgs(
    'bench:codec',
    `usage: npm run bench:codec [-- --quick] [--runs N] [--mib N] [--out DIR]

Throughput of the protocol codecs against a memcpy of the same bytes, in the same run.
  --quick    about 5 s: 3 runs over 32 MiB instead of 7 runs over 256 MiB
  --runs N   measured runs per case, after one warm-up run (default 7)
  --mib N    MiB of page data encoded/decoded per run (default 256)
  --out DIR  directory for the JSON result (default bench/results)`,
    {
      quick: { type: 'boolean', default: false },
      runs: { type: 'string' },
      mib: { type: 'string' },
      out: { type: 'string', default: 'bench/results' },
    },
  );
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

const native = loadNativeHash(prepareNativeHash());
/** Page i of the guest is list entry i. */
const LIST = Int32Array.from({ length: GUEST_BYTES / PAGE }, (_, i) => i);

function encodeCase(guest: Buffer, batches: number): () => number {
  const b = new PageBatchBuilder(BATCH, PAGE, native);
  const sent = new BigUint64Array(GUEST_BYTES / PAGE);
  return () => {
    let sink = 0;
    for (let k = 0; k < batches; k++) {
      const first = ((k * BATCH_BYTES) % GUEST_BYTES) / PAGE;
      sink += encodeSectionPart(0, b.build(0, 1, LIST, first, first + BATCH, guest, sent)).length;
    }
    if (sink === 0) throw new Error('nothing encoded');
    return batches * BATCH_BYTES;
  };
}

/** The whole guest as batches (copied out of the builder), one per 1 MiB; batch k in round round(k). */
function guestBatches(guest: Buffer, round: (k: number) => number = () => 1): Buffer[] {
  const b = new PageBatchBuilder(BATCH, PAGE, native);
  const sent = new BigUint64Array(GUEST_BYTES / PAGE);
  const out: Buffer[] = [];
  for (let first = 0; first < GUEST_BYTES / PAGE; first += BATCH)
    out.push(Buffer.concat(b.build(0, round(out.length), LIST, first, first + BATCH, guest, sent)));
  return out;
}

/** The whole guest as a stream: the RAM START section (geometry), then a PART per batch. */
function encodedGuest(guest: Buffer): Buffer {
  const geometry = encodeRamGeometry({ pageSize: PAGE, pageCount: GUEST_BYTES / PAGE, blocks: [] });
  const header = { sectionId: 0, idstr: 'ram', instanceId: 0, versionId: 1 };
  return Buffer.concat([
    encodeStreamHeader(),
    ...encodeSectionStart(header, geometry),
    ...guestBatches(guest).flatMap((batch) => encodeSectionPart(0, batch)),
  ]);
}

function decodeCase(stream: Buffer, mib: number, place: boolean): () => number {
  const passes = Math.max(1, Math.round((mib * 2 ** 20) / GUEST_BYTES));
  const memory = GuestMemory.allocate(GUEST_BYTES, PAGE);
  return () => {
    let bytes = 0;
    for (let pass = 0; pass < passes; pass++) {
      const f = new StreamFramer();
      const ram = new RamLoader(memory, { pageChannels: 0 });
      for (let i = 0; i < stream.length; i += CHUNK) {
        for (const rec of f.feed(stream.subarray(i, i + CHUNK))) {
          if (rec.type !== 'part' && rec.type !== 'start') continue;
          if (place || rec.type === 'start') void ram.loadState(rec.type, rec.payload);
          if (rec.type === 'part') bytes += BATCH_BYTES;
        }
      }
      f.end();
    }
    return bytes;
  };
}

/** The guest's batches on one page channel (each its own round), into guest RAM, verified. */
function pageChannelCase(guest: Buffer, mib: number): () => number {
  const passes = Math.max(1, Math.round((mib * 2 ** 20) / GUEST_BYTES));
  const memory = GuestMemory.allocate(GUEST_BYTES, PAGE);
  const channel = Buffer.concat(
    guestBatches(guest, (k) => k + 1).flatMap((batch, k) => [batch, encodeRoundEnd(k + 1)]),
  );
  const verifier = new PageBatchVerifier(
    {
      ram: memory.bytes,
      pageSize: PAGE,
      checksums: new BigUint64Array(GUEST_BYTES / PAGE),
      received: new Uint8Array(GUEST_BYTES / PAGE),
    },
    native,
  );
  return () => {
    let pages = 0;
    for (let pass = 0; pass < passes; pass++) {
      const d = new PageChannelDecoder(memory.bytes, PAGE);
      for (let i = 0; i < channel.length; i += CHUNK)
        d.feed(channel.subarray(i, i + CHUNK), (e) => {
          if (e.kind !== 'batch') return;
          verifier.verify(e.descriptors, e.count);
          pages += e.count;
        });
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
    encodePing(i + 1),
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
  { type: 'load-cost', body: { 'final-load-ms': 2.5, waiting: ['nic0'], approvals: { nic0: 12 } } },
  { type: 'time', body: { value: 123456789, t: 123456999.5 } },
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
  const guest = randomFillSync(Buffer.from(GuestMemory.allocate(GUEST_BYTES, PAGE).shared.ram));
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
    measure('batch place+verify', 'GiB/s', opts.runs, decodeCase(pageStream, opts.mib, true)),
    measure('page channel decode+verify', 'GiB/s', opts.runs, pageChannelCase(guest, opts.mib)),
    measure('small records encode', 'records/s', opts.runs, smallEncodeCase),
    measure('small records decode', 'records/s', opts.runs, smallDecodeCase(smallStream)),
    measure('rp messages encode', 'records/s', opts.runs, rpEncodeCase),
    measure('rp messages decode', 'records/s', opts.runs, rpDecodeCase(rpFrames)),
  ];
  for (const r of results) if (r.unit === 'GiB/s') r.vsMemcpy = r.median / memcpy.median;

  console.log(
    `bench:codec  node ${process.version}  ${cpus()[0]?.model ?? 'cpu?'}  runs=${opts.runs}  ${opts.mib} MiB/run  backend ${native ? 'native' : 'js'}`,
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
    backend: native ? 'native' : 'js',
  };
  writeFileSync(
    file,
    `${JSON.stringify({ bench: 'codec', node: process.version, cpu: cpus()[0]?.model, config, results }, null, 2)}\n`,
  );
  console.log(`wrote ${file}`);
}

main();
