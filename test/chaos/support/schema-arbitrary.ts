import fc from 'fast-check';

type Schema = Record<string, unknown>;

/**
 * JSON text JSON.stringify cannot write (1e999, integers past 2^53, -0) travels as a marked string and is spliced
 * into the body by `toJsonText`.
 */
const RAW_MARK = '\u0001raw:';
const raw = (text: string): string => `${RAW_MARK}${text}`;

/** The body text for a generated value, with raw number literals spliced in. */
export function toJsonText(value: unknown): string {
  return JSON.stringify(value).replace(/"\\u0001raw:((?:[^"\\]|\\.)*)"/g, (_, escaped: string) => JSON.parse(`"${escaped}"`) as string);
}

/**
 * A big value that fast-check prints by `label` (a counterexample stays readable) and JSON.stringify writes in full.
 */
function big(label: string, value: unknown): unknown {
  return { toJSON: () => value, [fc.toStringMethod]: () => label };
}

/** Nesting deep enough to break a recursive parser, validator or serializer. */
const DEEP = 20_000;
const HUGE_NUMBERS = [
  raw('1e999'), raw('-1e999'), raw('1e-999'), raw('-0'), raw('123456789012345678901234567890'), raw('0.1e1'),
  2 ** 53 + 2, -(2 ** 53) - 2, 2 ** 31, -(2 ** 31) - 1, 2 ** 32, Number.MAX_VALUE, -Number.MAX_VALUE, Number.MIN_VALUE, 1.5, -1, 0,
];
const NASTY_STRINGS = [
  '', ' ', '\u0000', '\ud800', '\udfff', '\ufeff', '💥'.repeat(200), '<|endoftext|>', '</s>', '{{ raise_exception("x") }}',
  '{% for x in range(99999999) %}{% endfor %}', '%s%n%x', '../../../../etc/passwd', '\\\\?\\C:\\', 'a'.repeat(300), '__proto__',
  'constructor', 'toString', '1e999', 'NaN', 'null', 'true',
];
const BIG = [
  big('"x" × 200000', 'x'.repeat(200_000)),
  big(`[ × ${DEEP}`, raw('['.repeat(DEEP) + ']'.repeat(DEEP))),
  big(`{"a": × ${DEEP}`, raw('{"a":'.repeat(DEEP) + '1' + '}'.repeat(DEEP))),
  big('[0..20000]', Array.from({ length: 20_000 }, (_, i) => i)),
  big('{k0..k5000}', Object.fromEntries(Array.from({ length: 5_000 }, (_, i) => [`k${i}`, i]))),
];

/** Values that stretch or break any schema: huge and odd numbers, odd strings, wrong types, deep nesting, big containers. */
const nasty: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom<unknown>(...HUGE_NUMBERS),
  fc.constantFrom<unknown>(...NASTY_STRINGS),
  fc.constantFrom<unknown>(null, true, false, [], {}, [null], JSON.parse('{"__proto__": {"polluted": true}}')),
  fc.constantFrom<unknown>(...BIG),
  fc.jsonValue({ maxDepth: 3 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.double(),
  fc.integer(),
);

/** Stand-ins for fields whose valid values the schema cannot tell (names of things that exist on this server). */
export type Domains = Readonly<Record<string, fc.Arbitrary<unknown>>>;

/** Bounds that keep valid requests cheap on a tiny model: a schema without a maximum gets this span above its minimum. */
const SPAN = 24;

/** Values of the shape `schema` describes, often at its bounds, for a field named `name`; nested fields may be nasty. */
function valid(schema: Schema, domains: Domains, name: string): fc.Arbitrary<unknown> {
  if (name in domains) return domains[name];
  if ('const' in schema) return fc.constant(schema.const);
  if (Array.isArray(schema.enum)) return fc.constantFrom(...(schema.enum as unknown[]));
  const branches = (schema.anyOf ?? schema.oneOf) as Schema[] | undefined;
  if (branches) return fc.oneof(...branches.map((b) => valid(b, domains, name)));
  const types = Array.isArray(schema.type) ? (schema.type as string[]) : [schema.type as string | undefined];
  return fc.oneof(...types.map((type) => ofType(type, schema, domains)));
}

function ofType(type: string | undefined, schema: Schema, domains: Domains): fc.Arbitrary<unknown> {
  switch (type) {
    case 'null': return fc.constant(null);
    case 'boolean': return fc.boolean();
    case 'integer': {
      const min = (schema.minimum as number | undefined) ?? -SPAN;
      const max = (schema.maximum as number | undefined) ?? min + SPAN;
      return fc.oneof(fc.integer({ min, max }), fc.constantFrom(min, max));
    }
    case 'number': {
      const exclusive = schema.exclusiveMinimum as number | undefined;
      const min = (schema.minimum as number | undefined) ?? (exclusive !== undefined ? exclusive + 1e-6 : -SPAN);
      const max = (schema.maximum as number | undefined) ?? min + SPAN;
      return fc.oneof(fc.double({ min, max, noNaN: true }), fc.constantFrom(min, max));
    }
    case 'string': {
      if (typeof schema.pattern === 'string') return fc.stringMatching(new RegExp(schema.pattern), { maxLength: 24 }).filter((s) => s.length > 0);
      return fc.string({ unit: 'grapheme', minLength: (schema.minLength as number | undefined) ?? 0, maxLength: 24 });
    }
    case 'array': {
      const minLength = (schema.minItems as number | undefined) ?? 0;
      return fc.array(value((schema.items ?? {}) as Schema, domains, ''), { minLength, maxLength: minLength + 3 });
    }
    case 'object':
    case undefined: {
      const properties = (schema.properties ?? {}) as Record<string, Schema>;
      const required = (schema.required ?? []) as string[];
      const extra = schema.additionalProperties;
      if (typeof extra === 'object' && extra !== null && Object.keys(properties).length === 0) {
        return fc.dictionary(fc.string({ maxLength: 8 }), value(extra as Schema, domains, ''), { maxKeys: 3 });
      }
      return fc.record(Object.fromEntries(Object.entries(properties).map(([k, s]) => [k, value(s, domains, k)])), { requiredKeys: required });
    }
    default: throw new Error(`schema type ${type} has no generator`);
  }
}

/** Mostly valid values for `schema`, and now and then a nasty one in their place. */
function value(schema: Schema, domains: Domains, name: string): fc.Arbitrary<unknown> {
  return fc.oneof({ arbitrary: valid(schema, domains, name), weight: 12 }, { arbitrary: nasty, weight: 1 });
}

/**
 * Request bodies for an OpenAPI request schema (refs resolved): mostly schema-shaped, each field now and then
 * replaced by a nasty value, sometimes without the required fields, with unknown fields, or nothing like the schema.
 */
export function requestBodies(schema: Schema, domains: Domains = {}): fc.Arbitrary<unknown> {
  const shaped = valid(schema, domains, '');
  const withExtra = fc.tuple(shaped, fc.dictionary(fc.string({ maxLength: 12 }), nasty, { minKeys: 1, maxKeys: 2 }))
    .map(([body, extra]) => (typeof body === 'object' && body !== null && !Array.isArray(body) ? { ...extra, ...body } : body));
  const stretched = value({ ...schema, required: [] }, domains, '');
  return fc.oneof({ arbitrary: shaped, weight: 3 }, { arbitrary: stretched, weight: 4 }, { arbitrary: withExtra, weight: 1 }, { arbitrary: nasty, weight: 1 });
}

function parses(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/** Bodies that are not JSON at all, or JSON cut short. */
export const malformedJson: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom('', '{', '{"prompt":', '{"prompt": "x",}', "{'prompt': 'x'}", 'NaN', '{"a":1}{"b":2}', '{"prompt": "\\u00"}', '{"prompt": "\u0000"}'),
  fc.string({ unit: 'binary', maxLength: 64 }),
  fc.jsonValue().map((v) => JSON.stringify(v).slice(0, -1)),
).filter((text) => !parses(text));
