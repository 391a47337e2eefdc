import { createHash, timingSafeEqual } from 'node:crypto';
import { ApiError } from '../errors.js';
import type { Access } from './openapi.js';

export interface Keys {
  /** Inference routes; null leaves them open. */
  apiKey: string | null;
  /** Adapter management; null falls back to apiKey. */
  adminKey: string | null;
}

/** The keys that open a route of this access level; empty when the route is open. */
function acceptedKeys(access: Access, keys: Keys): string[] {
  switch (access) {
    case 'open': return [];
    // The admin key may do everything the API key may.
    case 'inference': return keys.apiKey === null ? [] : [keys.apiKey, ...(keys.adminKey === null ? [] : [keys.adminKey])];
    case 'admin': return keys.adminKey !== null ? [keys.adminKey] : keys.apiKey !== null ? [keys.apiKey] : [];
  }
}

/** Throws invalid_api_key unless the `Authorization` header carries a key that opens a route of this access level. */
export function checkAccess(access: Access, authorization: string | undefined, keys: Keys): void {
  const accepted = acceptedKeys(access, keys);
  if (accepted.length === 0) return;
  const given = bearer(authorization);
  if (given === null) {
    const which = access === 'admin' ? 'the admin key' : 'an API key';
    throw new ApiError('invalid_api_key', `this route needs ${which}: send "Authorization: Bearer <key>"`);
  }
  if (!accepted.some((key) => sameSecret(given, key))) {
    throw new ApiError('invalid_api_key', access === 'admin' ? 'the key is not the admin key' : 'the API key is not valid');
  }
}

/** Whether the `Authorization` header opens routes of this access level (always, when they are open). */
export function hasAccess(access: Access, authorization: string | undefined, keys: Keys): boolean {
  const accepted = acceptedKeys(access, keys);
  const given = bearer(authorization);
  return accepted.length === 0 || (given !== null && accepted.some((key) => sameSecret(given, key)));
}

function bearer(authorization: string | undefined): string | null {
  return /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '')?.[1] ?? null;
}

/** Constant-time comparison (hashing first, as timingSafeEqual needs equal lengths). */
function sameSecret(given: string, expected: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(given), digest(expected));
}
