import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { packageRoot } from '../package-root.js';

type Json = Record<string, unknown>;

/** The parsed openapi.yaml (OpenAPI 3.1): the contract every route is registered and validated from. */
export interface OpenApiDocument extends Json {
  openapi: string;
  paths: Record<string, Record<string, unknown>>;
  components: { schemas: Record<string, Json> } & Json;
}

/** Who may call an operation, from its `security` requirement. */
export type Access = 'open' | 'inference' | 'admin';

export interface Operation {
  operationId: string;
  method: 'GET' | 'POST' | 'DELETE';
  /** As in the spec: `/v1/adapters/{name}`. */
  path: string;
  /** As fastify routes it: `/v1/adapters/:name`. */
  url: string;
  access: Access;
  /** False when the spec lets the request omit its body (`requestBody.required` not true). */
  bodyRequired: boolean;
  /** Request schemas with every $ref inlined, for fastify's validator. */
  schema: { body?: Json; params?: Json; querystring?: Json };
}

const METHODS = ['get', 'post', 'delete'] as const;
const ACCESS_BY_SCHEME: Readonly<Record<string, Access>> = { apiKey: 'inference', adminKey: 'admin' };

export function openApiPath(): string {
  return join(packageRoot(), 'openapi.yaml');
}

export function loadOpenApi(path = openApiPath()): OpenApiDocument {
  const doc = parse(readFileSync(path, 'utf8')) as OpenApiDocument;
  if (typeof doc?.openapi !== 'string' || !doc.openapi.startsWith('3.1')) throw new Error(`${path}: not an OpenAPI 3.1 document`);
  return doc;
}

/** Every operation of the spec, in document order. */
export function operations(doc: OpenApiDocument): Operation[] {
  const ops: Operation[] = [];
  for (const [path, item] of Object.entries(doc.paths)) {
    const shared = (item.parameters ?? []) as Json[];
    for (const method of METHODS) {
      const op = item[method] as Json | undefined;
      if (!op) continue;
      const where = `${method.toUpperCase()} ${path}`;
      if (typeof op.operationId !== 'string') throw new Error(`openapi.yaml: ${where} has no operationId`);
      ops.push({
        operationId: op.operationId,
        method: method.toUpperCase() as Operation['method'],
        path,
        url: path.replace(/\{([^}]+)\}/g, ':$1'),
        access: access(op, where),
        bodyRequired: (op.requestBody as Json | undefined)?.required === true,
        schema: requestSchema(doc, [...shared, ...((op.parameters ?? []) as Json[])], op.requestBody as Json | undefined),
      });
    }
  }
  return ops;
}

function access(op: Json, where: string): Access {
  const requirements = (op.security ?? []) as Json[];
  if (requirements.length === 0) return 'open';
  const schemes = requirements.flatMap((r) => Object.keys(r));
  const levels = new Set(schemes.map((s) => ACCESS_BY_SCHEME[s]));
  if (levels.size !== 1 || schemes.some((s) => !(s in ACCESS_BY_SCHEME))) throw new Error(`openapi.yaml: ${where} has security ${JSON.stringify(schemes)}; expected apiKey or adminKey`);
  return [...levels][0] as Access;
}

function requestSchema(doc: OpenApiDocument, parameters: Json[], body: Json | undefined): Operation['schema'] {
  const schema: Operation['schema'] = {};
  const byLocation: Record<string, { properties: Json; required: string[] }> = {};
  for (const raw of parameters) {
    const p = resolveRefs(doc, raw) as Json;
    const location = p.in === 'path' ? 'params' : p.in === 'query' ? 'querystring' : null;
    if (!location) continue;
    byLocation[location] ??= { properties: {}, required: [] };
    byLocation[location].properties[p.name as string] = p.schema;
    if (p.required) byLocation[location].required.push(p.name as string);
  }
  for (const [location, { properties, required }] of Object.entries(byLocation)) {
    schema[location as 'params' | 'querystring'] = { type: 'object', properties, required };
  }
  const json = (body?.content as Json | undefined)?.['application/json'] as Json | undefined;
  if (json?.schema) schema.body = resolveRefs(doc, json.schema) as Json;
  return schema;
}

/** A copy of `value` with every `$ref` (a local JSON pointer, e.g. `#/components/schemas/Usage`) replaced by its target. */
export function resolveRefs(doc: OpenApiDocument, value: unknown, seen: readonly string[] = []): unknown {
  if (Array.isArray(value)) return value.map((v) => resolveRefs(doc, v, seen));
  if (typeof value !== 'object' || value === null) return value;
  const obj = value as Json;
  if (typeof obj.$ref === 'string') {
    const ref = obj.$ref;
    if (seen.includes(ref)) throw new Error(`openapi.yaml: ${ref} refers to itself`);
    return resolveRefs(doc, pointer(doc, ref), [...seen, ref]);
  }
  return Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, resolveRefs(doc, v, seen)]));
}

function pointer(doc: OpenApiDocument, ref: string): unknown {
  if (!ref.startsWith('#/')) throw new Error(`openapi.yaml: only local $refs are supported (found ${ref})`);
  let node: unknown = doc;
  for (const part of ref.slice(2).split('/')) {
    const key = part.replace(/~1/g, '/').replace(/~0/g, '~');
    node = typeof node === 'object' && node !== null ? (node as Json)[key] : undefined;
    if (node === undefined) throw new Error(`openapi.yaml: $ref ${ref} points nowhere`);
  }
  return node;
}

/** A component schema with its $refs inlined (e.g. `CompletionChunk`, for checking streamed events). */
export function componentSchema(doc: OpenApiDocument, name: string): Json {
  const schema = doc.components.schemas[name];
  if (!schema) throw new Error(`openapi.yaml: no component schema ${name}`);
  return resolveRefs(doc, schema) as Json;
}

/** The response schema of an operation for a status and media type, $refs inlined; undefined when the spec has none. */
export function responseSchema(doc: OpenApiDocument, operationId: string, status: number, mediaType = 'application/json'): Json | undefined {
  for (const item of Object.values(doc.paths)) {
    for (const method of METHODS) {
      const op = item[method] as Json | undefined;
      if (op?.operationId !== operationId) continue;
      const response = resolveRefs(doc, (op.responses as Json)[String(status)]) as Json | undefined;
      return ((response?.content as Json | undefined)?.[mediaType] as Json | undefined)?.schema as Json | undefined;
    }
  }
  throw new Error(`openapi.yaml: no operation ${operationId}`);
}
