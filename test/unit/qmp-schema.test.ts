/**
 * Argument checking with QEMU's qobject-input-visitor / qapi-visit-core texts and member paths.
 */
import t from 'tap';
import { QmpError } from '../../shared/qmp/errors.js';
import { JsonDouble } from '../../shared/qmp/json.js';
import { type ArgSpec, checkArguments, normalizeArguments } from '../../shared/qmp/schema.js';

const CAPS: Record<string, ArgSpec> = {
  capabilities: {
    type: 'array',
    items: {
      type: 'object',
      fields: { capability: { type: 'enum', values: ['events', 'xbzrle'] }, state: { type: 'bool' } },
    },
  },
};

const PARAMS: Record<string, ArgSpec> = {
  'downtime-limit': { type: 'uint64', optional: true },
  'max-bandwidth': { type: 'size', optional: true },
  'cpu-throttle-initial': { type: 'uint8', optional: true },
  'x-period': { type: 'uint32', optional: true },
  'tls-creds': { type: 'str', optional: true },
  resume: { type: 'bool', optional: true },
  offset: { type: 'int', optional: true },
  wide: { type: 'int64', optional: true },
  ratio: { type: 'number', optional: true },
  blob: { type: 'any', optional: true },
  enable: { type: 'array', optional: true, items: { type: 'enum', values: ['oob'] } },
  nested: {
    type: 'object',
    optional: true,
    fields: { inner: { type: 'object', fields: { leaf: { type: 'str' } } } },
  },
};

function desc(spec: Record<string, ArgSpec>, args: Record<string, unknown>): string | null {
  try {
    checkArguments(spec, args);
    return null;
  } catch (e) {
    if (!(e instanceof QmpError)) throw e;
    if (e.errorClass !== 'GenericError') return `${e.errorClass}: ${e.message}`;
    return e.message;
  }
}

t.test('missing, unexpected and mistyped members, with full paths', async (t) => {
  t.equal(desc(CAPS, {}), "Parameter 'capabilities' is missing");
  t.equal(desc(CAPS, { capabilities: [], foo: 1 }), "Parameter 'foo' is unexpected");
  t.equal(desc(CAPS, { capabilities: {} }), "Invalid parameter type for 'capabilities', expected: array");
  t.equal(
    desc(CAPS, { capabilities: [5] }),
    "Invalid parameter type for 'capabilities[0]', expected: object",
  );
  t.equal(
    desc(CAPS, { capabilities: [{ capability: 'events', state: true }, { capability: 'events' }] }),
    "Parameter 'capabilities[1].state' is missing",
  );
  t.equal(
    desc(CAPS, { capabilities: [{ capability: 'events', state: true, extra: 1 }] }),
    "Parameter 'capabilities[0].extra' is unexpected",
  );
  t.equal(
    desc(CAPS, { capabilities: [{ capability: 'events', state: 'yes' }] }),
    "Invalid parameter type for 'capabilities[0].state', expected: boolean",
  );
  t.equal(
    desc(CAPS, { capabilities: [{ capability: 1, state: true }] }),
    "Invalid parameter type for 'capabilities[0].capability', expected: string",
  );
  t.equal(
    desc(CAPS, { capabilities: [{ state: true, capability: 'events', more: 1 }], foo: 2 }),
    "Parameter 'capabilities[0].more' is unexpected",
    'members in schema order, an object checked for extras when it is done',
  );
  t.equal(desc(PARAMS, { nested: { inner: {} } }), "Parameter 'nested.inner.leaf' is missing");
  t.equal(
    desc(PARAMS, { nested: { inner: { leaf: 1 } } }),
    "Invalid parameter type for 'nested.inner.leaf', expected: string",
  );
  t.equal(desc(PARAMS, { nested: [] }), "Invalid parameter type for 'nested', expected: object");
  t.equal(desc(PARAMS, { 'tls-creds': 5 }), "Invalid parameter type for 'tls-creds', expected: string");
  t.equal(
    desc(PARAMS, { 'tls-creds': null }),
    "Invalid parameter type for 'tls-creds', expected: string",
    'null is not absent',
  );
  t.equal(desc(PARAMS, { resume: 1 }), "Invalid parameter type for 'resume', expected: boolean");
  t.equal(desc(PARAMS, { ratio: 'x' }), "Invalid parameter type for 'ratio', expected: number");
  t.equal(desc({}, { a: 1 }), "Parameter 'a' is unexpected", 'a command without arguments');
  t.equal(desc(CAPS, { capabilities: [{ capability: 'events', state: false }] }), null);
});

t.test('enums: QEMU names the member alone, a list element as null', async (t) => {
  t.equal(
    desc(CAPS, { capabilities: [{ capability: 'bogus', state: true }] }),
    "Parameter 'capability' does not accept value 'bogus'",
  );
  t.equal(desc(PARAMS, { enable: ['oob', 'x'] }), "Parameter 'null' does not accept value 'x'");
  t.equal(desc(PARAMS, { enable: [1] }), "Invalid parameter type for 'enable[0]', expected: string");
});

t.test('integers: int64, uint64/size, uint8, uint32', async (t) => {
  t.equal(desc(PARAMS, { offset: -5 }), null);
  t.equal(desc(PARAMS, { offset: 9223372036854775807n }), null);
  t.equal(
    desc(PARAMS, { offset: 9223372036854775808n }),
    "Invalid parameter type for 'offset', expected: integer",
  );
  t.equal(
    desc(PARAMS, { wide: new JsonDouble(1) }),
    "Invalid parameter type for 'wide', expected: integer",
    '1.0',
  );
  t.equal(desc(PARAMS, { wide: 1.5 }), "Invalid parameter type for 'wide', expected: integer");
  t.equal(desc(PARAMS, { wide: '1' }), "Invalid parameter type for 'wide', expected: integer");

  t.equal(desc(PARAMS, { 'downtime-limit': 18446744073709551615n }), null);
  t.equal(desc(PARAMS, { 'downtime-limit': -1 }), null, 'a negative uint64 is accepted, as QEMU');
  t.equal(
    desc(PARAMS, { 'downtime-limit': new JsonDouble(2 ** 64) }),
    "Parameter 'downtime-limit' expects uint64",
  );
  t.equal(desc(PARAMS, { 'downtime-limit': 'x' }), "Parameter 'downtime-limit' expects uint64");
  t.equal(
    desc(PARAMS, { 'max-bandwidth': 0.5 }),
    "Parameter 'max-bandwidth' expects uint64",
    'size is uint64',
  );

  t.equal(desc(PARAMS, { 'cpu-throttle-initial': 255 }), null);
  t.equal(desc(PARAMS, { 'cpu-throttle-initial': 256 }), "Parameter 'cpu-throttle-initial' expects uint8_t");
  t.equal(desc(PARAMS, { 'cpu-throttle-initial': -1 }), "Parameter 'cpu-throttle-initial' expects uint8_t");
  t.equal(desc(PARAMS, { 'cpu-throttle-initial': 'a' }), "Parameter 'cpu-throttle-initial' expects uint64");
  t.equal(desc(PARAMS, { 'x-period': 4294967296 }), "Parameter 'x-period' expects uint32_t");
  t.equal(desc(PARAMS, { 'x-period': 4294967295 }), null);
  t.equal(
    desc({ l: { type: 'array', items: { type: 'uint8' } } }, { l: [1, 300] }),
    "Parameter 'null' expects uint8_t",
  );
  t.equal(desc(PARAMS, { ratio: 5n }), null, 'an integer is a number');
  t.equal(desc(PARAMS, { blob: { anything: [null, new JsonDouble(2)] } }), null);
});

t.test('what the command receives: plain numbers', async (t) => {
  const args = {
    'downtime-limit': -1,
    'max-bandwidth': 9223372036853727232n,
    ratio: new JsonDouble(2),
    blob: { x: 18446744073709551615n, y: [new JsonDouble(3)] },
    nested: { inner: { leaf: 'l' } },
  };
  checkArguments(PARAMS, args);
  t.same(normalizeArguments(PARAMS, args), {
    'downtime-limit': 2 ** 64,
    'max-bandwidth': Number(9223372036853727232n),
    ratio: 2,
    blob: { x: 2 ** 64, y: [3] },
    nested: { inner: { leaf: 'l' } },
  });
});
