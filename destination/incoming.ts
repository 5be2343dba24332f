/**
 * The destination's receive side (QEMU process_incoming_migration analog):
 *
 *   waiting-hello ─▶ header ─▶ configuration ─▶ loading ─(EOF)─▶ verifying ─▶ running
 *         └──────────────┴────────────┴─────────────┴──────────────┴──────▶ failed
 *
 * Records from the main channel are processed one at a time in order (async: a device may prepare
 * resources). The guest starts only after every page verified and the image digest matched;
 * otherwise SHUT(1), an ERROR frame with the reason, and the guest is never started.
 */
import type net from 'node:net';
import { bootId } from '../shared/boot-id.js';
import {
  asMigrationError,
  ChecksumError,
  ErrorCode,
  type MigrationError,
  ProtocolError,
  SocketError,
} from '../shared/errors.js';
import { writeRamDump } from '../shared/guest/dump.js';
import { Guest, type WorkloadOptions } from '../shared/guest/guest.js';
import { PAGE_SIZE } from '../shared/guest/layout.js';
import type { GuestMemory } from '../shared/guest/memory.js';
import { monotonicMs } from '../shared/guest/vcpu-control.js';
import type { ChannelSecurity, LoadContext, LoadHandlers } from '../shared/handlers.js';
import { guestRamCap, MIN_GUEST_RAM } from '../shared/host-memory.js';
import { type Capabilities, compareCapabilities } from '../shared/options.js';
import type { ResumedBody } from '../shared/protocol/rp-bodies.js';
import {
  type ConfigurationBody,
  readPing,
  StreamFramer,
  type StreamRecord,
} from '../shared/protocol/stream-codec.js';
import { kebabCaseKeys } from '../shared/report-keys.js';
import { TraceEvent, Tracer } from '../shared/trace.js';
import { ImageDigestLoader } from './image-digest.js';
import { refuse } from './listener.js';
import { LoadVm } from './loadvm.js';
import { openMainReader } from './main-reader.js';
import { RamLoader } from './ram/ram-load.js';
import { ReturnPath } from './return-path.js';

export type IncomingState =
  | 'waiting-hello'
  | 'header'
  | 'configuration'
  | 'loading'
  | 'verifying'
  | 'running'
  | 'failed';

export interface IncomingOptions {
  capabilities: Capabilities;
  /** A guest allocated (and prefaulted) before the migration, or null to allocate on configuration. */
  guest: Guest | null;
  preallocMs: number;
  dumpRam?: string;
  /** TLS and the migration key for side channels (known once the main channel is accepted). */
  pageSecurity?: () => ChannelSecurity;
  /** Most page channels this side runs (its own --multifd-channels); a source asking for more is refused. */
  maxPageChannels?: number;
  /** No bytes from the source for this long fails the migration (the source pings every second). */
  stallTimeoutMs?: number;
  /** Device load handlers for the source's configuration (devices are configured alike on both sides). */
  devicesFor?: (
    config: ConfigurationBody,
    memory: GuestMemory,
    onPrepStart: (id: string, ms: number) => void,
  ) => LoadHandlers[];
}

export interface IncomingResult {
  status: 'completed' | 'failed';
  error?: MigrationError;
  report: Record<string, unknown>;
}

export class IncomingMigration {
  #state: IncomingState = 'waiting-hello';
  /** Told of every state change (QMP's MIGRATION events). */
  onStateChange: ((state: IncomingState) => void) | null = null;

  get state(): IncomingState {
    return this.#state;
  }

  set state(next: IncomingState) {
    if (next === this.#state) return;
    this.#state = next;
    this.onStateChange?.(next);
  }

  readonly tracer = new Tracer('destination');
  readonly rp = new ReturnPath(this.tracer);
  #guest: Guest | null;
  #ram: RamLoader | null = null;
  #digest = new ImageDigestLoader();
  #loadvm: LoadVm | null = null;
  #main: net.Socket | null = null;
  #preallocMs: number;
  #checkpoints: Record<string, number> = {};
  #vcpuReady: Promise<void> = Promise.resolve();
  #migrationId: Buffer = Buffer.alloc(16);
  readonly #bootId = bootId();
  /** Aborted when the migration fails: every wait of a handler ends then. */
  readonly #abort = new AbortController();
  #approvals: Record<string, number> = {};
  #prepStarted: Record<string, { at: number; ms: number }> = {};
  #done!: (r: IncomingResult) => void;
  readonly done = new Promise<IncomingResult>((resolve) => {
    this.#done = resolve;
  });

  constructor(private readonly opts: IncomingOptions) {
    this.#guest = opts.guest;
    this.#preallocMs = opts.preallocMs;
  }

  /** The main channel: read, frame, step each record in order. */
  async runMain(accepted: net.Socket, migrationId: Buffer): Promise<void> {
    const reader = openMainReader(accepted);
    const socket = reader.socket;
    this.#main = socket;
    this.#migrationId = migrationId;
    this.state = 'header';
    const stall = this.opts.stallTimeoutMs ?? 10_000;
    if (stall > 0) {
      socket.setTimeout(stall, () => {
        if (this.state === 'running' || this.state === 'failed') return;
        void this.fail(
          new SocketError(
            ErrorCode.TIMEOUT,
            `no data from the source for ${stall} ms (stall-timeout) in state '${this.state}'`,
          ),
        );
        socket.destroy();
      });
    }
    const framer = new StreamFramer({ transient: reader.transient });
    try {
      // not `for await`: leaving that loop on an error destroys the socket, and the ERROR frame
      // that tells the source why must still go out on it (see fail())
      for (let chunk = await reader.next(); chunk !== null; chunk = await reader.next()) {
        for (const rec of framer.feed(chunk)) {
          await this.#step(rec);
          if ((this.state as IncomingState) === 'running') return;
        }
        // every record so far is processed: the memory of the bytes it came from may be reused
        reader.release(framer.consumed);
      }
      framer.end();
      throw new ProtocolError(
        ErrorCode.TRUNCATED,
        `main channel closed by the source in state '${this.state}'`,
      );
    } catch (err) {
      await this.fail(asMigrationError(err, ErrorCode.INTERNAL));
    }
  }

  attachReturnPath(socket: net.Socket): void {
    // the source's clock probes arrive on the return path's idle direction: answer with our clock
    this.rp.onTimeProbe = (value) =>
      void this.rp
        .send({ type: 'time', body: { value, t: monotonicMs(), boot: this.#bootId } })
        .catch(() => {});
    this.rp.attach(socket, (e) => {
      if (this.state !== 'running' && this.state !== 'failed') void this.fail(e);
    });
  }

  async #step(rec: StreamRecord): Promise<void> {
    switch (rec.type) {
      case 'header':
        return this.#expect('header', rec.type, 'configuration');
      case 'configuration':
        this.#expect('configuration', rec.type, 'loading');
        return this.#onConfiguration(rec.body);
      case 'command':
        this.#expect('loading', rec.type);
        return this.#onCommand(rec.command, rec.payload);
      case 'start':
      case 'part':
      case 'end':
      case 'full':
        this.#expect('loading', rec.type);
        // in order, one at a time: a handler that waits (RAM for its page channels' last round,
        // a device preparing) holds back everything after its section
        return this.#loadvm!.load(rec);
      case 'eof':
        this.#expect('loading', rec.type, 'verifying');
        // the source sends nothing more until our SHUT: its silence is no longer a stall
        this.#main?.setTimeout(0);
        return this.#finish();
      case 'vmdesc':
        return;
    }
  }

  #expect(state: IncomingState, what: string, next?: IncomingState): void {
    if (this.state !== state) {
      throw new ProtocolError(
        ErrorCode.STATE,
        `unexpected ${what} record in state '${this.state}' (expected state '${state}')`,
      );
    }
    if (next) this.state = next;
  }

  #onConfiguration(config: ConfigurationBody): void {
    compareCapabilities(config.capabilities, this.opts.capabilities);
    if (config.machine !== 'switchover-guest') {
      throw new ProtocolError(
        ErrorCode.CONFIG_MISMATCH,
        `machine '${config.machine}' is not 'switchover-guest'`,
      );
    }
    if (this.#guest) {
      const have = this.#guest.memory.pageCount * this.#guest.memory.pageSize;
      if (have !== config.ramSize) {
        throw new ProtocolError(
          ErrorCode.CONFIG_MISMATCH,
          `source guest has ${config.ramSize} bytes of RAM, this destination prepared ${have}`,
        );
      }
    } else {
      checkRamRequest(config.ramSize, config.pageSize);
      this.#guest = Guest.incoming(config.ramSize, config.pageSize);
      this.#preallocMs = this.#guest.memory.prefault();
      this.onGuest?.(this.#guest);
    }
    const g = (config.guest ?? {}) as Partial<Record<keyof WorkloadOptions, unknown>>;
    const dirtyRate = g.dirtyRate === 'max' ? Number.POSITIVE_INFINITY : Number(g.dirtyRate ?? 0);
    const pattern = (['uniform', 'hot', 'sequential'] as const).find((p) => p === g.pattern) ?? 'uniform';
    this.#vcpuReady = this.#guest.prepare({ dirtyRate, pattern, dirtyRange: Number(g.dirtyRange ?? 0) });
    this.#vcpuReady.catch(() => {});
    this.#ram = new RamLoader(this.#guest.memory, { pageChannels: this.#pageChannels(config) });
    const devices =
      this.opts.devicesFor?.(config, this.#guest.memory, (id, ms) => this.#onPrepStart(id, ms)) ?? [];
    this.#loadvm = new LoadVm([this.#ram, ...devices, this.#digest]);
    const pending = this.#loadvm.setup(this.#loadContext(), this.opts.capabilities['switchover-ack']);
    this.tracer.emit(TraceEvent.LOAD, { phase: 'setup', ackPending: pending });
  }

  /** Page channels the source's configuration asks for: 0 without multifd, else 1..this side's limit. */
  #pageChannels(config: ConfigurationBody): number {
    if (!this.opts.capabilities.multifd) return 0;
    const channels = config.multifdChannels;
    const limit = this.opts.maxPageChannels ?? 255;
    if (typeof channels !== 'number' || !Number.isInteger(channels) || channels < 1 || channels > 255)
      throw new ProtocolError(
        ErrorCode.MALFORMED,
        `configuration: multifdChannels ${String(channels)} is not 1..255`,
      );
    if (channels > limit)
      throw new ProtocolError(
        ErrorCode.CONFIG_MISMATCH,
        `the source asks for ${channels} page channels, this destination runs at most ${limit} (its --multifd-channels)`,
      );
    return channels;
  }

  /** What load handlers get: the return path, failure, the main connection's facts, deadline and abort. */
  #loadContext(): LoadContext {
    return {
      approveSwitchover: (idstr) => this.#approve(idstr),
      sendToSource: (m) => void this.rp.send(m).catch(() => {}),
      fail: (e) => void this.fail(e),
      link: {
        peerAddress: this.#main?.remoteAddress ?? '',
        localAddress: this.#main?.localAddress ?? '',
        migrationId: this.#migrationId,
        security: this.opts.pageSecurity?.() ?? { tls: null, key: Buffer.alloc(32) },
      },
      stallTimeoutMs: this.opts.stallTimeoutMs ?? 10_000,
      signal: this.#abort.signal,
    };
  }

  #approve(idstr: string): void {
    const done = this.#loadvm!.approve(idstr);
    this.#approvals[idstr] = monotonicMs();
    void this.#sendLoadCost(0).catch(() => {});
    if (done) void this.rp.send({ type: 'switchover-ack' }).catch(() => {});
  }

  /** A device began preparing: tell the source what the final load will cost (expected downtime). */
  #onPrepStart(id: string, ms: number): void {
    this.#prepStarted[id] = { at: monotonicMs(), ms };
    void this.#sendLoadCost(Number.isFinite(ms) ? ms : 0).catch(() => {});
  }

  #sendLoadCost(finalLoadMs: number): Promise<void> {
    return this.rp.send({
      type: 'load-cost',
      body: {
        'final-load-ms': finalLoadMs,
        waiting: [...(this.#loadvm?.waiting ?? [])],
        approvals: this.#approvals,
      },
    });
  }

  async #onCommand(command: number, payload: Buffer): Promise<void> {
    switch (command) {
      case 1: // OPEN_RETURN_PATH
        await this.rp.waitOpen(5000);
        if (this.opts.capabilities['switchover-ack'] && this.#loadvm!.ackPending === 0)
          await this.rp.send({ type: 'switchover-ack' });
        return;
      case 2: // PING
        return this.rp.send({ type: 'pong', value: readPing(payload) });
      case 11: // SWITCHOVER_START
        this.#checkpoint('dst-switchover-start');
        return;
      default:
        return;
    }
  }

  #checkpoint(name: string): number {
    const t = monotonicMs();
    this.#checkpoints[name] = t;
    this.tracer.emit(TraceEvent.CHECKPOINT, { name });
    return t;
  }

  /** EOF: verify everything, then start the guest, then SHUT(0), then what the source reports. */
  async #finish(): Promise<void> {
    const ram = this.#ram!;
    ram.verifyComplete();
    const dstDigest = ram.digest();
    if (this.#digest.digest === null)
      throw new ProtocolError(ErrorCode.TRUNCATED, 'no image digest before EOF');
    if (dstDigest !== this.#digest.digest) {
      throw new ChecksumError(
        ErrorCode.DIGEST,
        `image digest mismatch: source ${this.#digest.digest}, destination ${dstDigest}`,
      );
    }
    this.#checkpoint('dst-loadvm-completed');
    if (this.opts.dumpRam) await writeRamDump(this.opts.dumpRam, this.#guest!.memory.bytes);
    await this.#vcpuReady;
    // the source may have given up meanwhile (its channels closed: fail() ran): then never start
    if ((this.state as IncomingState) === 'failed') return;
    await this.#guest!.resume();
    this.#checkpoint('dst-vm-started');
    this.state = 'running';
    // SHUT(0) first: the source's downtime ends when it arrives, and the guest already runs; the
    // facts below (the vCPU's gap message, encoding) took 2-4 ms of the source's downtime before it
    await this.rp.send({ type: 'shut', status: 0 });
    const gap = await this.#guest!.resumedGap();
    const integrity = {
      'pages-verified': ram.pagesVerified,
      'digest-destination': dstDigest,
      'torn-copies': ram.tornCopies,
      'checksum-backend': ram.checksumBackend,
    };
    const devices = this.#deviceFacts();
    await this.rp.send({
      type: 'resumed',
      body: { checkpoints: this.#checkpoints, integrity, gap, devices },
    });
    const selfCheck = await this.#guest!.selfCheck();
    await this.rp.send({ type: 'resumed', body: { guest: { 'self-check': selfCheck } } }).catch(() => {});
    this.rp.close();
    this.#main?.destroy();
    this.#loadvm?.cleanup();
    this.#done({
      status: 'completed',
      report: {
        status: 'completed',
        'dst-prealloc-ms': Math.round(this.#preallocMs),
        guest: kebabCaseKeys({ 'self-check': selfCheck, 'resume-gap': gap }),
        integrity: { ...integrity, 'digest-source': this.#digest.digest, match: true },
        checkpoints: this.#checkpoints,
        devices,
      },
    });
  }

  /** Per device: measured preparation and when it approved the switchover (monotonic ms). */
  #deviceFacts(): NonNullable<ResumedBody['devices']> {
    const out: NonNullable<ResumedBody['devices']> = {};
    for (const h of this.#loadvm?.handlers ?? []) {
      const d = h as { prepMs?: number | null; approvedAt?: number | null; loadedTotal?: number };
      if (d.loadedTotal === undefined) continue;
      out[h.idstr] = {
        'prep-ms': d.prepMs ?? null,
        'approved-at': d.approvedAt ?? null,
        loaded: d.loadedTotal,
      };
    }
    return out;
  }

  /** Fails once: tell the source why (RP ERROR + SHUT(1), and an ERROR frame on the main socket). */
  async fail(err: MigrationError): Promise<void> {
    if (this.state === 'failed' || this.state === 'running') return;
    this.state = 'failed';
    this.#abort.abort(err);
    this.tracer.emit(TraceEvent.ERROR, { code: err.code, message: err.message });
    if (process.env.SWITCHOVER_DEBUG === '1')
      process.stderr.write(`${(err.cause as Error | undefined)?.stack ?? err.stack}\n`);
    // the configuration can be refused before the source's return path is accepted: give it a moment
    if (this.opts.capabilities['return-path']) await this.rp.waitOpen(1000).catch(() => {});
    await this.rp.send({ type: 'error', code: err.code, message: err.message }).catch(() => {});
    await this.rp.send({ type: 'shut', status: 1 }).catch(() => {});
    this.rp.close();
    if (this.#main) await refuse(this.#main, err);
    this.#loadvm?.cleanup();
    this.#done({
      status: 'failed',
      error: err,
      report: { status: 'failed', 'error-desc': err.message, 'error-code': err.code },
    });
  }

  /** Called when the guest is allocated on configuration (no --ram preallocation). */
  onGuest?: (g: Guest) => void;

  get guest(): Guest | null {
    return this.#guest;
  }
}

/**
 * Without --ram the destination allocates what the source's configuration asks for: refuse sizes it
 * cannot honestly hold (a hostile or broken peer must not make it allocate without bound).
 */
function checkRamRequest(ramSize: number, pageSize: number): void {
  if (pageSize !== PAGE_SIZE) {
    throw new ProtocolError(
      ErrorCode.CONFIG_MISMATCH,
      `configuration: page size ${pageSize}, this destination supports ${PAGE_SIZE}`,
    );
  }
  const cap = guestRamCap();
  if (
    !Number.isSafeInteger(ramSize) ||
    ramSize % pageSize !== 0 ||
    ramSize < MIN_GUEST_RAM ||
    ramSize > cap.bytes
  ) {
    throw new ProtocolError(
      ErrorCode.CONFIG_MISMATCH,
      `configuration: guest RAM of ${ramSize} bytes is not a whole number of pages between ${MIN_GUEST_RAM} and ${cap.bytes} (${cap.why})`,
    );
  }
}
