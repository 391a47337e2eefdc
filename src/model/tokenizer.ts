import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';

export type ChatRole = 'system' | 'user' | 'assistant' | 'tool';

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

export interface EncodeOptions {
  /** Add the BOS/EOS tokens the checkpoint asks for (default true, as in HF). */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop special tokens from the text (default false, as in HF). */
  skipSpecialTokens?: boolean;
}

export interface ChatTemplateOptions {
  /** End with the header that opens the assistant's turn. */
  addGenerationPrompt?: boolean;
  /** Tool definitions, passed to the template as `tools`. */
  tools?: unknown[];
}

/** A chat template that does not parse, or that failed while rendering (including its own `raise_exception`). */
export class ChatTemplateError extends Error {
  override name = 'ChatTemplateError';
}

type JsonObject = Record<string, unknown>;

/** Special-token fields of tokenizer_config.json that HF exposes to chat templates as variables. */
const TEMPLATE_TOKEN_FIELDS = ['bos_token', 'eos_token', 'unk_token', 'pad_token', 'sep_token', 'cls_token', 'mask_token'] as const;

/** Tokens the encoder adds around the text when tokenizer_config.json sets `add_bos_token`/`add_eos_token`. */
interface SpecialTokenTemplate {
  bos: number | null;
  eos: number | null;
}

/**
 * A checkpoint's tokenizer: `tokenizer.json` through `@huggingface/tokenizers`, special tokens and the chat
 * template from `tokenizer_config.json`, templates rendered with `@huggingface/jinja`.
 */
export class Tokenizer {
  /** Highest token id + 1, added tokens included. */
  readonly vocabSize: number;
  readonly bosTokenId: number | null;
  readonly eosTokenIds: number[];
  /** decode() applies HF's `clean_up_tokenization_spaces` (" ." → ".", " n't" → "n't", ...). */
  readonly cleanUpTokenizationSpaces: boolean;
  readonly #hf: HfTokenizer;
  /** null: the tokenizer.json post-processor decides which special tokens encode() adds. */
  readonly #specialTokenTemplate: SpecialTokenTemplate | null;
  readonly #chatTemplates: Map<string, string>;
  readonly #compiledTemplates = new Map<string, Template>();
  readonly #templateTokens: JsonObject;

  private constructor(tokenizerJson: object, config: JsonObject) {
    this.cleanUpTokenizationSpaces = optionalBoolean(config, 'clean_up_tokenization_spaces') ?? false;
    try {
      // The library defaults clean-up to on; HF turned it off by default, so pass the resolved value.
      this.#hf = new HfTokenizer(tokenizerJson, { ...config, clean_up_tokenization_spaces: this.cleanUpTokenizationSpaces });
    } catch (err) {
      throw new Error(`tokenizer.json: ${errorMessage(err)}`);
    }
    const model = this.#hf.model;
    if (model === null) throw new Error('tokenizer.json: has no model');
    this.vocabSize = model.vocab.length;

    const bos = tokenContent(config, 'bos_token');
    const eos = tokenContent(config, 'eos_token');
    this.bosTokenId = bos === null ? null : this.#requireId(bos, 'bos_token');
    this.eosTokenIds = eos === null ? [] : [this.#requireId(eos, 'eos_token')];

    // As HF does: an explicit add_bos_token/add_eos_token replaces the tokenizer.json post-processor.
    const addBos = optionalBoolean(config, 'add_bos_token');
    const addEos = optionalBoolean(config, 'add_eos_token');
    this.#specialTokenTemplate =
      addBos === null && addEos === null
        ? null
        : { bos: addBos === true ? this.bosTokenId : null, eos: addEos === true ? (this.eosTokenIds[0] ?? null) : null };

    this.#chatTemplates = chatTemplates(config.chat_template);
    this.#templateTokens = {};
    for (const field of TEMPLATE_TOKEN_FIELDS) {
      const content = tokenContent(config, field);
      if (content !== null) this.#templateTokens[field] = content;
    }
  }

  /** Loads `tokenizer.json`, `tokenizer_config.json` (optional) and `chat_template.jinja` (optional; overrides the config's template, as in HF) from a checkpoint directory. */
  static fromDir(dir: string): Tokenizer {
    const tokenizerJson = readJsonObject(join(dir, 'tokenizer.json'));
    const configPath = join(dir, 'tokenizer_config.json');
    const config = existsSync(configPath) ? readJsonObject(configPath) : {};
    const templatePath = join(dir, 'chat_template.jinja');
    if (existsSync(templatePath)) config.chat_template = readFileSync(templatePath, 'utf8');
    try {
      return new Tokenizer(tokenizerJson, config);
    } catch (err) {
      throw new Error(`${dir}: ${errorMessage(err)}`);
    }
  }

  static fromJson(tokenizerJson: object, tokenizerConfig: object = {}): Tokenizer {
    return new Tokenizer(tokenizerJson, { ...tokenizerConfig });
  }

  get hasChatTemplate(): boolean {
    return this.#chatTemplates.has('default');
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const addSpecialTokens = opts.addSpecialTokens ?? true;
    const template = this.#specialTokenTemplate;
    if (template === null) return this.#hf.encode(text, { add_special_tokens: addSpecialTokens }).ids;
    const ids = this.#hf.encode(text, { add_special_tokens: false }).ids;
    if (!addSpecialTokens) return ids;
    if (template.bos !== null) ids.unshift(template.bos);
    if (template.eos !== null) ids.push(template.eos);
    return ids;
  }

  /** Ids outside the vocabulary (a model's padded embedding rows) decode to nothing, as in HF. */
  decode(ids: number[], opts: DecodeOptions = {}): string {
    const known = ids.filter((id) => this.#hf.id_to_token(id) !== undefined);
    if (known.length === 0) return '';
    return this.#hf.decode(known, { skip_special_tokens: opts.skipSpecialTokens ?? false });
  }

  tokenToId(token: string): number | null {
    return this.#hf.token_to_id(token) ?? null;
  }

  idToToken(id: number): string | null {
    return this.#hf.id_to_token(id) ?? null;
  }

  /**
   * Renders the chat template with the variables HF passes: `messages`, `add_generation_prompt`, `tools`,
   * the special tokens (`bos_token`, `eos_token`, ...) and `raise_exception`.
   */
  applyChatTemplate(messages: ChatMessage[], opts: ChatTemplateOptions = {}): string {
    // HF picks a named "tool_use" template when tools are given and the checkpoint has one.
    const name = opts.tools !== undefined && this.#chatTemplates.has('tool_use') ? 'tool_use' : 'default';
    const template = this.#compiledTemplate(name);
    const context: JsonObject = { ...this.#templateTokens, messages, add_generation_prompt: opts.addGenerationPrompt ?? false };
    if (opts.tools !== undefined) context.tools = opts.tools;
    try {
      return template.render(context);
    } catch (err) {
      throw new ChatTemplateError(`chat template "${name}" failed: ${errorMessage(err)}`);
    }
  }

  #compiledTemplate(name: string): Template {
    const cached = this.#compiledTemplates.get(name);
    if (cached !== undefined) return cached;
    const source = this.#chatTemplates.get(name);
    if (source === undefined) {
      throw new ChatTemplateError(
        this.#chatTemplates.size === 0
          ? 'the tokenizer has no chat template (tokenizer_config.json has no chat_template)'
          : `tokenizer_config.json chat_template has no "${name}" template (it has ${[...this.#chatTemplates.keys()].join(', ')})`,
      );
    }
    let template: Template;
    try {
      template = new Template(source);
    } catch (err) {
      throw new ChatTemplateError(`chat template "${name}" does not parse: ${errorMessage(err)}`);
    }
    this.#compiledTemplates.set(name, template);
    return template;
  }

  #requireId(content: string, field: string): number {
    const id = this.tokenToId(content);
    if (id === null) throw new Error(`tokenizer_config.json: ${field} ${JSON.stringify(content)} is not in the tokenizer vocabulary`);
    return id;
  }
}

/** A special-token field: a string, an AddedToken object (`{"content": ...}`), or absent/null. */
function tokenContent(config: JsonObject, field: string): string | null {
  const value = config[field];
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && !Array.isArray(value) && typeof (value as JsonObject).content === 'string') {
    return (value as { content: string }).content;
  }
  throw new Error(`tokenizer_config.json: ${field} must be a string or an AddedToken object with a "content" string`);
}

function optionalBoolean(config: JsonObject, field: string): boolean | null {
  const value = config[field];
  if (value === undefined || value === null) return null;
  if (typeof value !== 'boolean') throw new Error(`tokenizer_config.json: ${field} must be a boolean, got ${JSON.stringify(value)}`);
  return value;
}

/** `chat_template` is one template, or a list of `{name, template}` of which "default" is the plain one. */
function chatTemplates(value: unknown): Map<string, string> {
  const templates = new Map<string, string>();
  if (value === undefined || value === null) return templates;
  if (typeof value === 'string') return templates.set('default', value);
  if (!Array.isArray(value)) throw new Error('tokenizer_config.json: chat_template must be a string or a list of {name, template}');
  for (const entry of value as unknown[]) {
    const { name, template } = (typeof entry === 'object' && entry !== null ? entry : {}) as JsonObject;
    if (typeof name !== 'string' || typeof template !== 'string') {
      throw new Error(`tokenizer_config.json: chat_template entry ${JSON.stringify(entry)} is not {name, template} strings`);
    }
    templates.set(name, template);
  }
  return templates;
}

function readJsonObject(path: string): JsonObject {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`${path}: cannot read: ${errorMessage(err)}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new Error(`${path}: invalid JSON: ${errorMessage(err)}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`${path}: is not a JSON object`);
  return value as JsonObject;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
