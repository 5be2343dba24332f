/**
 * The msgpack bodies of return-path messages (RESUMED, LOAD_COST, TIME), decoded into typed values
 * with every field checked: its type (a number is a finite JavaScript number — never a BigInt, which
 * msgpackr makes of a uint64, nor an object that merely converts to one), its range, the length of
 * every string, list and map, and no key the message does not define. Anything else is
 * MIG_ERR_MALFORMED naming the message and the field. A peer's message must never reach the code that
 * uses it as anything but the type it claims (it crashed the source: `Number({valueOf: 0})`,
 * `[...1]`, `5n + 1`).
 */
import { ErrorCode, ProtocolError } from '../errors.js';
import { isPlainObject } from './msgpack.js';

/** Destination clock probe answer (and the source's probe, which has only `value`). */
export interface TimeBody {
  value: number;
  /** The destination's monotonic ms when it answered. */
  t?: number;
  /** The destination's kernel boot id (equal boot ids: one monotonic clock). */
  boot?: string;
}

export interface SelfCheckBody {
  ok: boolean;
  pagesChecked: number;
  badPages: number;
  firstBad: number[];
  ms: number;
}

/** RESUMED: sent twice, after the guest started (everything but guest) and after its self-check (guest). */
export interface ResumedBody {
  checkpoints?: Record<string, number>;
  integrity?: {
    'pages-verified': number;
    'digest-destination': string;
    'torn-copies': number;
    'checksum-backend': 'native' | 'js';
  };
  gap?: { gapStartMs: number; gapEndMs: number };
  devices?: Record<string, { 'prep-ms': number | null; 'approved-at': number | null; loaded: number }>;
  guest?: { 'self-check': SelfCheckBody };
}

export interface LoadCostBody {
  'final-load-ms': number;
  waiting: string[];
  approvals: Record<string, number>;
}

/** Caps on what a peer may make us hold. */
export const RP_LIMITS = {
  /** Entries of any map or list in a body (checkpoints, devices, waiting, approvals). */
  entries: 256,
  /** Characters of a key or short string (checkpoint names, device ids). */
  name: 255,
  /** firstBad: the self-check's first bad pages. */
  firstBad: 64,
} as const;

type Check<T> = (v: unknown, at: string) => T;

export function decodeTimeBody(body: unknown): TimeBody {
  return record('TIME', body, {
    value: req(int(0, Number.MAX_SAFE_INTEGER)),
    t: opt(finite(0, Number.MAX_SAFE_INTEGER)),
    boot: opt(str(64)),
  });
}

export function decodeResumedBody(body: unknown): ResumedBody {
  const device: Check<{ 'prep-ms': number | null; 'approved-at': number | null; loaded: number }> = (v, at) =>
    record(at, v, {
      'prep-ms': req(nullable(finite(0, Number.MAX_SAFE_INTEGER))),
      'approved-at': req(nullable(finite(0, Number.MAX_SAFE_INTEGER))),
      loaded: req(int(0, Number.MAX_SAFE_INTEGER)),
    });
  return record('RESUMED', body, {
    checkpoints: opt(map(finite(0, Number.MAX_SAFE_INTEGER))),
    integrity: opt((v, at) =>
      record(at, v, {
        'pages-verified': req(int(0, Number.MAX_SAFE_INTEGER)),
        'digest-destination': req(hex16),
        'torn-copies': req(int(0, Number.MAX_SAFE_INTEGER)),
        'checksum-backend': req(oneOf(['native', 'js'] as const)),
      }),
    ),
    gap: opt((v, at) =>
      record(at, v, {
        gapStartMs: req(finite(0, Number.MAX_SAFE_INTEGER)),
        gapEndMs: req(finite(0, Number.MAX_SAFE_INTEGER)),
      }),
    ),
    devices: opt(map(device)),
    guest: opt((v, at) => record(at, v, { 'self-check': req(selfCheck) })),
  });
}

export function decodeLoadCostBody(body: unknown): LoadCostBody {
  return record('LOAD_COST', body, {
    'final-load-ms': req(finite(0, Number.MAX_SAFE_INTEGER)),
    waiting: req(list(str(RP_LIMITS.name), RP_LIMITS.entries)),
    approvals: req(map(finite(0, Number.MAX_SAFE_INTEGER))),
  });
}

const selfCheck: Check<SelfCheckBody> = (v, at) =>
  record(at, v, {
    ok: req(bool),
    pagesChecked: req(int(0, Number.MAX_SAFE_INTEGER)),
    badPages: req(int(0, Number.MAX_SAFE_INTEGER)),
    firstBad: req(list(int(0, Number.MAX_SAFE_INTEGER), RP_LIMITS.firstBad)),
    ms: req(finite(0, Number.MAX_SAFE_INTEGER)),
  });

// --- field checks -------------------------------------------------------------------------------

interface Field<T> {
  check: Check<T>;
  required: boolean;
}

const req = <T>(check: Check<T>): Field<T> => ({ check, required: true });
const opt = <T>(check: Check<T>): Field<T | undefined> => ({ check, required: false });

/** A plain object with exactly the given (optional or required) keys. */
function record<F extends Record<string, Field<unknown>>>(
  at: string,
  v: unknown,
  fields: F,
): { [K in keyof F]: F[K] extends Field<infer T> ? T : never } {
  if (!isPlainObject(v)) throw bad(at, 'is not a map');
  for (const key of Object.keys(v))
    if (!Object.hasOwn(fields, key)) throw bad(`${at}.${key}`, 'is not a known field');
  const out: Record<string, unknown> = {};
  for (const [key, f] of Object.entries(fields)) {
    if (!Object.hasOwn(v, key) || v[key] === undefined) {
      if (f.required) throw bad(`${at}.${key}`, 'is missing');
      continue;
    }
    out[key] = f.check(v[key], `${at}.${key}`);
  }
  return out as { [K in keyof F]: F[K] extends Field<infer T> ? T : never };
}

function finite(min: number, max: number): Check<number> {
  return (v, at) => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max)
      throw bad(at, `must be a number in ${min}..${max}`);
    return v;
  };
}

function int(min: number, max: number): Check<number> {
  const f = finite(min, max);
  return (v, at) => {
    const n = f(v, at);
    if (!Number.isInteger(n)) throw bad(at, 'must be an integer');
    return n;
  };
}

function str(max: number): Check<string> {
  return (v, at) => {
    if (typeof v !== 'string' || v.length > max)
      throw bad(at, `must be a string of at most ${max} characters`);
    return v;
  };
}

const bool: Check<boolean> = (v, at) => {
  if (typeof v !== 'boolean') throw bad(at, 'must be true or false');
  return v;
};

const hex16: Check<string> = (v, at) => {
  if (typeof v !== 'string' || !/^[0-9a-f]{16}$/.test(v)) throw bad(at, 'must be 16 hex digits');
  return v;
};

function oneOf<T extends string>(allowed: readonly T[]): Check<T> {
  return (v, at) => {
    if (!(allowed as readonly unknown[]).includes(v)) throw bad(at, `must be one of ${allowed.join(', ')}`);
    return v as T;
  };
}

function nullable<T>(check: Check<T>): Check<T | null> {
  return (v, at) => (v === null ? null : check(v, at));
}

function list<T>(item: Check<T>, max: number): Check<T[]> {
  return (v, at) => {
    if (!Array.isArray(v)) throw bad(at, 'must be a list');
    if (v.length > max) throw bad(at, `has ${v.length} entries, at most ${max}`);
    return v.map((x, i) => item(x, `${at}[${i}]`));
  };
}

/** A map of short names to values, at most RP_LIMITS.entries of them. */
function map<T>(value: Check<T>): Check<Record<string, T>> {
  return (v, at) => {
    if (!isPlainObject(v)) throw bad(at, 'is not a map');
    const keys = Object.keys(v);
    if (keys.length > RP_LIMITS.entries)
      throw bad(at, `has ${keys.length} entries, at most ${RP_LIMITS.entries}`);
    const out: Record<string, T> = Object.create(null);
    for (const k of keys) {
      if (k.length > RP_LIMITS.name) throw bad(at, `has a key of ${k.length} characters`);
      out[k] = value(v[k], `${at}.${k}`);
    }
    return out;
  };
}

function bad(at: string, message: string): ProtocolError {
  return new ProtocolError(ErrorCode.MALFORMED, `return path: ${at} ${message}`, {
    section: 'return-path',
    field: at,
  });
}
