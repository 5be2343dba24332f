/**
 * Independent byte builder for expected wire bytes. It uses only Buffer.alloc and write*BE, and
 * spells every magic number and type byte out as a literal, so it shares no code with the encoders
 * under test (pg-protocol's testing approach). msgpack bodies come from msgpackr directly.
 */
import { Packr } from 'msgpackr';

const packr = new Packr({ useRecords: false });

/** msgpack bytes of a value, independent of shared/protocol/msgpack.ts. */
export function msgpack(value: unknown): Buffer {
  return Buffer.from(packr.pack(value));
}

export class Bytes {
  readonly #parts: Buffer[] = [];

  u8(v: number): this {
    const b = Buffer.alloc(1);
    b.writeUInt8(v, 0);
    return this.#push(b);
  }

  u16(v: number): this {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(v, 0);
    return this.#push(b);
  }

  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v, 0);
    return this.#push(b);
  }

  u64(v: bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(v, 0);
    return this.#push(b);
  }

  raw(bytes: Uint8Array | number[]): this {
    return this.#push(Buffer.from(bytes));
  }

  str(s: string): this {
    return this.#push(Buffer.from(s, 'utf8'));
  }

  zeros(n: number): this {
    return this.#push(Buffer.alloc(n));
  }

  build(): Buffer {
    return Buffer.concat(this.#parts);
  }

  #push(b: Buffer): this {
    this.#parts.push(b);
    return this;
  }
}

export const b = (): Bytes => new Bytes();

export function hello(kind: number, index: number, id: Buffer, tag: Buffer = Buffer.alloc(32)): Buffer {
  return b().u32(0x53574f56).u16(2).u8(kind).u8(index).raw(id).raw(tag).build();
}

export function streamHeader(magic = 0x53575354, version = 2): Buffer {
  return b().u32(magic).u32(version).build();
}

export function configuration(body: Buffer): Buffer {
  return b().u8(0x07).u32(body.length).raw(body).build();
}

export interface Footer {
  marker?: number;
  id?: number;
}

/** START (0x01) or FULL (0x04). */
export function sectionWithHeader(
  type: 0x01 | 0x04,
  id: number,
  idstr: string,
  instance: number,
  version: number,
  payload: Buffer,
  footer: Footer = {},
): Buffer {
  const name = Buffer.from(idstr, 'utf8');
  return b()
    .u8(type)
    .u32(id)
    .u8(name.length)
    .raw(name)
    .u32(instance)
    .u32(version)
    .u32(payload.length)
    .raw(payload)
    .u8(footer.marker ?? 0x7e)
    .u32(footer.id ?? id)
    .build();
}

/** PART (0x02) or END (0x03). */
export function sectionShort(type: 0x02 | 0x03, id: number, payload: Buffer, footer: Footer = {}): Buffer {
  return b()
    .u8(type)
    .u32(id)
    .u32(payload.length)
    .raw(payload)
    .u8(footer.marker ?? 0x7e)
    .u32(footer.id ?? id)
    .build();
}

export function command(cmd: number, payload: Buffer = Buffer.alloc(0), len = payload.length): Buffer {
  return b().u8(0x08).u16(cmd).u16(len).raw(payload).build();
}

export function eof(): Buffer {
  return Buffer.from([0x00]);
}

export function vmdesc(text: string): Buffer {
  const body = Buffer.from(text, 'utf8');
  return b().u8(0x06).u32(body.length).raw(body).build();
}

export function rp(type: number, payload: Buffer = Buffer.alloc(0), len = payload.length): Buffer {
  return b().u16(type).u16(len).raw(payload).build();
}

export function be32(v: number): Buffer {
  return b().u32(v).build();
}

export function ramGeometry(body: Buffer): Buffer {
  return b().u8(0x01).u32(body.length).raw(body).build();
}

export interface BatchPage {
  index: number;
  /** Page bytes; omitted (or zero flag) for zero pages. */
  data?: Buffer;
  zero?: boolean;
  checksum: bigint;
  /** Raw descriptor flag byte, to override the ZERO flag. */
  flags?: number;
}

/** A PAGES record: 16-byte header, 16-byte descriptors, then data of the non-zero pages. */
export function pageBatch(
  blockId: number,
  round: number,
  pages: BatchPage[],
  opts: { dataLen?: number; count?: number; headerFlags?: number } = {},
): Buffer {
  const data = Buffer.concat(pages.filter((p) => !p.zero).map((p) => p.data ?? Buffer.alloc(0)));
  const out = b()
    .u8(0x02)
    .u8(opts.headerFlags ?? 0)
    .u16(blockId)
    .u32(round)
    .u32(opts.count ?? pages.length)
    .u32(opts.dataLen ?? data.length);
  for (const p of pages) {
    out
      .u32(p.index)
      .u8(p.flags ?? (p.zero ? 0x01 : 0x00))
      .zeros(3)
      .u64(p.checksum);
  }
  return out.raw(data).build();
}

/** A page channel's ROUND_END frame: kind 0x05, then zeros but the be32 round at byte 4. */
export function roundEnd(round: number, opts: { reserved?: number; count?: number } = {}): Buffer {
  return b()
    .u8(0x05)
    .u8(opts.reserved ?? 0)
    .u16(0)
    .u32(round)
    .u32(opts.count ?? 0)
    .u32(0)
    .build();
}

/** RAM record PAGE_CHANNELS (0x06): be32 length, msgpack {host, ports}. */
export function ramPageChannels(body: Buffer): Buffer {
  return b().u8(0x06).u32(body.length).raw(body).build();
}
