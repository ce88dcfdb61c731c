// Host metrics (CPU, memory, load, disks, temperatures when the host has
// sensors) from systeminformation, recorded as host-metrics events.
import si from 'systeminformation';
import { loadavg, uptime } from 'node:os';
import type { EventSink } from '../events/sink.js';
import type { HostMetricsPayload } from '../events/types.js';
import { errorMessage } from '../util/errors.js';

const finite = (n: unknown): number | null => (typeof n === 'number' && Number.isFinite(n) ? n : null);
const nonNegative = (n: unknown): number => Math.max(0, finite(n) ?? 0);

export async function sampleHostMetrics(): Promise<HostMetricsPayload> {
  const [load, mem, disks, temp] = await Promise.all([
    si.currentLoad(),
    si.mem(),
    si.fsSize(),
    si.cpuTemperature().catch(() => null),
  ]);
  const [l1, l5, l15] = loadavg();
  const cores = (temp?.cores ?? []).map(finite).filter((c): c is number => c !== null);
  const main = finite(temp?.main);
  const max = finite(temp?.max);
  return {
    cpuLoadPercent: nonNegative(load.currentLoad),
    load1: nonNegative(l1), load5: nonNegative(l5), load15: nonNegative(l15),
    memTotalBytes: Math.round(nonNegative(mem.total)),
    memUsedBytes: Math.round(nonNegative(mem.active)),
    memAvailableBytes: Math.round(nonNegative(mem.available)),
    disks: disks.slice(0, 64).map((d) => ({ mount: d.mount.slice(0, 512), sizeBytes: Math.round(nonNegative(d.size)), usedBytes: Math.round(nonNegative(d.used)) })),
    // systeminformation reports missing sensors as null/-1/empty: say "none" rather than invent zeros.
    temperaturesC: main === null && max === null && cores.length === 0 ? null : { main, max, cores: cores.slice(0, 256) },
    uptimeS: nonNegative(uptime()),
  };
}

/** Records host metrics every intervalMs until the returned stop() is called. */
export function startHostMetrics(sink: EventSink, intervalMs: number, onError: (message: string) => void): () => void {
  let stopped = false;
  let timer: NodeJS.Timeout | null = null;
  const tick = async (): Promise<void> => {
    try {
      const payload = await sampleHostMetrics();
      if (!stopped) sink.record({ kind: 'host-metrics', payload });
    } catch (e) {
      onError(`host metrics: ${errorMessage(e)}`);
    }
    if (!stopped) { timer = setTimeout(() => void tick(), intervalMs); timer.unref(); }
  };
  void tick();
  return () => { stopped = true; if (timer) clearTimeout(timer); };
}
