import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Tokenizer } from '../../src/model/tokenizer.js';
import { byteLevelTokenizerJson } from '../../src/synth/byte-tokenizer.js';

function load(extraSpecialTokens?: string[]): Tokenizer {
  const { tokenizer, tokenizerConfig } = byteLevelTokenizerJson({ extraSpecialTokens });
  return Tokenizer.fromJson(tokenizer, tokenizerConfig);
}

/** Random text over all of Unicode (surrogates excluded) from a seeded xorshift generator. */
function randomText(seed: number, length: number): string {
  let state = seed;
  const next = (): number => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return state >>> 0;
  };
  let text = '';
  while (text.length < length) {
    // Mostly ASCII and the BMP, some astral planes: every UTF-8 length occurs.
    const bucket = next() % 4;
    const cp = bucket === 0 ? next() % 0x80 : bucket === 1 ? next() % 0x800 : bucket === 2 ? next() % 0x10000 : 0x10000 + (next() % 0x100000);
    if (cp < 0xd800 || cp > 0xdfff) text += String.fromCodePoint(cp);
  }
  return text;
}

describe('byteLevelTokenizerJson', () => {
  it('maps each byte to the token with that id and puts the special tokens after them', () => {
    const tokenizer = load();
    expect(tokenizer.vocabSize).toBe(261);
    expect(tokenizer.encode('A')).toEqual([65]);
    expect(tokenizer.encode('é€😀')).toEqual([...new TextEncoder().encode('é€😀')]);
    expect(tokenizer.encode('\u0000 \n')).toEqual([0, 32, 10]);
    expect(['<s>', '</s>', '<pad>', '<|im_start|>', '<|im_end|>'].map((t) => tokenizer.tokenToId(t))).toEqual([256, 257, 258, 259, 260]);
    expect(tokenizer.bosTokenId).toBe(256);
    expect(tokenizer.eosTokenIds).toEqual([257]);
  });

  it('round-trips arbitrary UTF-8 text exactly, one token per byte', () => {
    const tokenizer = load();
    const texts = [
      'Hello, world!  Two  spaces, a\ttab, \r\n and trailing space ',
      '你好，世界 — 日本語 — 한국어 — 😀🎉👨‍👩‍👧‍👦🇯🇵 — e\u0301 — 𠜎',
      "'s 're n't  ...  ?!",
      randomText(1, 2000),
      randomText(2, 2000),
    ];
    for (const text of texts) {
      const ids = tokenizer.encode(text);
      expect(ids).toEqual([...new TextEncoder().encode(text)]);
      expect(tokenizer.decode(ids)).toBe(text);
    }
  });

  it('keeps special tokens whole and can skip them', () => {
    const tokenizer = load();
    const ids = tokenizer.encode('<|im_start|>user\nhi<|im_end|>');
    expect(ids).toEqual([259, 117, 115, 101, 114, 10, 104, 105, 260]);
    expect(tokenizer.decode(ids)).toBe('<|im_start|>user\nhi<|im_end|>');
    expect(tokenizer.decode(ids, { skipSpecialTokens: true })).toBe('user\nhi');
  });

  it('adds extra special tokens after the built-in ones and refuses duplicates', () => {
    const tokenizer = load(['<tool_call>', '</tool_call>']);
    expect(tokenizer.vocabSize).toBe(263);
    expect(tokenizer.encode('<tool_call>x</tool_call>')).toEqual([261, 120, 262]);
    expect(() => byteLevelTokenizerJson({ extraSpecialTokens: ['<s>'] })).toThrow(/"<s>" is empty or duplicated/);
    expect(() => byteLevelTokenizerJson({ extraSpecialTokens: [''] })).toThrow(/empty or duplicated/);
  });

  it('has a ChatML chat template', () => {
    const tokenizer = load();
    expect(
      tokenizer.applyChatTemplate(
        [
          { role: 'system', content: 'Be terse.' },
          { role: 'user', content: 'Hi 👋' },
        ],
        { addGenerationPrompt: true },
      ),
    ).toBe('<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi 👋<|im_end|>\n<|im_start|>assistant\n');
  });

  it('is deterministic and loads from a checkpoint directory', () => {
    expect(JSON.stringify(byteLevelTokenizerJson())).toBe(JSON.stringify(byteLevelTokenizerJson()));
    const dir = mkdtempSync(join(tmpdir(), 'loraserve-byte-tokenizer-'));
    try {
      const { tokenizer, tokenizerConfig } = byteLevelTokenizerJson();
      writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
      writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig));
      const loaded = Tokenizer.fromDir(dir);
      expect(loaded.decode(loaded.encode('round trip ✓'))).toBe('round trip ✓');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
