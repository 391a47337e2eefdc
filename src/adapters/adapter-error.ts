/**
 * Why an adapter was refused, one code per kind of refusal:
 * - `adapter_not_found`: the directory, adapter_config.json or adapter_model.safetensors does not exist.
 * - `adapter_invalid`: a file is malformed (bad JSON, a field of the wrong type, a corrupt or truncated safetensors
 *   file, a combination of fields PEFT itself rejects).
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
  | 'adapter_invalid'
  | 'adapter_unsupported'
  | 'adapter_rank_too_large'
  | 'adapter_shape_mismatch'
  | 'adapter_missing_tensor'
  | 'adapter_unexpected_tensor'
  | 'adapter_nonfinite';

/** An adapter that cannot be served: the message names the file (or directory) and what is wrong with it. */
export class AdapterError extends Error {
  override readonly name = 'AdapterError';

  constructor(
    readonly code: AdapterErrorCode,
    readonly path: string,
    readonly problem: string,
  ) {
    super(`${path}: ${problem}`);
  }
}
