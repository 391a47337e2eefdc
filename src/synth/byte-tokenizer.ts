export interface ByteLevelTokenizerOptions {
  /** More special tokens, given ids after the built-in ones in this order. */
  extraSpecialTokens?: string[];
}

/** Special tokens after the 256 byte tokens: `<s>` = 256, `</s>` = 257, `<pad>` = 258, `<|im_start|>` = 259, `<|im_end|>` = 260. */
const SPECIAL_TOKENS = ['<s>', '</s>', '<pad>', '<|im_start|>', '<|im_end|>'];

/** ChatML, as Qwen uses it, without a default system prompt. */
const CHAT_TEMPLATE =
  "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endfor %}" +
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/**
 * A minimal Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) with one token per byte: token id
 * b is byte b (GPT-2's byte-to-unicode alphabet, BPE with no merges), so any UTF-8 text round-trips exactly.
 * The special tokens follow from id 256, extras last. BOS is not added on encode; the chat template is ChatML.
 */
export function byteLevelTokenizerJson(opts: ByteLevelTokenizerOptions = {}): { tokenizer: object; tokenizerConfig: object } {
  const specials = [...SPECIAL_TOKENS, ...(opts.extraSpecialTokens ?? [])];
  const seen = new Set<string>();
  for (const token of specials) {
    if (token.length === 0 || seen.has(token)) throw new Error(`byte tokenizer: special token ${JSON.stringify(token)} is empty or duplicated`);
    seen.add(token);
  }

  const vocab: Record<string, number> = {};
  byteAlphabet().forEach((char, byte) => {
    vocab[char] = byte;
  });
  const addedTokens = specials.map((content, i) => ({
    id: 256 + i,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: byteLevel,
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: [],
    },
  };
  const tokenizerConfig = {
    add_bos_token: false,
    add_eos_token: false,
    bos_token: '<s>',
    eos_token: '</s>',
    pad_token: '<pad>',
    unk_token: null,
    additional_special_tokens: specials.filter((token) => !['<s>', '</s>', '<pad>'].includes(token)),
    chat_template: CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    model_max_length: 1_000_000,
    tokenizer_class: 'PreTrainedTokenizerFast',
  };
  return { tokenizer, tokenizerConfig };
}

/**
 * GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves, the rest map in order to U+0100
 * onwards, so every byte is one visible character that no pre-tokenizer splits.
 */
function byteAlphabet(): string[] {
  const printable = (b: number): boolean => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let next = 0x100;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(printable(b) ? b : next++));
}
