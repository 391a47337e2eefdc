import type { RuntimeChoice } from '../model/load-model.js';
import { RUNTIME_CHOICES } from '../model/load-model.js';
import type { Quantization } from '../model/quantizer.js';
import { QUANTIZATIONS } from '../model/quantizer.js';

/** A bad command line: the command prints the message and its usage and exits with 2. */
export class UsageError extends Error {}

export function positiveInt(text: string, flag: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${flag} must be a positive integer`);
  return n;
}

export function runtimeChoice(text: string): RuntimeChoice {
  if (!RUNTIME_CHOICES.includes(text as RuntimeChoice)) throw new UsageError(`--runtime must be one of ${RUNTIME_CHOICES.join(', ')}`);
  return text as RuntimeChoice;
}

export function quantization(text: string): Quantization {
  if (!QUANTIZATIONS.includes(text as Quantization)) throw new UsageError(`--quant must be one of ${QUANTIZATIONS.join(', ')}`);
  return text as Quantization;
}
