// Classification and embeddings for an encoder server: requests are batched (Batcher) and each
// batch runs once through the backbone with a different adapter per row (the batched adapter op at
// every site, each row's logits from its own head); rows whose adapters differ in shape run as
// separate groups (a failing group fails its own requests only). Embeddings are the mean of the last hidden states over the real tokens.
import type { Backbone } from '../models/bert/model';
import type { Tokenizer } from '../train/tokenizer';
import { softmaxRows } from '../train/metrics';
import { Batcher } from './batcher';

export interface EncoderItem {
  kind: 'classify' | 'embed';
  texts: string[];
  /** The model's adapter name (null: none) and the key of its shape group. */
  adapter: string | null;
  group: string;
  labels?: string[];
}

export type EncoderResult =
  | { kind: 'classify'; results: { label: string; probabilities: Record<string, number> }[] }
  | { kind: 'embed'; embeddings: number[][] };

export class EncoderService {
  readonly batcher: Batcher<EncoderItem, EncoderResult>;

  constructor(private readonly model: Backbone, private readonly tokenizer: Tokenizer, o: { maxBatch: number; maxWaitMs: number; onBatch?: (rows: number) => void }) {
    this.batcher = new Batcher<EncoderItem, EncoderResult>({
      maxRows: o.maxBatch, maxWaitMs: o.maxWaitMs, rowsOf: (i) => i.texts.length,
      run: async (items) => {
        const out = new Array<EncoderResult | Error>(items.length);
        const groups = new Map<string, number[]>();
        items.forEach((it, i) => groups.set(`${it.kind}|${it.group}`, [...(groups.get(`${it.kind}|${it.group}`) ?? []), i]));
        for (const idx of groups.values()) {
          o.onBatch?.(idx.reduce((a, i) => a + items[i].texts.length, 0));
          try {
            const res = await this.runGroup(idx.map((i) => items[i]));
            idx.forEach((i, j) => { out[i] = res[j]; });
          } catch (e) {
            // this group's requests fail; the other groups of the batch still run
            for (const i of idx) out[i] = e instanceof Error ? e : new Error(String(e));
          }
          await new Promise((r) => setImmediate(r));
        }
        return out;
      },
    });
  }

  /** The tokens a text takes (special tokens included), to refuse texts beyond the model's length. */
  tokenCount(text: string): number {
    return this.tokenizer.encode(text, undefined, { maxLength: Number.MAX_SAFE_INTEGER }).ids.length;
  }

  private async runGroup(items: EncoderItem[]): Promise<EncoderResult[]> {
    const texts = items.flatMap((i) => i.texts);
    const adapters = items.flatMap((i) => i.texts.map(() => i.adapter));
    const enc = this.tokenizer.encodeBatch(texts, undefined, { maxLength: this.model.config.maxPositions });
    const r = await this.model.forwardAsync(
      { inputIds: enc.inputIds, attentionMask: enc.attentionMask, tokenTypeIds: enc.tokenTypeIds, shape: enc.shape },
      adapters.some((a) => a !== null) ? { adapters } : {},
    );
    try {
      if (items[0].kind === 'classify') {
        let row = 0;
        return items.map((it) => ({
          kind: 'classify' as const,
          results: it.texts.map(() => {
            const logits = r.rowLogits?.[row++];
            if (!logits) throw new Error('classify: the adapter has no head');
            const probs = softmaxRows(logits, logits.length)[0];
            const labels = it.labels ?? probs.map((_, i) => String(i));
            const best = probs.indexOf(Math.max(...probs));
            return { label: labels[best], probabilities: Object.fromEntries(labels.map((l, i) => [l, probs[i]])) };
          }),
        }));
      }
      const [B, T] = enc.shape;
      const H = this.model.config.hiddenSize;
      const h = r.lastHiddenState.toArray();
      const mask = enc.attentionMask;
      const emb = Array.from({ length: B }, (_, b) => {
        const v = new Array<number>(H).fill(0);
        let n = 0;
        for (let t = 0; t < T; t++) {
          if (!mask[b * T + t]) continue;
          n++;
          for (let d = 0; d < H; d++) v[d] += h[(b * T + t) * H + d];
        }
        return v.map((x) => x / Math.max(n, 1));
      });
      let row = 0;
      return items.map((it) => ({ kind: 'embed' as const, embeddings: it.texts.map(() => emb[row++]) }));
    } finally {
      r.dispose();
    }
  }
}
