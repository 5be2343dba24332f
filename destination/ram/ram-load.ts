/**
 * The RAM load handler: geometry at START, pages from the main channel (PART/END batches) or from
 * page channels (announced by a PAGE_CHANNELS record right after START), FINAL_ROUND (page channels:
 * nothing after this section loads until that round has landed on every channel), EOS in END.
 *
 * Both paths place pages the same way: the bytes land in guest RAM, then the one verifier checks
 * each page against its checksum (shared/ram/page-batch-verifier.ts): RECEIVED with its checksum
 * kept for the image digest, or TORN (dropped; a newer copy must come). Before the guest may resume,
 * every page must be RECEIVED (verifyComplete) and the digests must match (incoming.ts).
 */
import { ChecksumError, ErrorCode, ProtocolError } from '../../shared/errors.js';
import type { GuestMemory } from '../../shared/guest/memory.js';
import type { LoadContext, LoadHandlers } from '../../shared/handlers.js';
import { MAX_BATCH_PAGES, PAGE_BATCH_HEADER, PAGE_DESCRIPTOR } from '../../shared/protocol/constants.js';
import { decodeFrameHeader, scanDescriptors } from '../../shared/protocol/page-batch.js';
import {
  decodeRamRecord,
  type PageChannelPorts,
  type RamGeometry,
} from '../../shared/protocol/ram-records.js';
import type { Copier, SectionPayload } from '../../shared/protocol/section-payload.js';
import { imageDigest } from '../../shared/ram/checksum.js';
import { loadNativeHash, prepareNativeHash } from '../../shared/ram/native-hash.js';
import type { ChecksumBackend } from '../../shared/ram/page-batch-builder.js';
import { PageBatchVerifier, PageState } from '../../shared/ram/page-batch-verifier.js';
import { ramCopier } from '../../shared/ram/ram-copy.js';
import { DestinationPageChannels } from './page-channels.js';

type Kind = 'start' | 'part' | 'end' | 'full';

export interface RamLoadOptions {
  /** Page channels the source configured (checked against this side's limit by the caller), or 0. */
  pageChannels: number;
}

export class RamLoader implements LoadHandlers {
  readonly idstr = 'ram';
  readonly instanceId = 0;
  readonly version = 1;
  readonly minVersion = 1;
  /** Checksum of the newest verified copy of each page, and each page's PageState (shared with workers). */
  readonly checksums: BigUint64Array;
  readonly received: Uint8Array;
  readonly #verifier: PageBatchVerifier;
  readonly #copy: Copier;
  readonly #head = Buffer.alloc(PAGE_BATCH_HEADER);
  readonly #desc = Buffer.alloc(MAX_BATCH_PAGES * PAGE_DESCRIPTOR);
  readonly #runs = new Int32Array(2 * MAX_BATCH_PAGES);
  #channels: DestinationPageChannels | null = null;
  #geometrySeen = false;
  #channelsAnnounced = false;
  #pagesSeen = false;
  #eos = false;
  #finalRound: number | null = null;
  #mainVerified = 0;
  #mainTorn = 0;

  constructor(
    private readonly memory: GuestMemory,
    private readonly opts: RamLoadOptions,
  ) {
    this.checksums = new BigUint64Array(new SharedArrayBuffer(memory.pageCount * 8));
    this.received = new Uint8Array(new SharedArrayBuffer(memory.pageCount));
    const native = loadNativeHash(prepareNativeHash());
    this.#verifier = new PageBatchVerifier(
      { ram: memory.bytes, pageSize: memory.pageSize, checksums: this.checksums, received: this.received },
      native,
    );
    this.#copy = ramCopier(native);
  }

  /** Which page hasher verifies (ram.checksum-backend). */
  get checksumBackend(): ChecksumBackend {
    return this.#verifier.backend;
  }

  get pagesVerified(): number {
    return this.#mainVerified + (this.#channels?.pagesVerified ?? 0);
  }

  /** Page copies dropped because they failed their checksum (torn by guest writes while sent). */
  get tornCopies(): number {
    return this.#mainTorn + (this.#channels?.tornCopies ?? 0);
  }

  /** Page channels boot now, while the source is still setting up, so they are warm when it announces them. */
  loadSetup(ctx: LoadContext): void {
    if (this.opts.pageChannels > 0)
      this.#channels = new DestinationPageChannels(this.memory, this.opts.pageChannels, this, ctx);
  }

  loadState(kind: Kind, payload: SectionPayload): void | Promise<void> {
    const rec = decodeRamRecord(payload);
    switch (rec.kind) {
      case 'geometry':
        expect(
          kind === 'start' && !this.#geometrySeen,
          `GEOMETRY in a ${kind.toUpperCase()} section or repeated`,
        );
        return this.#checkGeometry(rec.geometry);
      case 'page-channels':
        return this.#connect(kind, rec.channels);
      case 'pages':
        expect(
          (kind === 'part' || kind === 'end') && this.#geometrySeen,
          `pages in a ${kind.toUpperCase()} section or before geometry`,
        );
        this.#pagesSeen = true;
        return this.#place(payload);
      case 'eos':
        if (kind === 'end') this.#eos = true;
        return;
      case 'final-round':
        // sent in the completion stage (a PART or the END section), never twice, only with page channels
        expect(
          (kind === 'part' || kind === 'end') && this.#channelsAnnounced && this.#finalRound === null,
          `FINAL_ROUND ${rec.round} in a ${kind.toUpperCase()} section, repeated, or without page channels`,
        );
        this.#finalRound = rec.round;
        // RAM before devices, as QEMU loads them: device state is checked against guest RAM
        return this.#channels!.roundEnded(rec.round);
    }
  }

  #checkGeometry(g: RamGeometry): void {
    if (g.pageSize !== this.memory.pageSize || g.pageCount !== this.memory.pageCount) {
      throw new ProtocolError(
        ErrorCode.CONFIG_MISMATCH,
        `ram: source has ${g.pageCount} pages of ${g.pageSize} bytes, destination ${this.memory.pageCount} of ${this.memory.pageSize}`,
        { section: 'ram' },
      );
    }
    this.#geometrySeen = true;
  }

  #connect(kind: Kind, channels: PageChannelPorts): void {
    expect(
      kind === 'part' &&
        this.#geometrySeen &&
        !this.#pagesSeen &&
        !this.#channelsAnnounced &&
        this.#channels !== null,
      'PAGE_CHANNELS out of place (after geometry, before pages, once, only with multifd)',
    );
    this.#channelsAnnounced = true;
    this.#channels!.connect(channels);
  }

  /** A main-channel batch: pages copied from the payload into guest RAM, then verified there. */
  #place(payload: SectionPayload): void {
    const { pageSize: ps, pageCount, bytes } = this.memory;
    if (payload.length < PAGE_BATCH_HEADER)
      throw new ProtocolError(
        ErrorCode.TRUNCATED,
        `ram: page batch of ${payload.length} bytes has no header`,
        {
          section: 'ram',
          offset: payload.length,
        },
      );
    payload.copyTo(this.#head, 0);
    const h = decodeFrameHeader(this.#head, ps, false);
    if (h.kind !== 'pages')
      throw new ProtocolError(ErrorCode.MALFORMED, 'ram: not a page batch', { section: 'ram' });
    const dataAt = PAGE_BATCH_HEADER + h.count * PAGE_DESCRIPTOR;
    if (payload.length !== dataAt + h.dataLen)
      throw new ProtocolError(
        payload.length < dataAt + h.dataLen ? ErrorCode.TRUNCATED : ErrorCode.MALFORMED,
        `ram: page batch is ${payload.length} bytes, its header declares ${dataAt + h.dataLen}`,
        { section: 'ram', offset: Math.min(payload.length, dataAt + h.dataLen) },
      );
    const desc = this.#desc.subarray(0, h.count * PAGE_DESCRIPTOR);
    payload.copyTo(desc, PAGE_BATCH_HEADER);
    const runs = scanDescriptors(desc, h.count, ps, pageCount, h.dataLen, this.#runs);
    let at = dataAt;
    for (let k = 0; k < 2 * runs; k += 2) {
      const first = this.#runs[k]!;
      const end = this.#runs[k + 1]!;
      payload.copyTo(bytes.subarray(first * ps, end * ps), at, this.#copy);
      at += (end - first) * ps;
    }
    const torn = this.#verifier.verify(desc, h.count);
    this.#mainVerified += h.count - torn;
    this.#mainTorn += torn;
  }

  /** Before resume: the RAM END section was seen and every page's newest copy verified. */
  verifyComplete(): void {
    if (!this.#eos)
      throw new ProtocolError(ErrorCode.TRUNCATED, 'ram: stream ended without the RAM END section', {
        section: 'ram',
      });
    // a Buffer view searches natively (memchr); a typed array over shared memory goes element by element
    // (0.5 ms for a 1 GiB guest, inside the downtime)
    const received = Buffer.from(this.received.buffer, this.received.byteOffset, this.received.byteLength);
    const torn = received.indexOf(PageState.TORN);
    if (torn >= 0)
      throw new ChecksumError(
        ErrorCode.CHECKSUM,
        `ram: page ${torn} fails its checksum and no good copy followed`,
        {
          section: 'ram',
          page: torn,
        },
      );
    const missing = received.indexOf(PageState.MISSING);
    if (missing >= 0)
      throw new ProtocolError(ErrorCode.TRUNCATED, `ram: page ${missing} was never received`, {
        section: 'ram',
        page: missing,
      });
  }

  digest(): string {
    return imageDigest(this.checksums);
  }

  loadCleanup(): void {
    this.#channels?.close();
  }
}

function expect(ok: boolean, message: string): void {
  if (!ok) throw new ProtocolError(ErrorCode.MALFORMED, `ram: ${message}`, { section: 'ram' });
}
