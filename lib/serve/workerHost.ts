// A LocalHost in a worker thread (worker.ts), seen from the server's thread: the same methods,
// asynchronous, so the HTTP event loop keeps answering (health checks, new requests, streamed
// tokens) while a batch computes. A worker that dies fails the calls in flight; later calls fail
// with 503.
import * as fs from 'fs';
import * as path from 'path';
import { Worker } from 'worker_threads';
import { HttpError, HostEvents, HostInfo, HostOptions } from './host';

interface Pending { resolve(v: unknown): void; reject(e: unknown): void; onPiece?: (p: string) => boolean | void }

function workerScript(): string {
  const here = path.join(__dirname, 'worker.js');
  if (fs.existsSync(here)) return here;
  // running from the TypeScript sources (tests): the compiled worker
  return path.resolve(__dirname, '..', '..', 'dist', 'lib', 'serve', 'worker.js');
}

export class WorkerHost {
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private dead: string | null = null;

  private constructor(private readonly worker: Worker, readonly infoValue: HostInfo) {}

  static start(source: string, device: string, library: string, options: HostOptions, events: HostEvents): Promise<WorkerHost> {
    // env: the environment as this thread sees it now (HF_ENDPOINT, HF_HOME, budgets, ...)
    const worker = new Worker(workerScript(), { workerData: { source, device, library, options }, env: { ...process.env } });
    return new Promise((resolve, reject) => {
      let host: WorkerHost | undefined;
      worker.on('message', (m: Record<string, unknown>) => {
        if (m.ready) {
          host = new WorkerHost(worker, m.ready as HostInfo);
          resolve(host);
        } else if (m.failed) {
          void worker.terminate();
          reject(new Error(String(m.failed)));
        } else if (m.event) {
          const f = (events as unknown as Record<string, (...a: unknown[]) => void>)[m.event as string];
          f?.(...(m.args as unknown[]));
        } else host?.onMessage(m);
      });
      const die = (why: string) => {
        if (!host) reject(new Error(`the model worker stopped before it was ready: ${why}`));
        else host.fail(why);
      };
      worker.on('error', (e) => die(e.message));
      worker.on('exit', (code) => die(`exit code ${code}`));
    });
  }

  info(): HostInfo {
    return this.infoValue;
  }

  /** Calls a LocalHost method in the worker; with onPiece, streamed pieces arrive before the result. */
  call<T>(method: string, args: unknown[], onPiece?: (piece: string) => boolean | void): Promise<T> {
    if (this.dead) return Promise.reject(new HttpError(503, `the model worker is gone (${this.dead})`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, onPiece });
      this.worker.postMessage({ id, method, args, stream: !!onPiece });
    });
  }

  async close(): Promise<void> {
    if (!this.dead) await this.call('close', []);
    this.dead = 'closed';
    await this.worker.terminate();
  }

  private onMessage(m: Record<string, unknown>): void {
    const p = this.pending.get(m.id as number);
    if (!p) return;
    if (m.piece !== undefined) {
      if (p.onPiece?.(m.piece as string) === false) this.worker.postMessage({ cancel: m.id });
      return;
    }
    this.pending.delete(m.id as number);
    if (m.error) {
      const e = m.error as { message: string; status: number; label?: string };
      p.reject(Object.assign(new HttpError(e.status, e.message), { label: e.label }));
    } else p.resolve(m.result);
  }

  private fail(why: string): void {
    if (this.dead) return;
    this.dead = why;
    for (const p of this.pending.values()) p.reject(new HttpError(500, `the model worker stopped: ${why}`));
    this.pending.clear();
  }
}
