// The model a server serves: a GGUF file or a decoder directory → Decoder; an encoder directory
// (config.json's model_type one loadBackbone takes) → Backbone; a hub id is tried as an encoder, then
// as a decoder when its model_type is not an encoder's.
// The tokenizer comes from the GGUF file or tokenizer.json beside the weights.
import * as fs from 'fs';
import * as path from 'path';
import { loadBackbone } from '../models/bert/load';
import type { Backbone } from '../models/bert/model';
import { SUPPORTED_MODEL_TYPES } from '../models/bert/config';
import { loadDecoder } from '../models/decoder/load';
import type { Decoder } from '../models/decoder/model';
import { Tokenizer } from '../train/tokenizer';

export async function openServedModel(source: string, device: string): Promise<{ model: Backbone | Decoder; tokenizer: Tokenizer }> {
  let encoder = !/\.gguf$/i.test(source);
  const cfg = path.join(source, 'config.json');
  if (encoder && fs.existsSync(cfg)) {
    const mt = (JSON.parse(fs.readFileSync(cfg, 'utf8')) as { model_type?: string }).model_type;
    encoder = (SUPPORTED_MODEL_TYPES as readonly string[]).includes(String(mt));
  }
  if (encoder) {
    try {
      const model = await loadBackbone(source, { device });
      return { model, tokenizer: await Tokenizer.fromDir(model.dir!) };
    } catch (e) {
      // a hub id of a decoder: its config names a model_type the encoders do not take
      if (fs.existsSync(cfg) || !/unsupported model_type/.test((e as Error).message)) throw e;
    }
  }
  const model = await loadDecoder(source, { device });
  return { model, tokenizer: await decoderTokenizer(model, source) };
}

/** A decoder's own tokenizer (see Decoder.ownTokenizer), or an error naming the source. */
export async function decoderTokenizer(model: Decoder, source: string): Promise<Tokenizer> {
  const tokenizer = await model.ownTokenizer();
  if (!tokenizer) throw new Error(`${source}: no tokenizer (tokenizer.json beside the model, or a GGUF file)`);
  return tokenizer;
}
