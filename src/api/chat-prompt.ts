import type { ChatMessage, ChatRole, Tokenizer } from '../model/tokenizer.js';
import { ChatTemplateError } from '../model/tokenizer.js';
import { ApiError } from '../errors.js';

/** A chat message as OpenAI clients send it. */
export interface ChatMessageBody {
  role: ChatRole | 'developer';
  content?: string | { type: 'text'; text: string }[] | null;
  name?: string;
}

/**
 * Prompt token ids of a conversation: the checkpoint's chat template rendered (the template adds its own special
 * tokens, so none are added on encoding). A template that refuses the messages is the client's error.
 */
export function chatPromptIds(tokenizer: Tokenizer, messages: readonly ChatMessageBody[], addGenerationPrompt: boolean, addSpecialTokens = false): number[] {
  const chat: ChatMessage[] = messages.map((m) => ({
    role: m.role === 'developer' ? 'system' : m.role,
    content: typeof m.content === 'string' ? m.content : (m.content ?? []).map((part) => part.text).join(''),
  }));
  let text: string;
  try {
    text = tokenizer.applyChatTemplate(chat, { addGenerationPrompt });
  } catch (err) {
    if (err instanceof ChatTemplateError) throw new ApiError('chat_template_error', err.message, 'messages');
    throw err;
  }
  return tokenizer.encode(text, { addSpecialTokens });
}
