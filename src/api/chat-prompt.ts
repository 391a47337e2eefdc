import type { ChatMessage, ChatRole } from '../model/tokenizer.js';
import { ChatTemplateError } from '../model/tokenizer.js';
import { ApiError } from '../errors.js';
import type { PromptTokenizer } from './prompt-tokenizer.js';

/** A chat message as OpenAI clients send it. */
export interface ChatMessageBody {
  role: ChatRole | 'developer';
  content?: string | { type: 'text'; text: string }[] | null;
  name?: string;
}

/**
 * Prompt token ids of a conversation: the checkpoint's chat template rendered (the template adds its own special
 * tokens, so none are added on encoding unless asked). A template that refuses the messages is the client's error.
 */
export async function chatPromptIds(prompts: PromptTokenizer, messages: readonly ChatMessageBody[], addGenerationPrompt: boolean, addSpecialTokens = false): Promise<number[]> {
  const chat: ChatMessage[] = messages.map((m) => ({
    role: m.role === 'developer' ? 'system' : m.role,
    content: typeof m.content === 'string' ? m.content : (m.content ?? []).map((part) => part.text).join(''),
  }));
  try {
    return await prompts.encodeChat(chat, 'messages', { addGenerationPrompt, addSpecialTokens });
  } catch (err) {
    if (err instanceof ChatTemplateError) throw new ApiError('chat_template_error', err.message, 'messages');
    throw err;
  }
}
