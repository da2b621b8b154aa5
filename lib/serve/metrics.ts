// The server's Prometheus metrics (prom-client), in a registry of its own: per adapter requests,
// errors, latency and tokens; batch sizes; adapter cache hits, misses and evictions; memory.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { memoryStats } from '../backend';

export class ServeMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({ name: 'fa_requests_total', help: 'requests by endpoint and adapter', labelNames: ['endpoint', 'adapter'], registers: [this.registry] });
  readonly errors = new Counter({ name: 'fa_request_errors_total', help: 'failed requests by endpoint, adapter and status', labelNames: ['endpoint', 'adapter', 'status'], registers: [this.registry] });
  readonly latency = new Histogram({
    name: 'fa_request_seconds', help: 'request latency by endpoint and adapter', labelNames: ['endpoint', 'adapter'], registers: [this.registry],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  });
  readonly tokens = new Counter({ name: 'fa_tokens_total', help: 'tokens processed by adapter and kind (prompt, generated)', labelNames: ['adapter', 'kind'], registers: [this.registry] });
  readonly batchRows = new Histogram({
    name: 'fa_batch_rows', help: 'rows per batch run through the backbone', labelNames: ['kind'], registers: [this.registry],
    buckets: [1, 2, 4, 8, 16, 32, 64, 128],
  });
  readonly cache = new Counter({ name: 'fa_adapter_cache_total', help: 'adapter cache events (hit, miss, evict)', labelNames: ['event'], registers: [this.registry] });
  readonly memory = new Gauge({
    name: 'fa_memory_bytes', help: 'live tensor bytes by device', labelNames: ['device'], registers: [this.registry],
    collect() {
      for (const d of ['cpu', 'cuda:0']) {
        try {
          this.set({ device: d }, memoryStats(d).allocatedBytes);
        } catch {
          // no such device
        }
      }
    },
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'fa_process_' });
  }
}
