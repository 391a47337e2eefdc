import { describe, expect, it } from 'vitest';
import { checkAccess } from '../../src/api/auth.js';
import type { Keys } from '../../src/api/auth.js';
import type { Access } from '../../src/api/openapi.js';
import { ApiError } from '../../src/errors.js';

const allowed = (access: Access, header: string | undefined, keys: Keys): boolean => {
  try {
    checkAccess(access, header, keys);
    return true;
  } catch (err) {
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).code).toBe('invalid_api_key');
    expect((err as ApiError).status).toBe(401);
    return false;
  }
};

describe('checkAccess', () => {
  const both: Keys = { apiKey: 'api', adminKey: 'admin' };

  it('leaves every route open without keys', () => {
    for (const access of ['open', 'inference', 'admin'] as const) expect(allowed(access, undefined, { apiKey: null, adminKey: null })).toBe(true);
  });

  it('opens inference routes to the API key and the admin key, and adapter management to the admin key only', () => {
    expect(allowed('inference', 'Bearer api', both)).toBe(true);
    expect(allowed('inference', 'Bearer admin', both)).toBe(true);
    expect(allowed('inference', 'Bearer nope', both)).toBe(false);
    expect(allowed('inference', undefined, both)).toBe(false);
    expect(allowed('admin', 'Bearer admin', both)).toBe(true);
    expect(allowed('admin', 'Bearer api', both)).toBe(false);
    expect(allowed('open', undefined, both)).toBe(true);
  });

  it('lets the API key manage adapters when there is no admin key', () => {
    expect(allowed('admin', 'Bearer api', { apiKey: 'api', adminKey: null })).toBe(true);
    expect(allowed('admin', undefined, { apiKey: 'api', adminKey: null })).toBe(false);
  });

  it('keeps inference open when only an admin key is set', () => {
    const adminOnly = { apiKey: null, adminKey: 'admin' };
    expect(allowed('inference', undefined, adminOnly)).toBe(true);
    expect(allowed('admin', undefined, adminOnly)).toBe(false);
  });

  it('accepts the scheme in any case and refuses other schemes', () => {
    expect(allowed('inference', 'bearer api', both)).toBe(true);
    expect(allowed('inference', 'Basic api', both)).toBe(false);
    expect(allowed('inference', 'Bearer api extra', both)).toBe(false);
  });
});
