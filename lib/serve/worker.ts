// The worker thread of `fused-adapters serve`: opens the model and runs a LocalHost, answering the
// server thread's calls ({ id, method, args }) with { id, result } or { id, error }; streamed
// completions send { id, piece } as text is generated, and { cancel: id } stops one. Host events
// (batch sizes, cache hits, tokens) go up as { event, args } for the server's metrics.
import { parentPort, workerData } from 'worker_threads';
import { LocalHost, HostOptions, statusOf } from './host';
import { openServedModel } from './open';

interface Start { source: string; device: string; library: string; options: HostOptions }

async function main(): Promise<void> {
  const port = parentPort!;
  const d = workerData as Start;
  const send = (event: string, ...args: unknown[]) => port.postMessage({ event, args });
  let host: LocalHost;
  try {
    const { model, tokenizer } = await openServedModel(d.source, d.device);
    host = new LocalHost(model, tokenizer, d.library, d.options, {
      batch: (k, n) => send('batch', k, n), cache: (e) => send('cache', e), tokens: (a, k, n) => send('tokens', a, k, n),
    });
  } catch (e) {
    port.postMessage({ failed: (e as Error).message });
    return;
  }
  port.postMessage({ ready: host.info() });
  const cancelled = new Set<number>();
  port.on('message', async (m: { id?: number; method?: string; args?: unknown[]; stream?: boolean; cancel?: number }) => {
    if (m.cancel !== undefined) {
      cancelled.add(m.cancel);
      return;
    }
    const id = m.id!;
    try {
      const args = [...(m.args ?? [])];
      if (m.stream) args.push((piece: string) => {
        port.postMessage({ id, piece });
        return !cancelled.has(id);
      });
      const fn = (host as unknown as Record<string, (...a: unknown[]) => unknown>)[m.method!];
      if (typeof fn !== 'function') throw new Error(`no host method ${m.method}`);
      const result = await fn.apply(host, args);
      port.postMessage({ id, result });
      if (m.method === 'close') port.close();
    } catch (e) {
      port.postMessage({ id, error: { message: (e as Error).message, status: statusOf(e), label: (e as { label?: string }).label } });
    } finally {
      cancelled.delete(id);
    }
  });
}

void main();
