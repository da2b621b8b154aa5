// Classification metrics over label ids.

export interface Metrics {
  loss: number;
  accuracy: number;
  /** Mean F1 over the classes present in the labels or the predictions (scikit-learn's macro average). */
  macroF1: number;
  count: number;
}

export function accuracy(pred: ArrayLike<number>, gold: ArrayLike<number>): number {
  if (gold.length === 0) return 0;
  let ok = 0;
  for (let i = 0; i < gold.length; i++) if (pred[i] === gold[i]) ok++;
  return ok / gold.length;
}

export function macroF1(pred: ArrayLike<number>, gold: ArrayLike<number>): number {
  const classes = new Set<number>([...Array.from(gold), ...Array.from(pred)]);
  if (classes.size === 0) return 0;
  let sum = 0;
  for (const c of classes) {
    let tp = 0, fp = 0, fn = 0;
    for (let i = 0; i < gold.length; i++) {
      if (pred[i] === c && gold[i] === c) tp++;
      else if (pred[i] === c) fp++;
      else if (gold[i] === c) fn++;
    }
    sum += tp === 0 ? 0 : (2 * tp) / (2 * tp + fp + fn);
  }
  return sum / classes.size;
}

/** Row-wise argmax of logits [B, C]. */
export function argmaxRows(logits: Float32Array, C: number): number[] {
  const B = logits.length / C;
  const out: number[] = [];
  for (let b = 0; b < B; b++) {
    let best = 0;
    for (let c = 1; c < C; c++) if (logits[b * C + c] > logits[b * C + best]) best = c;
    out.push(best);
  }
  return out;
}

/** Row-wise softmax of logits [B, C] (float64 on the host). */
export function softmaxRows(logits: Float32Array, C: number): number[][] {
  const out: number[][] = [];
  for (let b = 0; b < logits.length / C; b++) {
    const row = Array.from(logits.subarray(b * C, (b + 1) * C));
    const m = Math.max(...row);
    const e = row.map((v) => Math.exp(v - m));
    const s = e.reduce((a, v) => a + v, 0);
    out.push(e.map((v) => v / s));
  }
  return out;
}
