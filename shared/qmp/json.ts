/**
 * JSON as QEMU writes it (qobject/json-writer.c, qobject/qdict.c), so our monitors are byte-for-byte
 * QEMU's on the wire:
 * - `{"a": 1, "b": [1, 2]}`: ": " after a key, ", " between members and elements, nothing else;
 * - members in QDict order: QEMU keeps an object in a 512-bucket hash table (tdb_hash of the key) and
 *   writes it bucket by bucket, the newest member of a bucket first. That is why QEMU answers
 *   `{"return": {}, "id": 1}` but `{"id": 1, "error": ...}`, and writes `{"micro": 0, "minor": 1,
 *   "major": 8}` for a version it built as major, minor, micro. We take a JS object's key order as
 *   QEMU's insertion order (QAPI's member order, for the objects commands return);
 * - strings: `"` `\` and \b \f \n \r \t escaped by name, every other character below 0x20 or from
 *   0x7F up as \uXXXX (upper-case hex, surrogate pairs beyond the BMP), so the output is ASCII;
 *   what QEMU cannot hold (lone surrogates, Unicode noncharacters) becomes U+FFFD as QEMU's decoder
 *   makes it;
 * - integers in decimal (int64 or uint64 range), other numbers as printf("%.17g"), done exactly
 *   (with BigInt) rather than with toPrecision, whose ties round differently from glibc.
 * One deviation: QEMU would print a non-finite double as `inf`/`nan` (invalid JSON, a FIXME in its
 * source); we print `null`.
 */

/**
 * A number written in the input as a float ("1.0", "2e3") whose value happens to be an integer. QEMU
 * keeps such a number a double (an int parameter refuses it, "%.17g" writes it back); a plain JS
 * number would lose the difference, so the parser (stream.ts) wraps it. Non-integral floats stay
 * plain numbers: they cannot be mistaken for integers.
 */
export class JsonDouble {
  constructor(readonly value: number) {}
  toJSON(): number {
    return this.value;
  }
}

/** What the parser produces: integers beyond 2^53 are bigints, so nothing is lost before a schema check. */
export type JsonValue = null | boolean | number | bigint | string | JsonDouble | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

const QDICT_BUCKET_MAX = 512;
const bucketCache = new Map<string, number>();

/** tdb_hash(key) % QDICT_BUCKET_MAX, over the key's UTF-8 bytes (qobject/qdict.c). */
export function qdictBucket(key: string): number {
  const cached = bucketCache.get(key);
  if (cached !== undefined) return cached;
  const bytes = Buffer.from(key, 'utf8');
  let value = Math.imul(0x238f13af, bytes.length) >>> 0;
  for (let i = 0; i < bytes.length; i++) value = (value + (bytes[i]! << ((i * 5) % 24))) >>> 0;
  const bucket = ((Math.imul(1103515243, value) + 12345) >>> 0) % QDICT_BUCKET_MAX;
  if (bucketCache.size < 4096) bucketCache.set(key, bucket);
  return bucket;
}

/** The order QEMU iterates (and writes) a QDict built by inserting `keys` in this order. */
export function qdictOrder(keys: readonly string[]): string[] {
  if (keys.length < 2) return [...keys];
  return keys
    .map((key, index) => ({ key, index, bucket: qdictBucket(key) }))
    .sort((a, b) => a.bucket - b.bucket || b.index - a.index)
    .map((e) => e.key);
}

const INT64_MIN = -(2 ** 63);
const UINT64_LIMIT = 2 ** 64;

/** printf("%.17g", x) for a finite x, exactly as glibc rounds (to nearest, ties to even). */
export function formatDouble(x: number): string {
  if (!Number.isFinite(x)) return 'null';
  if (x === 0) return Object.is(x, -0) ? '-0' : '0';
  const sign = x < 0 ? '-' : '';
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, Math.abs(x));
  const hi = view.getUint32(0);
  const lo = view.getUint32(4);
  const biased = (hi >>> 20) & 0x7ff;
  let mantissa = (BigInt(hi & 0xfffff) << 32n) | BigInt(lo);
  let exp2: number;
  if (biased === 0) exp2 = -1074;
  else {
    mantissa |= 1n << 52n;
    exp2 = biased - 1075;
  }
  // |x| = digits / 10^frac exactly
  let digits: string;
  let frac = 0;
  if (exp2 >= 0) digits = (mantissa << BigInt(exp2)).toString();
  else {
    digits = (mantissa * 5n ** BigInt(-exp2)).toString();
    frac = -exp2;
  }
  let exp10 = digits.length - 1 - frac; // decimal exponent of the leading digit
  if (digits.length > 17) {
    let kept = BigInt(digits.slice(0, 17));
    const next = digits.charCodeAt(17) - 48;
    const sticky = /[1-9]/.test(digits.slice(18));
    if (next > 5 || (next === 5 && (sticky || (kept & 1n) === 1n))) kept += 1n;
    digits = kept.toString();
    if (digits.length > 17) {
      digits = digits.slice(0, 17);
      exp10 += 1;
    }
  }
  digits = digits.replace(/0+$/, '') || '0';
  if (exp10 < -4 || exp10 >= 17) {
    const mant = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const e = Math.abs(exp10).toString().padStart(2, '0');
    return `${sign}${mant}e${exp10 < 0 ? '-' : '+'}${e}`;
  }
  if (exp10 < 0) return `${sign}0.${'0'.repeat(-exp10 - 1)}${digits}`;
  const intPart = digits.slice(0, exp10 + 1).padEnd(exp10 + 1, '0');
  const fracPart = digits.slice(exp10 + 1);
  return fracPart ? `${sign}${intPart}.${fracPart}` : `${sign}${intPart}`;
}

function formatNumber(n: number): string {
  if (Number.isInteger(n) && n >= INT64_MIN && n < UINT64_LIMIT) return BigInt(n).toString();
  return formatDouble(n);
}

const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

function hex4(n: number): string {
  return `\\u${n.toString(16).toUpperCase().padStart(4, '0')}`;
}

/** QEMU's quoted_str(). */
export function quoteString(s: string): string {
  if (PLAIN.test(s)) return `"${s}"`;
  let out = '"';
  for (const ch of s) {
    let cp = ch.codePointAt(0)!;
    switch (cp) {
      case 0x22:
        out += '\\"';
        continue;
      case 0x5c:
        out += '\\\\';
        continue;
      case 0x08:
        out += '\\b';
        continue;
      case 0x0c:
        out += '\\f';
        continue;
      case 0x0a:
        out += '\\n';
        continue;
      case 0x0d:
        out += '\\r';
        continue;
      case 0x09:
        out += '\\t';
        continue;
    }
    if ((cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe) {
      cp = 0xfffd;
    }
    if (cp > 0xffff) out += hex4(0xd800 + ((cp - 0x10000) >> 10)) + hex4(0xdc00 + ((cp - 0x10000) & 0x3ff));
    else if (cp < 0x20 || cp >= 0x7f) out += hex4(cp);
    else out += ch;
  }
  return `${out}"`;
}

/**
 * One JSON text the way QEMU's json-writer (non-pretty) writes it. Like JSON.stringify, members whose
 * value is undefined, a function or a symbol are left out (null in arrays) and toJSON() is honoured;
 * bigints are written as integers. Throws TypeError on a cycle.
 */
export function qmpStringify(value: unknown): string {
  const parts: string[] = [];
  write(value, parts, new Set());
  return parts.join('');
}

function skipped(v: unknown): boolean {
  return v === undefined || typeof v === 'function' || typeof v === 'symbol';
}

function write(v: unknown, out: string[], ancestors: Set<object>): void {
  if (v instanceof JsonDouble) {
    out.push(formatDouble(v.value));
    return;
  }
  if (v !== null && typeof v === 'object' && typeof (v as { toJSON?: unknown }).toJSON === 'function') {
    v = (v as { toJSON(): unknown }).toJSON();
  }
  switch (typeof v) {
    case 'string':
      out.push(quoteString(v));
      return;
    case 'number':
      out.push(formatNumber(v));
      return;
    case 'bigint':
      out.push(v.toString());
      return;
    case 'boolean':
      out.push(v ? 'true' : 'false');
      return;
    case 'object':
      break;
    default:
      out.push('null'); // undefined, functions and symbols where a value must be written
      return;
  }
  if (v === null) {
    out.push('null');
    return;
  }
  if (ancestors.has(v)) throw new TypeError('cannot write a cyclic structure as JSON');
  ancestors.add(v);
  if (Array.isArray(v)) {
    out.push('[');
    for (let i = 0; i < v.length; i++) {
      if (i > 0) out.push(', ');
      write(v[i], out, ancestors);
    }
    out.push(']');
  } else {
    const obj = v as Record<string, unknown>;
    out.push('{');
    let first = true;
    for (const key of qdictOrder(Object.keys(obj).filter((k) => !skipped(obj[k])))) {
      if (!first) out.push(', ');
      first = false;
      out.push(quoteString(key), ': ');
      write(obj[key], out, ancestors);
    }
    out.push('}');
  }
  ancestors.delete(v);
}
