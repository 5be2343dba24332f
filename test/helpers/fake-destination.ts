/**
 * A misbehaving destination built from the project's own codecs, in the test process: it accepts the
 * source's main and return-path connections, reads the stream (StreamFramer), answers PING and clock
 * probes, connects the page channels the RAM section announces (real hellos with the right tag),
 * reads them (PageChannelDecoder) and confirms rounds (ROUND_DONE) — until told to stop reading the
 * page channels, the way a frozen host or a path that black-holes only those connections would. It
 * never starts a guest and never says SHUT.
 */
import net from 'node:net';
import type { Test } from 'tap';
import { monotonicMs } from '../../shared/guest/vcpu-control.js';
import { ChannelKind, Command, HELLO_LENGTH } from '../../shared/protocol/constants.js';
import { decodeHello, encodeHello } from '../../shared/protocol/hello.js';
import { PageChannelDecoder } from '../../shared/protocol/page-batch.js';
import { decodeRamRecord } from '../../shared/protocol/ram-records.js';
import { encodeRp, RpFramer, type RpMessage } from '../../shared/protocol/return-path-codec.js';
import { readPing, StreamFramer, type StreamRecord } from '../../shared/protocol/stream-codec.js';
import { readExact } from '../../shared/socket-io.js';
import { ChannelBinding, channelTag } from '../../shared/tls/binding.js';

export interface FakeDestinationOptions {
  /**
   * When to stop reading every page channel: after this many page-channel bytes (precopy), when the
   * source says SWITCHOVER_START (the final round), or never connect them at all. Main channel and
   * return path stay healthy.
   */
  stallPageChannels?: { afterBytes: number } | 'at-switchover' | 'never-connect';
  /** A hostile script: sees every stream record and may write raw frames of its own. */
  hooks?: FakeHooks;
  /** At EOF, finish like a destination whose guest started: RESUMED, SHUT(0), RESUMED(guest). */
  completeAtEof?: boolean;
  /** Every frame the fake writes (ACCEPT on main, everything on the return path) passes through this. */
  outgoing?: (frame: Buffer, where: 'main' | 'rp') => Buffer;
}

/** Raw writes for hostile scripts (frames built with the project's codecs, or not). */
export interface FakeIO {
  /** Writes on the return path (dropped before it is connected). */
  rp(frame: Buffer): void;
  /** Writes on the main socket's reverse direction. */
  main(frame: Buffer): void;
  /** Stops answering PING, clock probes and rounds (the script speaks alone). */
  silence(): void;
}

export interface FakeHooks {
  onRecord?(rec: StreamRecord, io: FakeIO): void;
  /** A clock probe arrived; return true when the script answered it (no honest answer then). */
  onTimeProbe?(value: number, io: FakeIO): boolean;
  /** Read the return path? (false: never, the way a source that floods probes would be treated.) */
  readReturnPath?: boolean;
}

/** A return-path frame with any payload: type and length as the codec frames them, body unchecked. */
export function rawRpFrame(type: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt16BE(type, 0);
  head.writeUInt16BE(payload.length, 2);
  return Buffer.concat([head, payload]);
}

export interface FakeDestination {
  port: number;
  /** Monotonic ms when the page channels stopped being read (null until then). */
  stalledAt(): number | null;
  /** Resolves when the page channels stop being read. */
  stalled: Promise<void>;
  /** Resolves at SWITCHOVER_START. */
  switchover: Promise<void>;
  /** Page-channel bytes read so far. */
  pageBytes(): number;
  /** The source's EOF arrived (it finished sending and waits for SHUT). */
  sawEof(): boolean;
}

export async function startFakeDestination(t: Test, opts: FakeDestinationOptions): Promise<FakeDestination> {
  const sockets: net.Socket[] = [];
  const pageSockets: net.Socket[] = [];
  let rp: net.Socket | null = null;
  let key: Buffer = Buffer.alloc(32);
  let migrationId: Buffer = Buffer.alloc(16);
  let ram: Uint8Array | null = null;
  let pageSize = 4096;
  let pageBytes = 0;
  let eof = false;
  let stalledAt: number | null = null;
  let onStalled!: () => void;
  let onSwitchover!: () => void;
  const stalled = new Promise<void>((r) => {
    onStalled = r;
  });
  const switchover = new Promise<void>((r) => {
    onSwitchover = r;
  });
  const roundEnds = new Map<number, number>();
  let channels = 0;
  let silent = false;
  const out = (frame: Buffer, where: 'main' | 'rp') => (opts.outgoing ? opts.outgoing(frame, where) : frame);
  const send = (m: RpMessage) => {
    if (!silent && rp && !rp.destroyed) rp.write(out(encodeRp(m), 'rp'));
  };
  let mainSocket: net.Socket | null = null;
  const io: FakeIO = {
    rp: (frame) => void rp?.write(frame),
    main: (frame) => void mainSocket?.write(frame),
    silence: () => {
      silent = true;
    },
  };

  const stall = () => {
    if (stalledAt !== null) return;
    stalledAt = monotonicMs();
    for (const s of pageSockets) s.pause();
    onStalled();
  };

  const connectPages = (host: string, ports: number[]) => {
    channels = ports.length;
    ports.forEach((port, index) => {
      const s = net.connect({ host, port });
      sockets.push(s);
      pageSockets.push(s);
      s.on('error', () => {});
      const decoder = new PageChannelDecoder(ram!, pageSize);
      s.on('connect', () => {
        const fields = { kind: ChannelKind.PAGE, index, migrationId };
        s.write(encodeHello({ ...fields, authTag: channelTag(key, fields, s) }));
      });
      s.on('data', (chunk: Buffer) => {
        pageBytes += chunk.length;
        decoder.feed(chunk, (e) => {
          if (e.kind !== 'round-end') return;
          const n = (roundEnds.get(e.round) ?? 0) + 1;
          roundEnds.set(e.round, n);
          if (n === channels) send({ type: 'round-done', round: e.round });
        });
        const s0 = opts.stallPageChannels;
        if (typeof s0 === 'object' && pageBytes >= s0.afterBytes) stall();
      });
    });
  };

  const onRecord = (rec: StreamRecord, ramSection: { id: number }) => {
    opts.hooks?.onRecord?.(rec, io);
    if (rec.type === 'configuration') {
      pageSize = Number(rec.body.pageSize);
      ram = new Uint8Array(new SharedArrayBuffer(Number(rec.body.ramSize)));
    } else if (rec.type === 'command' && rec.command === Command.PING) {
      send({ type: 'pong', value: readPing(rec.payload) });
    } else if (rec.type === 'command' && rec.command === Command.SWITCHOVER_START) {
      onSwitchover();
      if (opts.stallPageChannels === 'at-switchover') stall();
    } else if (rec.type === 'eof') {
      eof = true;
      if (opts.completeAtEof) {
        const now = monotonicMs();
        send({ type: 'resumed', body: { checkpoints: { 'dst-vm-started': now } } });
        send({ type: 'shut', status: 0 });
        send({
          type: 'resumed',
          body: { guest: { 'self-check': { ok: true, pagesChecked: 1, badPages: 0, firstBad: [], ms: 1 } } },
        });
      }
    } else if (rec.type === 'start' && rec.idstr === 'ram') {
      ramSection.id = rec.sectionId;
    } else if (rec.type === 'part' && rec.sectionId === ramSection.id) {
      const r = decodeRamRecord(rec.payload);
      if (r.kind === 'page-channels' && opts.stallPageChannels !== 'never-connect')
        connectPages(r.channels.host, r.channels.ports);
      if (r.kind === 'page-channels' && opts.stallPageChannels === 'never-connect') stall();
    }
  };

  const server = net.createServer({ pauseOnConnect: true }, async (s) => {
    sockets.push(s);
    s.on('error', () => {});
    const raw = await readExact(s, HELLO_LENGTH, 5000, 'fake destination hello');
    const hello = decodeHello(raw);
    if (hello.kind === ChannelKind.MAIN) {
      mainSocket = s;
      // protocol 2 sources wait for ACCEPT (built raw: a protocol-1 build has no encoder for it)
      const version = raw.readUInt16BE(4);
      if (version >= 2) s.write(out(rawRpFrame(0x25, Buffer.from([version >> 8, version & 0xff])), 'main'));
      key = ChannelBinding.acceptMain(s, hello)!;
      migrationId = hello.migrationId;
      const framer = new StreamFramer();
      const ramSection = { id: -1 };
      s.on('data', (chunk: Buffer) => {
        for (const rec of framer.feed(chunk)) onRecord(rec, ramSection);
      });
      s.resume();
    } else if (hello.kind === ChannelKind.RETURN_PATH) {
      rp = s;
      const framer = new RpFramer();
      s.on('data', (chunk: Buffer) => {
        for (const m of framer.feed(chunk)) {
          if (m.type !== 'time') continue;
          const value = Number(m.body.value);
          if (opts.hooks?.onTimeProbe?.(value, io)) continue;
          send({ type: 'time', body: { value, t: monotonicMs() } });
        }
      });
      if (opts.hooks?.readReturnPath !== false) s.resume();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.close();
    for (const s of sockets) s.destroy();
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    stalledAt: () => stalledAt,
    stalled,
    switchover,
    pageBytes: () => pageBytes,
    sawEof: () => eof,
  };
}
