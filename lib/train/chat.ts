// Chat templates: the model's Jinja template (tokenizer_config.json chat_template, or the GGUF
// file's tokenizer.chat_template) rendered with @huggingface/jinja, as transformers'
// apply_chat_template renders it.
import type { Tokenizer } from './tokenizer';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | string;
  content: string;
}

interface JinjaModule {
  Template: new (template: string) => { render(items: Record<string, unknown>): string };
}
let jinja: JinjaModule | undefined;

const compiled = new Map<string, { render(items: Record<string, unknown>): string }>();

/** The tokenizer's chat template, or undefined when it has none. */
export function chatTemplateOf(tokenizer: Tokenizer): string | undefined {
  const t = tokenizer.config.chat_template;
  if (typeof t === 'string') return t;
  // transformers also allows a list of named templates: the 'default' one is used
  if (Array.isArray(t)) {
    const d = t.find((x) => x && typeof x === 'object' && (x as { name?: string }).name === 'default') as { template?: string } | undefined;
    return typeof d?.template === 'string' ? d.template : undefined;
  }
  return undefined;
}

/**
 * The conversation as the model's template writes it. addGenerationPrompt appends the assistant's
 * opening (to generate, or to find where an answer starts).
 */
export function renderChat(tokenizer: Tokenizer, messages: ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): string {
  const template = chatTemplateOf(tokenizer);
  if (template === undefined) throw new Error('renderChat: the tokenizer has no chat template (tokenizer_config.json chat_template)');
  if (!Array.isArray(messages) || messages.some((m) => !m || typeof m.role !== 'string' || typeof m.content !== 'string'))
    throw new Error('renderChat: messages must be an array of { role, content } with string fields');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  jinja ??= require('@huggingface/jinja') as JinjaModule;
  let t = compiled.get(template);
  if (!t) {
    try {
      t = new jinja.Template(template);
    } catch (e) {
      throw new Error(`renderChat: the chat template does not parse: ${(e as Error).message}`);
    }
    compiled.set(template, t);
  }
  const tok = (k: string) => (typeof tokenizer.config[k] === 'string' ? tokenizer.config[k] : '');
  return t.render({
    messages, add_generation_prompt: !!opts.addGenerationPrompt,
    bos_token: tok('bos_token'), eos_token: tok('eos_token'), pad_token: tok('pad_token'), unk_token: tok('unk_token'),
  });
}
