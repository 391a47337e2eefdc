/** A checkpoint file that cannot be used: the message names the file and what is wrong with it. */
export class CheckpointError extends Error {
  override readonly name = 'CheckpointError';

  constructor(
    readonly file: string,
    readonly problem: string,
  ) {
    super(`${file}: ${problem}`);
  }
}
