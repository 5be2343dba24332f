/**
 * The client → server half of QMP: a byte stream of JSON values with nothing between them (or any
 * whitespace), split at arbitrary points. A port of QEMU's qobject/json-lexer.c, json-streamer.c and
 * json-parser.c, so input is accepted, refused and resynchronised as QEMU does it:
 * - the lexer is QEMU's state table, with its extensions: 'single-quoted' strings and \' escapes;
 *   an impossible byte (a control character other than whitespace inside or between tokens, 0xFE,
 *   0xFF, a stray character) is a lexical error "JSON parse error, stray '...'", after which input is
 *   skipped up to the next structural character ({ } [ ] : ,) or control character (how a QMP client
 *   forces the parser back into a known state, docs/interop/qmp-spec.rst);
 * - the streamer counts { } and [ ] outside strings and hands the tokens of a value to the parser
 *   as soon as the count is back to zero (or below: a stray closing bracket is a value of its own,
 *   refused by the parser);
 * - the parser builds the value: integers that fit int64 or uint64 stay integers (bigints beyond
 *   2^53, so a uint64 loses nothing), other numbers are doubles; strings must be valid (modified)
 *   UTF-8 without noncharacters or lone surrogates; duplicate keys are refused; its messages are
 *   QEMU's ("JSON parse error, expecting value", "... duplicate key", ...).
 *
 * Bounds, as QEMU's (MAX_TOKEN_SIZE, MAX_TOKEN_COUNT, MAX_NESTING) and with its texts, but the size
 * bound defaults to 1 MiB instead of QEMU's 64 MiB: "JSON token size limit exceeded", "JSON token
 * count limit exceeded", "JSON nesting depth limit exceeded". Where QEMU then restarts from the
 * middle of the oversized value (answering every stray token of its rest with another error), we
 * skip the rest of that value, counting brackets without keeping tokens, and answer once; a lexical
 * error while skipping ends the skip (the qmp-spec way to resynchronise still works). Memory per
 * stream is bounded by the size bound whatever arrives.
 *
 * The class is pure (no I/O): feed() bytes, then next() returns one item at a time, so the caller
 * decides how much to parse ahead (the server parses one request at a time, like QEMU's monitor).
 */
import { JsonDouble, type JsonObject, type JsonValue } from './json.js';

export type JsonItem = { ok: true; value: JsonValue } | { ok: false; error: string };

export interface JsonStreamerLimits {
  /** Bytes of tokens in one value, and of one token (QEMU: 64 MiB). Default 1 MiB. */
  maxTokenSize?: number;
  /** Tokens in one value (QEMU: 2 Mi). */
  maxTokenCount?: number;
  /** Depth of {} and [] (QEMU: 1024). */
  maxNesting?: number;
}

// Token types and lexer states, numbered as in QEMU (json-parser-int.h, json-lexer.c).
const JSON_ERROR = 0;
const IN_RECOVERY = 1;
const IN_DQ_STRING_ESCAPE = 2;
const IN_DQ_STRING = 3;
const IN_SQ_STRING_ESCAPE = 4;
const IN_SQ_STRING = 5;
const IN_ZERO = 6;
const IN_EXP_DIGITS = 7;
const IN_EXP_SIGN = 8;
const IN_EXP_E = 9;
const IN_MANTISSA = 10;
const IN_MANTISSA_DIGITS = 11;
const IN_DIGITS = 12;
const IN_SIGN = 13;
const IN_KEYWORD = 14;
const IN_START = 16; // 15 is IN_INTERP: interpolation is for QEMU's own C callers, never for input
const JSON_LCURLY = 100;
const JSON_RCURLY = 101;
const JSON_LSQUARE = 102;
const JSON_RSQUARE = 103;
const JSON_COLON = 104;
const JSON_COMMA = 105;
const JSON_INTEGER = 106;
const JSON_FLOAT = 107;
const JSON_KEYWORD = 108;
const JSON_STRING = 109;
const LOOKAHEAD = 0x80;

const TABLE: Uint8Array[] = buildTable();

function buildTable(): Uint8Array[] {
  const t = Array.from({ length: IN_START + 1 }, () => new Uint8Array(256)); // 0 = JSON_ERROR
  const set = (state: number, from: number | string, to: number | string, next: number) => {
    const a = typeof from === 'string' ? from.charCodeAt(0) : from;
    const b = typeof to === 'string' ? to.charCodeAt(0) : to;
    for (let c = a; c <= b; c++) t[state]![c] = next;
  };
  const one = (state: number, ch: string, next: number) => set(state, ch, ch, next);
  const terminal = (state: number, token: number) => set(state, 0, 0xff, token | LOOKAHEAD);

  set(IN_RECOVERY, 0, 0x1f, IN_START | LOOKAHEAD);
  set(IN_RECOVERY, 0x20, 0xfd, IN_RECOVERY);
  set(IN_RECOVERY, 0xfe, 0xff, IN_START | LOOKAHEAD);
  one(IN_RECOVERY, '\t', IN_RECOVERY);
  for (const ch of '[]{}:,') one(IN_RECOVERY, ch, IN_START | LOOKAHEAD);

  set(IN_DQ_STRING_ESCAPE, 0x20, 0xfd, IN_DQ_STRING);
  set(IN_DQ_STRING, 0x20, 0xfd, IN_DQ_STRING);
  one(IN_DQ_STRING, '\\', IN_DQ_STRING_ESCAPE);
  one(IN_DQ_STRING, '"', JSON_STRING);
  set(IN_SQ_STRING_ESCAPE, 0x20, 0xfd, IN_SQ_STRING);
  set(IN_SQ_STRING, 0x20, 0xfd, IN_SQ_STRING);
  one(IN_SQ_STRING, '\\', IN_SQ_STRING_ESCAPE);
  one(IN_SQ_STRING, "'", JSON_STRING);

  terminal(IN_ZERO, JSON_INTEGER);
  set(IN_ZERO, '0', '9', JSON_ERROR);
  one(IN_ZERO, '.', IN_MANTISSA);
  terminal(IN_EXP_DIGITS, JSON_FLOAT);
  set(IN_EXP_DIGITS, '0', '9', IN_EXP_DIGITS);
  set(IN_EXP_SIGN, '0', '9', IN_EXP_DIGITS);
  one(IN_EXP_E, '-', IN_EXP_SIGN);
  one(IN_EXP_E, '+', IN_EXP_SIGN);
  set(IN_EXP_E, '0', '9', IN_EXP_DIGITS);
  terminal(IN_MANTISSA_DIGITS, JSON_FLOAT);
  set(IN_MANTISSA_DIGITS, '0', '9', IN_MANTISSA_DIGITS);
  one(IN_MANTISSA_DIGITS, 'e', IN_EXP_E);
  one(IN_MANTISSA_DIGITS, 'E', IN_EXP_E);
  set(IN_MANTISSA, '0', '9', IN_MANTISSA_DIGITS);
  terminal(IN_DIGITS, JSON_INTEGER);
  set(IN_DIGITS, '0', '9', IN_DIGITS);
  one(IN_DIGITS, 'e', IN_EXP_E);
  one(IN_DIGITS, 'E', IN_EXP_E);
  one(IN_DIGITS, '.', IN_MANTISSA);
  one(IN_SIGN, '0', IN_ZERO);
  set(IN_SIGN, '1', '9', IN_DIGITS);
  terminal(IN_KEYWORD, JSON_KEYWORD);
  set(IN_KEYWORD, 'a', 'z', IN_KEYWORD);

  one(IN_START, '"', IN_DQ_STRING);
  one(IN_START, "'", IN_SQ_STRING);
  one(IN_START, '0', IN_ZERO);
  set(IN_START, '1', '9', IN_DIGITS);
  one(IN_START, '-', IN_SIGN);
  one(IN_START, '{', JSON_LCURLY);
  one(IN_START, '}', JSON_RCURLY);
  one(IN_START, '[', JSON_LSQUARE);
  one(IN_START, ']', JSON_RSQUARE);
  one(IN_START, ',', JSON_COMMA);
  one(IN_START, ':', JSON_COLON);
  set(IN_START, 'a', 'z', IN_KEYWORD);
  for (const ch of ' \t\r\n') one(IN_START, ch, IN_START);
  return t;
}

const latin1 = (b: Uint8Array, start = 0, end = b.length) =>
  Buffer.from(b.buffer, b.byteOffset + start, end - start).toString('latin1');
const utf8Lossy = new TextDecoder('utf-8', { fatal: false });

export class JsonStreamer {
  readonly #maxTokenSize: number;
  readonly #maxTokenCount: number;
  readonly #maxNesting: number;

  // input not yet lexed
  #chunks: Uint8Array[] = [];
  #chunkPos = 0;
  #pending = 0;

  // lexer
  #state = IN_START;
  #tok = new Uint8Array(64);
  #tokLen = 0;
  #tokOverflow = false;

  // streamer
  #braces = 0;
  #brackets = 0;
  #types: number[] = [];
  #texts: (Uint8Array | undefined)[] = [];
  #tokenSize = 0;
  #skipping = false;

  #out: JsonItem[] = [];

  constructor(limits: JsonStreamerLimits = {}) {
    this.#maxTokenSize = limits.maxTokenSize ?? 1 << 20;
    this.#maxTokenCount = limits.maxTokenCount ?? 2 << 20;
    this.#maxNesting = limits.maxNesting ?? 1 << 10;
  }

  /** Bytes fed and not yet lexed. */
  get pendingBytes(): number {
    return this.#pending;
  }

  /** Queues bytes; nothing is parsed until next(). */
  feed(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#pending += chunk.length;
  }

  /** The next complete value or error, lexing as much queued input as that takes; undefined when more input is needed. */
  next(): JsonItem | undefined {
    while (this.#out.length === 0 && this.#chunks.length > 0) {
      const chunk = this.#chunks[0]!;
      while (this.#chunkPos < chunk.length && this.#out.length === 0) {
        this.#feedChar(chunk[this.#chunkPos++]!);
        this.#pending--;
      }
      if (this.#chunkPos >= chunk.length) {
        this.#chunks.shift();
        this.#chunkPos = 0;
      }
    }
    return this.#out.shift();
  }

  /** feed() then every item that input completes. */
  push(chunk: Uint8Array): JsonItem[] {
    this.feed(chunk);
    return this.#drain();
  }

  /** End of input (QEMU's json_message_parser_flush): completes a trailing number or keyword, refuses an unfinished value. */
  flush(): JsonItem[] {
    const items = this.#drain();
    // json_lexer_feed_char(lexer, 0, flush=true): run the table on a NUL without consuming it
    while (this.#state !== IN_START) {
      const next = TABLE[this.#state]![0]! & ~LOOKAHEAD;
      this.#step(next);
    }
    if (this.#types.length > 0) this.#emitValue();
    this.#skipping = false;
    this.#resetCounts();
    items.push(...this.#out.splice(0));
    return items;
  }

  #drain(): JsonItem[] {
    const items: JsonItem[] = [];
    for (let item = this.next(); item; item = this.next()) items.push(item);
    return items;
  }

  #feedChar(ch: number): void {
    let consumed = false;
    while (!consumed) {
      const raw = TABLE[this.#state]![ch]!;
      consumed = (raw & LOOKAHEAD) === 0;
      if (consumed) this.#append(ch);
      this.#step(raw & ~LOOKAHEAD);
    }
    if (this.#tokLen > this.#maxTokenSize && !this.#tokOverflow) {
      // QEMU's lexer cuts the token here and restarts mid-token; we keep lexing it, keep none of it
      this.#tokOverflow = true;
      this.#limitExceeded('JSON token size limit exceeded', true);
    }
  }

  #step(next: number): void {
    switch (next) {
      case JSON_LCURLY:
      case JSON_RCURLY:
      case JSON_LSQUARE:
      case JSON_RSQUARE:
      case JSON_COLON:
      case JSON_COMMA:
      case JSON_INTEGER:
      case JSON_FLOAT:
      case JSON_KEYWORD:
      case JSON_STRING:
        this.#processToken(next);
        this.#clearToken();
        this.#state = IN_START;
        return;
      case IN_START:
        this.#clearToken();
        this.#state = IN_START;
        return;
      case JSON_ERROR:
        this.#processToken(JSON_ERROR);
        this.#clearToken();
        this.#state = IN_RECOVERY;
        return;
      case IN_RECOVERY:
        this.#clearToken();
        this.#state = IN_RECOVERY;
        return;
      default:
        this.#state = next;
    }
  }

  #append(ch: number): void {
    if (this.#tokOverflow) return;
    if (this.#tokLen === this.#tok.length) {
      const bigger = new Uint8Array(this.#tok.length * 2);
      bigger.set(this.#tok);
      this.#tok = bigger;
    }
    this.#tok[this.#tokLen++] = ch;
  }

  #clearToken(): void {
    this.#tokLen = 0;
    this.#tokOverflow = false;
    if (this.#tok.length > 4096) this.#tok = new Uint8Array(64);
  }

  /** json_message_process_token(). */
  #processToken(type: number): void {
    if (type === JSON_ERROR) {
      const token = this.#tok.subarray(0, this.#tokLen);
      const nul = token.indexOf(0); // C's "%s" stops at a NUL
      const text = utf8Lossy.decode(nul < 0 ? token : token.subarray(0, nul));
      this.#out.push({ ok: false, error: `JSON parse error, stray '${text}'` });
      this.#skipping = false;
      this.#discardTokens();
      this.#resetCounts();
      return;
    }
    if (type === JSON_LCURLY) this.#braces++;
    else if (type === JSON_RCURLY) this.#braces--;
    else if (type === JSON_LSQUARE) this.#brackets++;
    else if (type === JSON_RSQUARE) this.#brackets--;

    if (this.#skipping) {
      if (this.#complete()) {
        this.#skipping = false;
        this.#resetCounts();
      }
      return;
    }
    const len = this.#tokLen;
    const limit =
      this.#tokenSize + len + 1 > this.#maxTokenSize
        ? 'JSON token size limit exceeded'
        : this.#types.length + 1 > this.#maxTokenCount
          ? 'JSON token count limit exceeded'
          : this.#braces + this.#brackets > this.#maxNesting
            ? 'JSON nesting depth limit exceeded'
            : undefined;
    if (limit) {
      this.#limitExceeded(limit);
      return;
    }

    this.#types.push(type);
    this.#texts.push(
      type === JSON_STRING || type === JSON_INTEGER || type === JSON_FLOAT || type === JSON_KEYWORD
        ? this.#tok.slice(0, len)
        : undefined,
    );
    this.#tokenSize += len;
    if (!this.#complete()) return;
    this.#emitValue();
  }

  /** The value is complete (or unbalanced: a closing bracket too many ends it at once). */
  #complete(): boolean {
    return !((this.#braces > 0 || this.#brackets > 0) && this.#braces >= 0 && this.#brackets >= 0);
  }

  #limitExceeded(error: string, midToken = false): void {
    if (this.#skipping) return;
    this.#out.push({ ok: false, error });
    // skip the rest of the value unless this token ended it (a token cut mid-way ends later)
    const ended = !midToken && this.#complete();
    this.#discardTokens();
    if (ended) this.#resetCounts();
    else this.#skipping = true;
  }

  #discardTokens(): void {
    this.#types = [];
    this.#texts = [];
    this.#tokenSize = 0;
  }

  #resetCounts(): void {
    this.#braces = 0;
    this.#brackets = 0;
  }

  #emitValue(): void {
    const parser = new Parser(this.#types, this.#texts);
    this.#types = [];
    this.#texts = [];
    this.#tokenSize = 0;
    this.#resetCounts();
    const value = parser.parseValue();
    this.#out.push(
      parser.error !== undefined ? { ok: false, error: parser.error } : { ok: true, value: value! },
    );
  }
}

/** QEMU's json-parser.c over one value's tokens; the first error wins, as there. */
class Parser {
  error: string | undefined;
  #pos = 0;

  constructor(
    private readonly types: number[],
    private readonly texts: (Uint8Array | undefined)[],
  ) {}

  #fail(message: string): undefined {
    if (this.error === undefined) this.error = `JSON parse error, ${message}`;
    return undefined;
  }

  #peek(): number | undefined {
    return this.types[this.#pos];
  }

  #pop(): number | undefined {
    return this.#pos < this.types.length ? this.types[this.#pos++] : undefined;
  }

  parseValue(): JsonValue | undefined {
    const type = this.#peek();
    if (type === undefined) return this.#fail('premature EOI');
    switch (type) {
      case JSON_LCURLY:
        return this.#parseObject();
      case JSON_LSQUARE:
        return this.#parseArray();
      case JSON_INTEGER:
      case JSON_FLOAT:
      case JSON_STRING:
        return this.#parseLiteral();
      case JSON_KEYWORD:
        return this.#parseKeyword();
      default:
        return this.#fail('expecting value');
    }
  }

  #parsePair(dict: JsonObject): boolean {
    if (this.#peek() === undefined) return !!this.#fail('premature EOI');
    const key = this.parseValue();
    if (typeof key !== 'string') return !!this.#fail('key is not a string in object');
    const colon = this.#pop();
    if (colon === undefined) return !!this.#fail('premature EOI');
    if (colon !== JSON_COLON) return !!this.#fail('missing : in object pair');
    const value = this.parseValue();
    if (value === undefined) return !!this.#fail('Missing value in dict');
    if (Object.hasOwn(dict, key)) return !!this.#fail('duplicate key');
    // defineProperty: a "__proto__" member is a member, not the prototype
    Object.defineProperty(dict, key, { value, enumerable: true, writable: true, configurable: true });
    return true;
  }

  #parseObject(): JsonObject | undefined {
    this.#pop(); // {
    const dict: JsonObject = {};
    const peek = this.#peek();
    if (peek === undefined) return this.#fail('premature EOI');
    if (peek === JSON_RCURLY) {
      this.#pop();
      return dict;
    }
    if (!this.#parsePair(dict)) return undefined;
    let token = this.#pop();
    if (token === undefined) return this.#fail('premature EOI');
    while (token !== JSON_RCURLY) {
      if (token !== JSON_COMMA) return this.#fail('expected separator in dict');
      if (!this.#parsePair(dict)) return undefined;
      token = this.#pop();
      if (token === undefined) return this.#fail('premature EOI');
    }
    return dict;
  }

  #parseArray(): JsonValue[] | undefined {
    this.#pop(); // [
    const list: JsonValue[] = [];
    const peek = this.#peek();
    if (peek === undefined) return this.#fail('premature EOI');
    if (peek === JSON_RSQUARE) {
      this.#pop();
      return list;
    }
    let value = this.parseValue();
    if (value === undefined) return this.#fail('expecting value');
    list.push(value);
    let token = this.#pop();
    if (token === undefined) return this.#fail('premature EOI');
    while (token !== JSON_RSQUARE) {
      if (token !== JSON_COMMA) return this.#fail('expected separator in list');
      value = this.parseValue();
      if (value === undefined) return this.#fail('expecting value');
      list.push(value);
      token = this.#pop();
      if (token === undefined) return this.#fail('premature EOI');
    }
    return list;
  }

  #parseKeyword(): JsonValue | undefined {
    const text = latin1(this.texts[this.#pos++]!);
    if (text === 'true') return true;
    if (text === 'false') return false;
    if (text === 'null') return null;
    return this.#fail(`invalid keyword '${text}'`);
  }

  #parseLiteral(): JsonValue | undefined {
    const type = this.types[this.#pos]!;
    const bytes = this.texts[this.#pos++]!;
    if (type === JSON_STRING) return this.#parseString(bytes);
    const text = latin1(bytes);
    if (type === JSON_INTEGER) {
      // int64 if it fits, else uint64 if it fits, else a double (qemu_strtoi64 / qemu_strtou64)
      const n = BigInt(text);
      if (n >= -(2n ** 63n) && n < 2n ** 64n) {
        return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
      }
    }
    const d = Number(text);
    return Number.isInteger(d) || Object.is(d, -0) ? new JsonDouble(d) : d;
  }

  /** parse_string(): escapes, surrogate pairs, and QEMU's modified UTF-8 rules. */
  #parseString(b: Uint8Array): string | undefined {
    const quote = b[0]!;
    let out = '';
    let i = 1;
    let runStart = 1;
    const flush = () => {
      if (i > runStart) out += latin1(b, runStart, i);
    };
    while (b[i] !== quote) {
      const c = b[i]!;
      if (c === 0x5c) {
        flush();
        const beg = i;
        i++;
        const e = b[i++];
        switch (e) {
          case 0x22:
            out += '"';
            break;
          case 0x27:
            out += "'";
            break;
          case 0x5c:
            out += '\\';
            break;
          case 0x2f:
            out += '/';
            break;
          case 0x62:
            out += '\b';
            break;
          case 0x66:
            out += '\f';
            break;
          case 0x6e:
            out += '\n';
            break;
          case 0x72:
            out += '\r';
            break;
          case 0x74:
            out += '\t';
            break;
          case 0x75: {
            let cp = hex4(b, i);
            i += 4;
            if (cp >= 0xd800 && cp <= 0xdbff && b[i] === 0x5c && b[i + 1] === 0x75) {
              cp = 0x10000 + ((cp & 0x3ff) << 10);
              const trailing = hex4(b, i + 2);
              if (trailing >= 0xdc00 && trailing <= 0xdfff) {
                cp |= trailing & 0x3ff;
                i += 6;
              } else cp = -1;
            }
            if (!validCodepoint(cp)) {
              return this.#fail(`${utf8Lossy.decode(b.subarray(beg, i))} is not a valid Unicode character`);
            }
            out += String.fromCodePoint(cp);
            break;
          }
          default:
            return this.#fail('invalid escape sequence in string');
        }
        runStart = i;
      } else if (c < 0x80) {
        i++;
      } else {
        flush();
        const r = modUtf8Codepoint(b, i);
        if (r.cp < 0) return this.#fail('invalid UTF-8 sequence in string');
        out += String.fromCodePoint(r.cp);
        i = r.end;
        runStart = i;
      }
    }
    flush();
    return out;
  }
}

function hex4(b: Uint8Array, at: number): number {
  let cp = 0;
  for (let k = 0; k < 4; k++) {
    const c = b[at + k];
    let d: number;
    if (c === undefined) return -1;
    if (c >= 0x30 && c <= 0x39) d = c - 0x30;
    else if (c >= 0x61 && c <= 0x66) d = c - 0x61 + 10;
    else if (c >= 0x41 && c <= 0x46) d = c - 0x41 + 10;
    else return -1;
    cp = (cp << 4) | d;
  }
  return cp;
}

/** What mod_utf8_encode() accepts (util/unicode.c). */
function validCodepoint(cp: number): boolean {
  if (cp < 0 || cp > 0x10ffff) return false;
  if ((cp & 0xfffe) === 0xfffe || (cp >= 0xfdd0 && cp <= 0xfdef)) return false; // noncharacters
  return !(cp >= 0xd800 && cp <= 0xdfff);
}

const MIN_CP = [0x80, 0x800, 0x10000, 0x200000, 0x4000000];

/** mod_utf8_codepoint() (util/unicode.c) on a multi-byte sequence at b[at]. */
function modUtf8Codepoint(b: Uint8Array, at: number): { cp: number; end: number } {
  let p = at;
  let byte = b[p++]!;
  if (byte >= 0xfe || (byte & 0x40) === 0) return { cp: -1, end: p };
  let len = 0;
  let mask = 0x80;
  for (; byte & mask; mask >>= 1) len++;
  let cp = byte & (mask - 1);
  for (let k = 1; k < len; k++) {
    byte = p < b.length ? b[p]! : 0;
    if ((byte & 0xc0) !== 0x80) return { cp: -1, end: p };
    p++;
    cp = cp * 64 + (byte & 0x3f);
  }
  if (cp > 0x10ffff) cp = -1;
  else if ((cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe) cp = -1;
  else if (cp >= 0xd800 && cp <= 0xdfff) cp = -1;
  else if (cp < MIN_CP[len - 2]! && !(cp === 0 && len === 2)) cp = -1;
  return { cp, end: p };
}
