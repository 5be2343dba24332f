/**
 * The QMP input splitter/parser (a port of QEMU's json-lexer/streamer/parser) and QEMU's JSON
 * writer: values come out the same however the bytes are split, errors carry QEMU's texts, limits
 * answer once and resynchronise, and output is written the way QEMU writes it.
 */
import t from 'tap';
import { formatDouble, JsonDouble, qdictOrder, qmpStringify, quoteString } from '../../shared/qmp/json.js';
import { type JsonItem, JsonStreamer } from '../../shared/qmp/stream.js';

const enc = (s: string) => Buffer.from(s, 'utf8');

function all(input: string | Buffer, limits?: ConstructorParameters<typeof JsonStreamer>[0]): JsonItem[] {
  const s = new JsonStreamer(limits);
  const items = s.push(typeof input === 'string' ? enc(input) : input);
  return [...items, ...s.flush()];
}

function values(input: string): unknown[] {
  return all(input).map((i) => (i.ok ? i.value : `ERR ${i.error}`));
}

const SAMPLE = [
  '{"execute":"qmp_capabilities"}',
  '{"execute": "query-status", "id": 1}\r\n',
  '  \t\n{ "execute" : "x", "arguments" : { "s": "br{ce} [and] \\"quote\\" \\\\ \\/ \\u00e9 \\ud83d\\ude00", "n": [1, -2, 3.5, 0, -0, 1e3, 2E-2], "b": [true, false, null], "e": {}, "l": [] } }',
  "{'execute': 'single', 'arguments': {'q': 'it\\'s \"fine\"'}}",
  '{"id": {"nested": [[[{"deep": "é😀"}]]]}, "execute": "u"}',
  '[1, 2]',
  '"top-level string"',
  '{"big": 18446744073709551615, "neg": -9223372036854775808, "huge": 18446744073709551616}',
].join('');

t.test('every split point of a sample stream gives the same values', async (t) => {
  const bytes = enc(SAMPLE);
  const whole = all(bytes);
  t.equal(whole.length, 8, 'eight values');
  t.ok(
    whole.every((i) => i.ok),
    'all parse',
  );
  for (let cut = 0; cut <= bytes.length; cut++) {
    const s = new JsonStreamer();
    const items = [...s.push(bytes.subarray(0, cut)), ...s.push(bytes.subarray(cut)), ...s.flush()];
    if (JSON.stringify(items, replacer) !== JSON.stringify(whole, replacer)) {
      t.fail(`split at ${cut} differs`);
      return;
    }
  }
  const s = new JsonStreamer();
  const byByte: JsonItem[] = [];
  for (let i = 0; i < bytes.length; i++) byByte.push(...s.push(bytes.subarray(i, i + 1)));
  t.same(JSON.stringify(byByte, replacer), JSON.stringify(whole, replacer), 'one byte at a time');
});

function replacer(_k: string, v: unknown): unknown {
  if (typeof v === 'bigint') return `${v}n`;
  if (v instanceof JsonDouble) return `double ${v.value}`;
  return v;
}

t.test('values: strings, escapes, numbers as QEMU holds them', async (t) => {
  const items = all(SAMPLE);
  const third = (items[2] as unknown as { value: { arguments: Record<string, unknown> } }).value.arguments;
  t.equal(third.s, 'br{ce} [and] "quote" \\ / é 😀');
  t.same(third.n, [1, -2, 3.5, 0, 0, new JsonDouble(1000), 0.02]);
  t.same(third.b, [true, false, null]);
  t.same((items[3] as unknown as { value: unknown }).value, {
    execute: 'single',
    arguments: { q: 'it\'s "fine"' },
  });
  const last = (items[7] as unknown as { value: Record<string, unknown> }).value;
  t.equal(last.big, 18446744073709551615n, 'uint64 kept exact');
  t.equal(last.neg, -9223372036854775808n, 'int64 min kept exact');
  t.ok(last.huge instanceof JsonDouble, 'beyond uint64: a double, as QEMU');
  t.same(values('9007199254740993 1.0 -0 0.5'), [9007199254740993n, new JsonDouble(1), 0, 0.5]);
  t.same(values('{"__proto__": 1}'), [JSON.parse('{"__proto__": 1}')], '__proto__ is a member');
  t.equal(
    Object.getPrototypeOf((all('{"__proto__": {"x": 1}}')[0] as unknown as { value: object }).value),
    Object.prototype,
  );
});

t.test("parse errors carry QEMU's texts", async (t) => {
  const cases: [string, string[]][] = [
    ['{"a" 1}', ['JSON parse error, missing : in object pair']],
    ['[1,]', ['JSON parse error, expecting value']],
    ['[1 2]', ['JSON parse error, expected separator in list']],
    ['{"a": 1 "b": 2}', ['JSON parse error, expected separator in dict']],
    ['{"a": 1, "a": 2}', ['JSON parse error, duplicate key']],
    ['{1: 2}', ['JSON parse error, key is not a string in object']],
    ['tru ', ["JSON parse error, invalid keyword 'tru'"]],
    ['}', ['JSON parse error, expecting value']],
    ['"\\q"', ['JSON parse error, invalid escape sequence in string']],
    ['"\\uD800"', ['JSON parse error, \\uD800 is not a valid Unicode character']],
    ['"\\uFFFF"', ['JSON parse error, \\uFFFF is not a valid Unicode character']],
    ['"\\u12"', ['JSON parse error, \\u12" is not a valid Unicode character']],
    ['{"a": 1', ['JSON parse error, premature EOI']],
  ];
  for (const [input, expected] of cases)
    t.same(
      values(input),
      expected.map((e) => `ERR ${e}`),
      input,
    );
  t.same(values('"\\ud83d\\ude00"'), ['😀'], 'a surrogate pair is one character');
  t.same(
    all(Buffer.from([0x22, 0xc3, 0x28, 0x22])).map((i) => !i.ok && i.error),
    ['JSON parse error, invalid UTF-8 sequence in string'],
  );
  t.same(
    all(Buffer.from([0x22, 0xc0, 0x80, 0x22])).map((i) => i.ok && i.value),
    ['\0'],
    'modified UTF-8 NUL',
  );
  t.same(
    all(Buffer.from([0x22, 0xc1, 0x81, 0x22])).map((i) => !i.ok && i.error),
    ['JSON parse error, invalid UTF-8 sequence in string'],
    'overlong',
  );
});

t.test('a lexical error is answered, then input is skipped to the next structural character', async (t) => {
  t.same(values('X {"a": 1}'), ["ERR JSON parse error, stray 'X'", { a: 1 }]);
  t.same(values('{"execute": X}{"b": 2}'), [
    "ERR JSON parse error, stray 'X'",
    'ERR JSON parse error, expecting value', // the "}" that was left (as QEMU)
    { b: 2 },
  ]);
  t.same(values('"abc\u0001" {"c": 3}').slice(0, 1), ["ERR JSON parse error, stray '\"abc\u0001'"]);
  t.same(values('{"a": \u0000garbage}{"d": 4}').at(-1), { d: 4 }, 'a control character resynchronises');
  t.same(values('01'), ["ERR JSON parse error, stray '01'"]);
  t.same(
    values('[}]{}'),
    ['ERR JSON parse error, expecting value', 'ERR JSON parse error, expecting value', {}],
    'unbalanced',
  );
  t.same(
    all(Buffer.from([0xff, 0x7b, 0x7d])).map((i) => (i.ok ? i.value : i.error)),
    ["JSON parse error, stray '\uFFFD'", {}],
  );
});

t.test('limits: one error per oversized value, then the stream goes on', async (t) => {
  t.setTimeout(10_000);
  const big = `{"execute": "x", "arguments": {"pad": "${'a'.repeat((1 << 20) + 10)}"}}{"execute": "after"}`;
  t.same(values(big), ['ERR JSON token size limit exceeded', { execute: 'after' }], 'one huge string');
  const many = `[${'1,'.repeat(600_000)}1]{"ok": 1}`;
  t.same(values(many), ['ERR JSON token size limit exceeded', { ok: 1 }], 'many small tokens');
  const topString = `"${'b'.repeat((1 << 20) + 5)}" {"ok": 2}`;
  t.same(values(topString), ['ERR JSON token size limit exceeded', { ok: 2 }], 'a top-level string');
  const deep = `${'['.repeat(1025)}${']'.repeat(1025)}{"ok": 3}`;
  t.same(values(deep), ['ERR JSON nesting depth limit exceeded', { ok: 3 }]);
  const fine = `${'['.repeat(1024)}${']'.repeat(1024)}`;
  t.equal(all(fine)[0]!.ok, true, '1024 deep is allowed');
  t.same(
    all(`{"a": [1, 2, 3]} {"b": "${'x'.repeat(100)}"} {"c": 1}`, { maxTokenSize: 64 }).map((i) =>
      i.ok ? i.value : i.error,
    ),
    [{ a: [1, 2, 3] }, 'JSON token size limit exceeded', { c: 1 }],
    'configurable size',
  );
  t.same(
    values(`[${'1,'.repeat(600_000)} X {"after": 1}`).slice(0, 3),
    ['ERR JSON token size limit exceeded', "ERR JSON parse error, stray 'X'", { after: 1 }],
    'a lexical error ends the skipping',
  );
});

t.test('next() hands out one value at a time', async (t) => {
  const s = new JsonStreamer();
  s.feed(enc('{"a": 1}{"b": 2}'));
  t.equal(s.pendingBytes, 16);
  t.same(s.next(), { ok: true, value: { a: 1 } });
  t.equal(s.pendingBytes, 8, 'the second value is still unread');
  t.same(s.next(), { ok: true, value: { b: 2 } });
  t.equal(s.next(), undefined);
  s.feed(enc('{"c": '));
  t.equal(s.next(), undefined, 'incomplete');
  s.feed(enc('3}'));
  t.same(s.next(), { ok: true, value: { c: 3 } });
  t.same(new JsonStreamer().push(enc('123')), [], 'a number needs its end');
  const n = new JsonStreamer();
  n.push(enc('123'));
  t.same(n.flush(), [{ ok: true, value: 123 }], '... or the end of input');
});

t.test("QEMU's writer: member order, spacing, escapes, numbers", async (t) => {
  t.equal(
    qmpStringify({
      QMP: { version: { qemu: { major: 8, minor: 1, micro: 0 }, package: 'p' }, capabilities: [] },
    }),
    '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 1, "major": 8}, "package": "p"}, "capabilities": []}}',
    'the greeting as QEMU writes it',
  );
  t.equal(qmpStringify({ return: {}, id: 1 }), '{"return": {}, "id": 1}');
  t.equal(
    qmpStringify({ error: { class: 'GenericError', desc: 'd' }, id: 'x' }),
    '{"id": "x", "error": {"class": "GenericError", "desc": "d"}}',
  );
  t.equal(
    qmpStringify({ event: 'STOP', timestamp: { seconds: 1, microseconds: 2 }, data: { a: 1 } }),
    '{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP", "data": {"a": 1}}',
  );
  t.same(qdictOrder(['major', 'minor', 'micro']), ['micro', 'minor', 'major'], 'same bucket: newest first');
  t.equal(qmpStringify([1, 'a', null, true, [], {}]), '[1, "a", null, true, [], {}]');
  t.equal(qmpStringify({ a: undefined, b: 1 }), '{"b": 1}');
  t.equal(qmpStringify(18446744073709551615n), '18446744073709551615');
  t.equal(qmpStringify(new JsonDouble(2)), '2');
  t.equal(
    quoteString('a"b\\c\n\t\u0001é😀\uFFFF\uD800/'),
    '"a\\"b\\\\c\\n\\t\\u0001\\u00E9\\uD83D\\uDE00\\uFFFD\\uFFFD/"',
  );
  t.equal(quoteString('\u007f'), '"\\u007F"');
  const g17: [number, string][] = [
    [0.1, '0.10000000000000001'],
    [1.5, '1.5'],
    [1e21, '1e+21'],
    [1e-5, '1.0000000000000001e-05'],
    [123.456, '123.456'],
    [1234567890123456 + 0.25, '1234567890123456.2'], // a tie: glibc rounds to even
    [5e-324, '4.9406564584124654e-324'],
    [0.0001, '0.0001'],
    [1e17, '1e+17'],
    [1e16, '10000000000000000'],
    [-2.5e-7, '-2.4999999999999999e-07'],
    [1.7976931348623157e308, '1.7976931348623157e+308'],
    [1 / 3, '0.33333333333333331'],
    [-0, '-0'],
  ];
  for (const [x, s] of g17) t.equal(formatDouble(x), s, `%.17g of ${x}`);
  t.equal(qmpStringify(0.1), '0.10000000000000001');
  t.equal(qmpStringify(2 ** 63), '9223372036854775808', 'an integral number in uint64 range is an integer');
  t.equal(qmpStringify(Number.NaN), 'null');
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  t.throws(() => qmpStringify(cyclic), TypeError);
});
