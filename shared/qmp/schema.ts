/**
 * Command arguments checked against a schema the way QEMU's generated marshallers do it, with
 * qapi/qobject-input-visitor.c and qapi/qapi-visit-core.c's texts, before the command runs:
 * - members of an object are visited in schema order: a missing required one is "Parameter 'P' is
 *   missing", a value of the wrong JSON type "Invalid parameter type for 'P', expected: T" (string,
 *   integer, number, boolean, object, array); after the members, a member the schema lacks is
 *   "Parameter 'P' is unexpected". P is the full path QEMU builds: `a.b`, `list[2].c`;
 * - int / int64: any integer in int64 range; an integer beyond it (QEMU holds it as uint64) or a
 *   float is "Invalid parameter type for 'P', expected: integer";
 * - uint64 / size (QMP visits size as uint64): a non-integer is "Parameter 'P' expects uint64"; a
 *   negative int64 is accepted and wrapped modulo 2^64 ("for backward compatibility", as QEMU does:
 *   -1 arrives as 18446744073709551615);
 * - uint8 / uint32: visited as uint64, then above 255 / 4294967295 (so also any negative) is
 *   "Parameter 'N' expects uint8_t" / "uint32_t";
 * - enum: a string, else the type error above; a value not in the list is "Parameter 'N' does not
 *   accept value 'X'".
 * In these last two texts QEMU names the member alone (N: `state`, not `caps[0].state`), and a list
 * element by the word 'null'; we keep that.
 * - null is a value, not an absent member: an optional str given null is a type error (QEMU's
 *   visit_optional sees the member present). `any` takes every value.
 * QEMU picks the first unexpected member from a hash table; we report the first in input order.
 */

import { QmpError } from './errors.js';
import { JsonDouble } from './json.js';

export type ArgType =
  | 'str'
  | 'int'
  | 'uint8'
  | 'uint32'
  | 'uint64'
  | 'int64'
  | 'size'
  | 'number'
  | 'bool'
  | 'any';
export type ArgSpec =
  | { type: ArgType; optional?: boolean }
  | { type: 'enum'; values: readonly string[]; optional?: boolean }
  | { type: 'array'; items: ArgSpec; optional?: boolean }
  | { type: 'object'; fields: Record<string, ArgSpec>; optional?: boolean };

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;
const UINT_MAX: Partial<Record<ArgType, { max: bigint; word: string }>> = {
  uint8: { max: 255n, word: 'uint8_t' },
  uint32: { max: 4294967295n, word: 'uint32_t' },
};

/** A frame of QEMU's visitor stack: an object or a list being visited (name = its name in its parent). */
type Frame = { list: false; name: string | null } | { list: true; name: string | null; index: number };

/** full_name_nth(qiv, name, 0) of qobject-input-visitor.c. */
function fullName(stack: readonly Frame[], name: string | null): string {
  let path = '';
  let n = name;
  for (let i = stack.length - 1; i >= 0; i--) {
    const frame = stack[i]!;
    if (frame.list) path = `[${frame.index}]${path}`;
    else path = `.${n ?? '<anonymous>'}${path}`;
    n = frame.name;
  }
  if (n !== null) return n + path;
  if (path.startsWith('.')) return path.slice(1);
  return path === '' ? '<anonymous>' : path;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof JsonDouble);
}

/** The integer a JSON value holds, if QEMU would hold it as an integer (int64 or uint64); else undefined. */
function integerOf(v: unknown): bigint | undefined {
  let n: bigint;
  if (typeof v === 'bigint') n = v;
  else if (typeof v === 'number' && Number.isInteger(v)) n = BigInt(v);
  else return undefined;
  return n >= INT64_MIN && n <= UINT64_MAX ? n : undefined;
}

function isNumber(v: unknown): boolean {
  return typeof v === 'number' || typeof v === 'bigint' || v instanceof JsonDouble;
}

/** Checks `args` (the request's "arguments", {} when absent) against `spec`; throws QmpError (GenericError) with QEMU's text. */
export function checkArguments(spec: Record<string, ArgSpec>, args: Record<string, unknown>): void {
  const stack: Frame[] = [];
  visitStruct(spec, args, null, stack);
}

function visitStruct(
  fields: Record<string, ArgSpec>,
  obj: Record<string, unknown>,
  name: string | null,
  stack: Frame[],
): void {
  stack.push({ list: false, name });
  const visited = new Set<string>();
  for (const [member, spec] of Object.entries(fields)) {
    if (!Object.hasOwn(obj, member)) {
      if (spec.optional) continue;
      throw generic(`Parameter '${fullName(stack, member)}' is missing`);
    }
    visited.add(member);
    visitValue(spec, obj[member], member, stack);
  }
  for (const key of Object.keys(obj)) {
    if (!visited.has(key)) throw generic(`Parameter '${fullName(stack, key)}' is unexpected`);
  }
  stack.pop();
}

function visitValue(spec: ArgSpec, v: unknown, name: string | null, stack: Frame[]): void {
  const typeError = (expected: string) =>
    generic(`Invalid parameter type for '${fullName(stack, name)}', expected: ${expected}`);
  switch (spec.type) {
    case 'str':
      if (typeof v !== 'string') throw typeError('string');
      return;
    case 'bool':
      if (typeof v !== 'boolean') throw typeError('boolean');
      return;
    case 'number':
      if (!isNumber(v)) throw typeError('number');
      return;
    case 'any':
      return;
    case 'int':
    case 'int64': {
      const n = integerOf(v);
      if (n === undefined || n > INT64_MAX) throw typeError('integer');
      return;
    }
    case 'uint8':
    case 'uint32':
    case 'uint64':
    case 'size': {
      const n = integerOf(v);
      if (n === undefined) throw generic(`Parameter '${fullName(stack, name)}' expects uint64`);
      const limit = UINT_MAX[spec.type];
      if (limit && BigInt.asUintN(64, n) > limit.max) {
        throw generic(`Parameter '${name ?? 'null'}' expects ${limit.word}`);
      }
      return;
    }
    case 'enum':
      if (typeof v !== 'string') throw typeError('string');
      if (!spec.values.includes(v))
        throw generic(`Parameter '${name ?? 'null'}' does not accept value '${v}'`);
      return;
    case 'array': {
      if (!Array.isArray(v)) throw typeError('array');
      const frame: Frame = { list: true, name, index: -1 };
      stack.push(frame);
      for (const item of v) {
        frame.index++;
        visitValue(spec.items, item, null, stack);
      }
      stack.pop();
      return;
    }
    case 'object':
      if (!isObject(v)) throw typeError('object');
      visitStruct(spec.fields, v, name, stack);
      return;
  }
}

function generic(desc: string): QmpError {
  return new QmpError('GenericError', desc);
}

/**
 * The arguments a command receives, after checkArguments() passed: plain JS values. Integers
 * beyond 2^53 become the nearest number (a handler computes with numbers; the check was exact),
 * negative values of uint64/size members wrap modulo 2^64 as in QEMU, floats written like "2.0"
 * become plain numbers. Members the schema lacks cannot be there; `any` values are converted the
 * same way throughout.
 */
export function normalizeArguments(
  spec: Record<string, ArgSpec>,
  args: Record<string, unknown>,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(args)) {
    const member = spec[key];
    define(out, key, member ? normalizeValue(member, value) : toPlain(value));
  }
  return out;
}

function normalizeValue(spec: ArgSpec, v: unknown): unknown {
  switch (spec.type) {
    case 'uint8':
    case 'uint32':
    case 'uint64':
    case 'size': {
      const n = integerOf(v);
      return n === undefined ? toPlain(v) : Number(BigInt.asUintN(64, n));
    }
    case 'array':
      return Array.isArray(v) ? v.map((item) => normalizeValue(spec.items, item)) : toPlain(v);
    case 'object':
      return isObject(v) ? normalizeArguments(spec.fields, v) : toPlain(v);
    default:
      return toPlain(v);
  }
}

/** A parsed JSON value as plain JS: bigint → number, JsonDouble → number. */
export function toPlain(v: unknown): unknown {
  if (typeof v === 'bigint') return Number(v);
  if (v instanceof JsonDouble) return v.value;
  if (Array.isArray(v)) return v.map(toPlain);
  if (isObject(v)) {
    const out: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(v)) define(out, key, toPlain(value));
    return out;
  }
  return v;
}

function define(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}
