/**
 * Why an adapter was refused, one code per kind of refusal:
 * - `adapter_not_found`: the directory, adapter_config.json or adapter_model.safetensors does not exist.
 * - `adapter_path_not_allowed`: a file of the adapter resolves, symlinks followed, outside the adapter roots (or, for
 *   an adapter the operator named outside the roots, outside its own directory).
 * - `adapter_invalid`: a file is malformed (bad JSON, a field of the wrong type, a corrupt or truncated safetensors
 *   file, not a regular file, too large, a combination of fields PEFT itself rejects), or loading it did not finish.
 * - `adapter_unsupported`: a well-formed PEFT adapter using a feature this server does not serve (DoRA,
 *   modules_to_save, embedding or lm_head LoRA, LoRA biases, pickled `.bin` weights, ...).
 * - `adapter_rank_too_large`: a module's rank is above the server's maximum LoRA rank.
 * - `adapter_shape_mismatch`: the adapter does not fit the base model (tensor shapes, layer indices, or no module of
 *   the base is targeted): it was trained for another model.
 * - `adapter_missing_tensor`: a targeted module lacks its lora_A or lora_B weight.
 * - `adapter_unexpected_tensor`: the weights file holds a tensor the config does not explain.
 * - `adapter_nonfinite`: a weight is NaN or infinite.
 */
export type AdapterErrorCode =
  | 'adapter_not_found'
  | 'adapter_path_not_allowed'
  | 'adapter_invalid'
  | 'adapter_unsupported'
  | 'adapter_rank_too_large'
  | 'adapter_shape_mismatch'
  | 'adapter_missing_tensor'
  | 'adapter_unexpected_tensor'
  | 'adapter_nonfinite';

/** Longest value from an adapter's files quoted in a message: the files are untrusted and may be huge. */
const MAX_QUOTED = 100;
/** Longest problem kept, a bound over everything a message may embed (tensor names, parser messages, ...). */
const MAX_PROBLEM = 1000;

/** `text`, cut to `max` characters with an ellipsis. */
export function excerpt(text: string, max = MAX_QUOTED): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}

/** A value read from an adapter file, as JSON, cut to a readable length. */
export function quote(value: unknown): string {
  return excerpt(JSON.stringify(value) ?? String(value));
}

/**
 * An adapter that cannot be served. The message names the adapter (when known), the file by its name inside the
 * adapter directory, and what is wrong with it; never an absolute path, so it can go to clients as it is.
 */
export class AdapterError extends Error {
  override readonly name = 'AdapterError';
  readonly problem: string;

  constructor(
    readonly code: AdapterErrorCode,
    /** The file, relative to the adapter directory; '' for the directory itself. */
    readonly path: string,
    problem: string,
    /** The adapter's name; null when the refusal is not yet tied to one. */
    readonly adapter: string | null = null,
  ) {
    const cut = excerpt(problem, MAX_PROBLEM);
    super([adapter === null ? '' : `adapter '${adapter}'`, path, cut].filter((part) => part !== '').join(': '));
    this.problem = cut;
  }

  /** The same refusal, naming the adapter. */
  forAdapter(name: string): AdapterError {
    return new AdapterError(this.code, this.path, this.problem, name);
  }
}
