import { PROJECTIONS } from '../model/model-config.js';
import { AdapterError, quote } from './adapter-error.js';
import type { AdapterErrorCode } from './adapter-error.js';

/** How PEFT selects modules by name with `target_modules` or `exclude_modules`. */
export type ModuleSelector =
  /** A list: a module is selected when its name equals an entry or ends with `.` + entry (entries are literal). */
  | { kind: 'names'; names: readonly string[] }
  /** A string: a regex that must match the whole module name (`re.fullmatch`). */
  | { kind: 'regex'; source: string; regex: RegExp };

/** One `rank_pattern` / `alpha_pattern` entry. Entries keep the config's key order: PEFT takes the first match. */
export interface PatternEntry {
  key: string;
  /** `^(.*\.)?(key)$`: the key, itself a regex, matches the whole module name or a tail of it after a dot. */
  regex: RegExp;
  value: number;
}

/**
 * The parts of a PEFT `adapter_config.json` that decide which modules get LoRA weights and how they are scaled.
 * Module names are as transformers names them in the base model, e.g. `model.layers.3.self_attn.q_proj`.
 */
export interface PeftConfig {
  /** The config file, for messages. */
  source: string;
  r: number;
  loraAlpha: number;
  useRslora: boolean;
  rankPattern: readonly PatternEntry[];
  alphaPattern: readonly PatternEntry[];
  targetModules: ModuleSelector;
  excludeModules: ModuleSelector | null;
  /** Layer indices a listed target applies to; null for all layers. */
  layersToTransform: readonly number[] | null;
  /** Regexes whose first group is a module's layer index (from `layers_pattern`, or PEFT's default). */
  layerIndexPatterns: readonly RegExp[];
}

/** PEFT's defaults, applied when a field is absent or null. */
const DEFAULT_LORA_ALPHA = 8;
/** PEFT's default `target_modules` for llama, mistral, qwen2 and qwen3 when the config names none. */
const DEFAULT_TARGETS: readonly string[] = ['q_proj', 'v_proj'];
/** PEFT's index regex without `layers_pattern`: any `.<name>.<index>.` in the module name. */
const DEFAULT_LAYER_INDEX = /^.*\.[^.]*\.(\d+)\./;

/**
 * Fields that change what the weights mean, refused when set. The value says what the feature does that a plain
 * batched LoRA kernel cannot reproduce.
 */
const UNSUPPORTED_FIELDS: Readonly<Record<string, string>> = {
  use_dora: 'DoRA (use_dora) rescales each output by a learned magnitude vector',
  modules_to_save: 'modules_to_save replaces whole base modules with trained copies',
  layer_replication: 'layer_replication stacks copies of base layers into a deeper model',
  lora_bias: 'lora_bias adds a trained bias to lora_B',
  trainable_token_indices: 'trainable_token_indices retrains rows of the token embedding',
  target_parameters: 'target_parameters puts LoRA on raw parameters (e.g. MoE experts) rather than the projections',
  use_qalora: 'QA-LoRA (use_qalora) pools the input of lora_A',
  alora_invocation_tokens: 'activated LoRA (alora_invocation_tokens) applies only after its invocation tokens',
};

/**
 * `init_lora_weights` values that rewrite the base weights during training (W − B·A): such an adapter only works on
 * the modified base it was trained with.
 */
function rewritesBaseWeights(init: unknown): boolean {
  return typeof init === 'string' && (init.startsWith('pissa') || init === 'olora' || init === 'corda' || init === 'loftq');
}

/**
 * Validates a parsed `adapter_config.json` and reads what serving needs. Refuses anything but a plain LoRA on the
 * decoder projections (see UNSUPPORTED_FIELDS). `fan_in_fan_out` is checked to be a boolean and otherwise ignored:
 * it only concerns `Conv1D` base layers (GPT-2), PEFT forces it off for the `nn.Linear` projections of every
 * supported architecture, and lora_A / lora_B are stored `[r, in]` / `[out, r]` either way.
 */
export function parsePeftConfig(json: unknown, source: string): PeftConfig {
  const fail = (code: AdapterErrorCode, problem: string): never => {
    throw new AdapterError(code, source, problem);
  };
  if (!isRecord(json)) return fail('adapter_invalid', `expected a JSON object, found ${describe(json)}`);
  const field = (name: string): unknown => json[name] ?? undefined;

  const peftType = field('peft_type');
  if (peftType === undefined) fail('adapter_invalid', 'peft_type is missing (a LoRA adapter has "peft_type": "LORA")');
  if (peftType !== 'LORA') fail('adapter_unsupported', `peft_type ${quote(peftType)} is not supported: only LORA adapters are`);

  for (const [name, what] of Object.entries(UNSUPPORTED_FIELDS)) {
    const value = field(name);
    if (isSet(value)) fail('adapter_unsupported', `${name} = ${quote(value)} is not supported: ${what}`);
  }
  const init = field('init_lora_weights');
  if (rewritesBaseWeights(init)) {
    fail(
      'adapter_unsupported',
      `init_lora_weights ${quote(init)} is not supported: it rewrote the base model's weights during training, so the adapter ` +
        'only works on that modified base (PEFT converts PiSSA, OLoRA and CorDA adapters to plain LoRA with ' +
        'save_pretrained(..., path_initial_model_for_weight_conversion=...))',
    );
  }
  const bias = field('bias') ?? 'none';
  if (bias !== 'none') {
    if (bias === 'all' || bias === 'lora_only') {
      fail('adapter_unsupported', `bias ${quote(bias)} is not supported: it trains the base model's biases; only "none" is`);
    }
    fail('adapter_invalid', `bias must be "none", "all" or "lora_only" (found ${quote(bias)})`);
  }

  const rValue = field('r');
  if (rValue === undefined) fail('adapter_invalid', 'r (the LoRA rank) is missing');
  const r = positiveInteger(rValue, 'r', fail);
  const loraAlpha = finiteNumber(field('lora_alpha') ?? DEFAULT_LORA_ALPHA, 'lora_alpha', fail);
  const useRslora = boolean(field('use_rslora') ?? false, 'use_rslora', fail);
  boolean(field('fan_in_fan_out') ?? false, 'fan_in_fan_out', fail);
  const rankPattern = patternTable(field('rank_pattern'), 'rank_pattern', (v, what) => positiveInteger(v, what, fail), fail);
  const alphaPattern = patternTable(field('alpha_pattern'), 'alpha_pattern', (v, what) => finiteNumber(v, what, fail), fail);

  const rawTargets = field('target_modules');
  const targetModules = targetSelector(rawTargets, fail);
  const excludeModules = excludeSelector(field('exclude_modules'), fail);
  const layersToTransform = layerList(field('layers_to_transform'), fail);
  const layersPattern = layersPatternList(field('layers_pattern'), fail);
  // PEFT's own LoraConfig refuses these combinations.
  if (typeof rawTargets === 'string' && layersToTransform !== null) {
    fail('adapter_invalid', 'layers_to_transform cannot be used when target_modules is a string (PEFT refuses this config)');
  }
  if (typeof rawTargets === 'string' && layersPattern !== null) {
    fail('adapter_invalid', 'layers_pattern cannot be used when target_modules is a string (PEFT refuses this config)');
  }
  if (layersPattern !== null && layersToTransform === null) {
    fail('adapter_invalid', 'layers_pattern is set without layers_to_transform (PEFT refuses this config)');
  }
  const layerIndexPatterns =
    layersPattern === null
      ? [DEFAULT_LAYER_INDEX]
      : layersPattern.map((p) => compile(`^.*?\\.${p}\\.(\\d+)\\.`, `layers_pattern entry ${quote(p)}`, fail));

  return { source, r, loraAlpha, useRslora, rankPattern, alphaPattern, targetModules, excludeModules, layersToTransform, layerIndexPatterns };
}

/**
 * PEFT's `check_target_module_exists`: excluded modules never match; a regex must match the whole name; a list entry
 * matches the name exactly or as a `.`-separated suffix, and only suffix matches are then filtered by
 * `layers_to_transform` (a module named in full is taken whatever its layer, as PEFT does).
 */
export function isTargeted(config: PeftConfig, module: string): boolean {
  if (config.excludeModules && selects(config.excludeModules, module)) return false;
  const targets = config.targetModules;
  if (targets.kind === 'regex') return targets.regex.test(module);
  if (targets.names.includes(module)) return true;
  if (!targets.names.some((name) => module.endsWith(`.${name}`))) return false;
  if (config.layersToTransform === null) return true;
  const layer = layerIndexOf(config, module);
  return layer !== null && config.layersToTransform.includes(layer);
}

/**
 * A targeted module's rank, alpha and scale. Rank and alpha come from the first `rank_pattern` / `alpha_pattern` key
 * (in file order) matching the module name as `^(.*\.)?(key)$`, PEFT's `get_pattern_key`: `"q_proj"` matches every
 * q_proj, `"layers.0.self_attn.q_proj"` one of them, `"mlp\\..*"` (a regex) every MLP projection; else `r` and
 * `lora_alpha`. The scale is α/r, or α/√r with `use_rslora`.
 */
export function moduleLoraParams(config: PeftConfig, module: string): { rank: number; alpha: number; scale: number } {
  const rank = patternValue(config.rankPattern, module) ?? config.r;
  const alpha = patternValue(config.alphaPattern, module) ?? config.loraAlpha;
  return { rank, alpha, scale: config.useRslora ? alpha / Math.sqrt(rank) : alpha / rank };
}

function patternValue(table: readonly PatternEntry[], module: string): number | undefined {
  return table.find((entry) => entry.regex.test(module))?.value;
}

function selects(selector: ModuleSelector, module: string): boolean {
  if (selector.kind === 'regex') return selector.regex.test(module);
  return selector.names.some((name) => module === name || module.endsWith(`.${name}`));
}

function layerIndexOf(config: PeftConfig, module: string): number | null {
  for (const pattern of config.layerIndexPatterns) {
    const match = pattern.exec(module);
    if (match) return Number(match[1]);
  }
  return null;
}

type Fail = (code: AdapterErrorCode, problem: string) => never;

function targetSelector(value: unknown, fail: Fail): ModuleSelector {
  if (value === undefined) return { kind: 'names', names: DEFAULT_TARGETS };
  if (typeof value === 'string') {
    // PEFT expands "all-linear" to every linear layer but the output head: the seven projections here.
    if (value.toLowerCase() === 'all-linear') return { kind: 'names', names: PROJECTIONS };
    return { kind: 'regex', source: value, regex: compile(`^(?:${value})$`, 'target_modules', fail) };
  }
  const names = stringList(value, 'target_modules', fail);
  if (names.length === 0) fail('adapter_invalid', 'target_modules is empty');
  for (const name of names) {
    const last = name.slice(name.lastIndexOf('.') + 1);
    if (last === 'embed_tokens' || last === 'lm_head') {
      fail('adapter_unsupported', `target_modules entry ${quote(name)}: LoRA on the token embedding or lm_head is not supported`);
    }
    if (!(PROJECTIONS as readonly string[]).includes(last)) {
      fail(
        'adapter_unsupported',
        `target_modules entry ${quote(name)} is not one of the decoder projections (${PROJECTIONS.join(', ')}); ` +
          'list entries are module names matched literally, as PEFT does (a regex must be the whole target_modules string)',
      );
    }
  }
  return { kind: 'names', names };
}

function excludeSelector(value: unknown, fail: Fail): ModuleSelector | null {
  if (value === undefined || value === '') return null;
  if (typeof value === 'string') return { kind: 'regex', source: value, regex: compile(`^(?:${value})$`, 'exclude_modules', fail) };
  const names = stringList(value, 'exclude_modules', fail);
  return names.length === 0 ? null : { kind: 'names', names };
}

function layerList(value: unknown, fail: Fail): number[] | null {
  if (value === undefined) return null;
  const list = Array.isArray(value) ? value : [value];
  const layers = list.map((v, i) => nonNegativeInteger(v, Array.isArray(value) ? `layers_to_transform[${i}]` : 'layers_to_transform', fail));
  // PEFT treats an empty list like no list.
  return layers.length === 0 ? null : layers;
}

function layersPatternList(value: unknown, fail: Fail): string[] | null {
  if (value === undefined || value === '') return null;
  const list = typeof value === 'string' ? [value] : stringList(value, 'layers_pattern', fail);
  return list.length === 0 ? null : list;
}

function patternTable(
  value: unknown,
  name: string,
  parseValue: (v: unknown, what: string) => number,
  fail: Fail,
): PatternEntry[] {
  if (value === undefined) return [];
  if (!isRecord(value)) return fail('adapter_invalid', `${name} must be an object of module pattern to value (found ${describe(value)})`);
  return Object.entries(value).map(([key, v]) => ({
    key,
    regex: compile(`^(.*\\.)?(${key})$`, `${name} key ${quote(key)}`, fail),
    value: parseValue(v, `${name}[${quote(key)}]`),
  }));
}

function compile(source: string, what: string, fail: Fail): RegExp {
  try {
    return new RegExp(source);
  } catch (err) {
    // V8 says "Invalid regular expression: /<source>/: <reason>"; the source can be huge, the reason is what helps.
    const message = (err as Error).message;
    return fail('adapter_invalid', `${what} is not a valid regular expression: ${message.slice(message.lastIndexOf(': ') + 2)}`);
  }
}

function stringList(value: unknown, name: string, fail: Fail): string[] {
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string' && v !== '')) {
    fail('adapter_invalid', `${name} must be a string or a list of non-empty strings (found ${quote(value)})`);
  }
  return value as string[];
}

function positiveInteger(value: unknown, what: string, fail: Fail): number {
  if (!Number.isSafeInteger(value) || (value as number) <= 0) fail('adapter_invalid', `${what} must be a positive integer (found ${quote(value)})`);
  return value as number;
}

function nonNegativeInteger(value: unknown, what: string, fail: Fail): number {
  if (!Number.isSafeInteger(value) || (value as number) < 0) fail('adapter_invalid', `${what} must be a non-negative integer (found ${quote(value)})`);
  return value as number;
}

function finiteNumber(value: unknown, what: string, fail: Fail): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) fail('adapter_invalid', `${what} must be a number (found ${quote(value)})`);
  return value as number;
}

function boolean(value: unknown, what: string, fail: Fail): boolean {
  if (typeof value !== 'boolean') fail('adapter_invalid', `${what} must be true or false (found ${quote(value)})`);
  return value as boolean;
}

/** A field that turns a feature on: anything but absent, null, false, 0, "" or an empty list or object. */
function isSet(value: unknown): boolean {
  if (value === undefined || value === null || value === false || value === 0 || value === '') return false;
  if (Array.isArray(value)) return value.length > 0;
  if (isRecord(value)) return Object.keys(value).length > 0;
  return true;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  return Array.isArray(value) ? 'an array' : `a ${typeof value}`;
}
