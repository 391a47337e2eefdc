import { describe, expect, it } from 'vitest';
import { componentSchema, loadOpenApi, operations, resolveRefs, responseSchema } from '../../src/api/openapi.js';
import { TGI_DEFAULT_MAX_NEW_TOKENS } from '../../src/api/request-mapping.js';
import { DEFAULT_SAMPLING } from '../../src/engine/sampling-params.js';
import { ERRORS } from '../../src/errors.js';

const spec = loadOpenApi();
type Schema = { properties?: Record<string, { default?: unknown }>; enum?: unknown[] };

describe('openapi.yaml ⇄ error catalog', () => {
  const specCodes = (componentSchema(spec, 'ErrorCode') as Schema).enum as string[];

  it('lists every catalog code, and no code the catalog lacks', () => {
    expect([...specCodes].sort()).toEqual(Object.keys(ERRORS).sort());
  });

  it('lists every error type and documents every status the catalog answers with', () => {
    const types = ((componentSchema(spec, 'ErrorResponse') as { properties: { error: { properties: { type: Schema } } } }).properties.error.properties.type.enum) as string[];
    const statuses = new Set<string>();
    for (const item of Object.values(spec.paths)) {
      for (const op of Object.values(item) as { responses?: Record<string, unknown> }[]) for (const status of Object.keys(op.responses ?? {})) statuses.add(status);
    }
    for (const [code, { status, type }] of Object.entries(ERRORS)) {
      expect(types, code).toContain(type);
      expect(statuses, code).toContain(String(status));
    }
  });
});

describe('openapi.yaml', () => {
  it('is OpenAPI 3.1 with local $refs that all resolve', () => {
    expect(spec.openapi).toBe('3.1.0');
    expect(() => resolveRefs(spec, spec)).not.toThrow();
  });

  it('gives every operation a unique operationId and a security level', () => {
    const ops = operations(spec);
    expect(new Set(ops.map((o) => o.operationId)).size).toBe(ops.length);
    const byId = Object.fromEntries(ops.map((o) => [o.operationId, o]));
    expect(byId.createCompletion).toMatchObject({ method: 'POST', url: '/v1/completions', access: 'inference' });
    expect(byId.deleteAdapter).toMatchObject({ method: 'DELETE', url: '/v1/adapters/:name', access: 'admin' });
    expect(byId.health.access).toBe('open');
    expect(byId.deleteAdapter.schema.params).toMatchObject({ type: 'object', required: ['name'] });
  });

  it('documents the defaults the server applies', () => {
    const completion = componentSchema(spec, 'CompletionRequest') as Schema;
    const d = completion.properties ?? {};
    expect({
      max_tokens: d.max_tokens.default, temperature: d.temperature.default, top_p: d.top_p.default, top_k: d.top_k.default, min_p: d.min_p.default,
      repetition_penalty: d.repetition_penalty.default, presence_penalty: d.presence_penalty.default, frequency_penalty: d.frequency_penalty.default,
      ignore_eos: d.ignore_eos.default,
    }).toEqual({
      max_tokens: DEFAULT_SAMPLING.maxTokens, temperature: DEFAULT_SAMPLING.temperature, top_p: DEFAULT_SAMPLING.topP, top_k: DEFAULT_SAMPLING.topK,
      min_p: DEFAULT_SAMPLING.minP, repetition_penalty: DEFAULT_SAMPLING.repetitionPenalty, presence_penalty: DEFAULT_SAMPLING.presencePenalty,
      frequency_penalty: DEFAULT_SAMPLING.frequencyPenalty, ignore_eos: DEFAULT_SAMPLING.ignoreEos,
    });
    const tgi = componentSchema(spec, 'GenerateParameters') as Schema;
    expect(tgi.properties?.max_new_tokens.default).toBe(TGI_DEFAULT_MAX_NEW_TOKENS);
  });

  it('finds response schemas by operation, status and media type', () => {
    expect(responseSchema(spec, 'createCompletion', 200)).toMatchObject({ required: ['id', 'object', 'created', 'model', 'choices', 'usage'] });
    expect(responseSchema(spec, 'createCompletion', 429)).toMatchObject({ required: ['error'] });
    expect(responseSchema(spec, 'metrics', 200, 'text/plain')).toEqual({ type: 'string' });
    expect(responseSchema(spec, 'health', 418)).toBeUndefined();
  });
});
