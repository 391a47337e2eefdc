import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { adapterDigest } from '../adapters/adapter-digest.js';
import { loadPeftAdapter } from '../adapters/peft-loader.js';
import { SlotManager } from '../adapters/slot-manager.js';
import type { LoraBatch, ModelRunner } from '../model/decoder.js';
import { DEFAULT_EVAL_CHUNK, evaluateLoss } from '../model/evaluate.js';
import type { BuildOptions } from '../model/graph-builder.js';
import { DEFAULT_BUILD_OPTIONS, LORA_WEIGHT_TYPE } from '../model/graph-builder.js';
import type { RuntimeChoice } from '../model/load-model.js';
import { loadModel, openBuiltModel, resolveRuntime } from '../model/load-model.js';
import { buildMerged } from '../model/merged-build.js';
import type { ModelConfig } from '../model/model-config.js';
import type { Quantization } from '../model/quantizer.js';
import { Tokenizer } from '../model/tokenizer.js';
import { positiveInt, quantization, runtimeChoice, UsageError } from './usage.js';

const HELP = `usage: loraserve eval --model DIR [--adapter DIR [--merge]] --text-file FILE [options]

Mean per-token loss of a text under the model (teacher forcing), through the serving graph, KV cache and LoRA
slots (or, with --merge, the merged build). The text is tokenized as a prompt is (with the tokenizer's BOS), cut
into windows of --context tokens, each scored from an empty cache and fed --chunk tokens per run.

options:
  --model DIR          checkpoint directory (config.json, *.safetensors, tokenizer.json)
  --adapter DIR        PEFT adapter to apply (default: the base model alone)
  --merge              fold the adapter into the weights (a merged build, requantized) instead of a LoRA slot
  --text-file FILE     UTF-8 text to score
  --context N          tokens per window (default: the model's max_position_embeddings)
  --chunk N            tokens per forward run (default ${DEFAULT_EVAL_CHUNK})
  --quant Q            int4 | int8 | fp32 (default int4)
  --max-lora-rank N    rank of the LoRA slots, as in serving (default 16); with --merge, the largest rank accepted
  --threads N          ONNX Runtime threads (default: all cores)
  --runtime R          auto | native | stock (default auto: native where it can be loaded, LORASERVE_RUNTIME)
  --json               print {"tokens": N, "mean_loss": x, "perplexity": y}
`;

export async function evalCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      adapter: { type: 'string' },
      merge: { type: 'boolean', default: false },
      'text-file': { type: 'string' },
      context: { type: 'string' },
      chunk: { type: 'string', default: String(DEFAULT_EVAL_CHUNK) },
      quant: { type: 'string', default: 'int4' },
      'max-lora-rank': { type: 'string', default: '16' },
      threads: { type: 'string', default: String(availableParallelism()) },
      runtime: { type: 'string', default: process.env.LORASERVE_RUNTIME || 'auto' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  let text: string;
  let model: string;
  let options: { context?: number; chunk: number; maxLoraRank: number; threads: number };
  try {
    if (!values.model) throw new UsageError('--model is required');
    if (!values['text-file']) throw new UsageError('--text-file is required');
    if (values.merge && values.adapter === undefined) throw new UsageError('--merge needs --adapter');
    quantization(values.quant);
    runtimeChoice(values.runtime);
    model = values.model;
    options = {
      context: values.context === undefined ? undefined : positiveInt(values.context, '--context'),
      chunk: positiveInt(values.chunk, '--chunk'),
      maxLoraRank: positiveInt(values['max-lora-rank'], '--max-lora-rank'),
      threads: positiveInt(values.threads, '--threads'),
    };
    text = readFileSync(values['text-file'], 'utf8');
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`loraserve eval: ${err.message}\n\n${HELP}`);
    return 2;
  }

  const adapter = values.merge ? undefined : values.adapter;
  const { config, decoder, runtime } = values.merge
    ? await loadMerged(model, values.adapter as string, values.quant as Quantization, values.runtime as RuntimeChoice, options)
    : await loadModel({
      modelDir: model,
      quantization: values.quant as Quantization,
      threads: options.threads,
      loraRank: adapter === undefined ? 0 : options.maxLoraRank,
      allLogits: true,
      runtime: values.runtime as RuntimeChoice,
    });
  try {
    let lora: LoraBatch | undefined;
    if (adapter !== undefined) {
      const weightType = LORA_WEIGHT_TYPE[runtime];
      // The native graph reads the slot itself; only the stock one reads a row's copy.
      const slots = new SlotManager(config, 1, options.maxLoraRank, runtime === 'native' ? 0 : 1, weightType);
      // The one slot is free, so acquire cannot answer null.
      const slot = slots.acquire(adapterDigest(adapter), loadPeftAdapter(adapter, config, { maxRank: options.maxLoraRank, weightType })) as number;
      slots.bindRow(0, slot);
      lora = slots.batch(0, [slot]);
    }
    const ids = Tokenizer.fromDir(model).encode(text);
    const result = await evaluateLoss(decoder, ids, { context: options.context, chunk: options.chunk, lora });
    process.stdout.write(values.json
      ? `${JSON.stringify({ tokens: result.tokens, mean_loss: result.meanLoss, perplexity: result.perplexity })}\n`
      : `${result.tokens} tokens, mean loss ${result.meanLoss.toFixed(4)} nats/token, perplexity ${result.perplexity.toFixed(3)}\n`);
  } finally {
    await decoder.release();
  }
  return 0;
}

/** The merged build of the adapter (built or reused, as the engine's merged sessions are) in a session. */
async function loadMerged(modelDir: string, adapterDir: string, quant: Quantization, choice: RuntimeChoice, options: { maxLoraRank: number; threads: number }): Promise<{ config: ModelConfig; decoder: ModelRunner; runtime: 'native' | 'stock' }> {
  const { runtime } = resolveRuntime(choice);
  const buildOptions: BuildOptions = { ...DEFAULT_BUILD_OPTIONS, quantization: quant, allLogits: true, runtime, loraRank: 0 };
  const built = buildMerged({ modelDir, adapter: { dir: adapterDir, maxRank: options.maxLoraRank }, options: buildOptions });
  return { config: built.config, decoder: await openBuiltModel(built.dir, built.config, buildOptions, options.threads), runtime };
}
