// Collects work items for up to maxWaitMs or maxRows rows, then runs them as one batch; one batch
// runs at a time (the model is one), the next collects meanwhile. run() may answer an Error for an
// item (that item fails alone); a throw from run() fails that batch's items only.
export interface BatcherOptions<Item, Result> {
  maxRows: number;
  maxWaitMs: number;
  rowsOf(item: Item): number;
  run(items: Item[]): Promise<(Result | Error)[]>;
}

interface Pending<Item, Result> {
  item: Item;
  resolve(r: Result): void;
  reject(e: unknown): void;
}

export class Batcher<Item, Result> {
  private queue: Pending<Item, Result>[] = [];
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  constructor(private readonly o: BatcherOptions<Item, Result>) {}

  submit(item: Item): Promise<Result> {
    return new Promise<Result>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.schedule();
    });
  }

  /** Items waiting, and whether a batch is running. */
  get depth(): number {
    return this.queue.length;
  }

  /** Resolves when nothing is queued or running. */
  async drain(): Promise<void> {
    while (this.queue.length || this.running) await (this.running ?? new Promise((r) => setTimeout(r, 1)));
  }

  private rowsQueued(): number {
    return this.queue.reduce((a, p) => a + this.o.rowsOf(p.item), 0);
  }

  private schedule(): void {
    if (this.running) return; // the running batch reschedules when it ends
    if (this.rowsQueued() >= this.o.maxRows) {
      this.flush();
      return;
    }
    if (!this.timer && this.queue.length) this.timer = setTimeout(() => this.flush(), this.o.maxWaitMs);
  }

  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.running || !this.queue.length) return;
    const batch: Pending<Item, Result>[] = [];
    let rows = 0;
    while (this.queue.length && (batch.length === 0 || rows + this.o.rowsOf(this.queue[0].item) <= this.o.maxRows)) {
      const p = this.queue.shift()!;
      rows += this.o.rowsOf(p.item);
      batch.push(p);
    }
    this.running = (async () => {
      try {
        const results = await this.o.run(batch.map((p) => p.item));
        batch.forEach((p, i) => {
          const r = results[i];
          if (r instanceof Error) p.reject(r);
          else p.resolve(r);
        });
      } catch (e) {
        for (const p of batch) p.reject(e);
      }
    })().finally(() => {
      this.running = null;
      this.schedule();
    });
  }
}
