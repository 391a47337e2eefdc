import { expect } from 'vitest';
import { ApiError } from '../../src/errors.js';

/** The ApiError that `fn` throws (the test fails if it throws anything else or nothing). */
export function refusal(fn: () => unknown): ApiError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ApiError);
    return err as ApiError;
  }
  throw new Error('expected an ApiError');
}
