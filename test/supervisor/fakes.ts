// Fakes for GuestWatch tests: a guest (GuestController) and introspection
// (KernelScanner) that a test steers, and a sink that refuses writes on demand.
import type { GuestController, ProcessCommand } from '../../src/recovery/guest-controller.js';
import type { KernelScanner } from '../../src/supervisor/kernel-scanner.js';
import type { GuestReport } from '../../src/detectors/types.js';
import type { KernelSnapshot } from '../../src/views/types.js';
import type { EventSink } from '../../src/events/sink.js';
import type { EventInput, RecordedEvent } from '../../src/events/types.js';
import type { EventStore } from '../../src/store/event-store.js';
import { report, snapshot } from '../detectors/synthetic.js';

export class FakeGuest implements GuestController {
  readonly name = 'g1';
  bootGeneration = 0;
  guestReport: GuestReport = report(snapshot());
  readonly calls: string[] = [];
  /** How many times the guest's own report was asked for (a process spawned in the guest each time). */
  reports = 0;
  async ensureRunning(): Promise<'running'> { return 'running'; }
  async report(): Promise<GuestReport> { this.reports++; return this.guestReport; }
  async startProcess(cmd: ProcessCommand): Promise<string> { this.calls.push(`start ${cmd.path}`); return 'started'; }
  async killProcess(pid: number): Promise<string> { this.calls.push(`kill ${pid}`); return 'killed'; }
  async rebootOs(): Promise<string> { this.calls.push('reboot-os'); this.bootGeneration++; return 'rebooted'; }
  async restartVm(): Promise<string> { this.calls.push('restart-vm'); this.bootGeneration++; return 'restarted'; }
  async restoreImage(): Promise<string> { this.calls.push('restore-image'); this.bootGeneration++; return 'restored'; }
  async pause(): Promise<string> { return 'paused'; }
  async stop(): Promise<string> { return 'stopped'; }
  async close(): Promise<void> { /* nothing held */ }
}

export class FakeScanner implements KernelScanner {
  snap: KernelSnapshot | Error = snapshot();
  async scan(): Promise<KernelSnapshot> { if (this.snap instanceof Error) throw this.snap; return this.snap; }
  close(): void { /* nothing held */ }
}

/** A sink that refuses writes while `failing` (a full disk), else passes them to the store. */
export class FlakySink implements EventSink {
  failing = false;
  constructor(private readonly store: EventStore) {}
  record(e: EventInput): RecordedEvent { return this.recordMany([e])[0] as RecordedEvent; }
  recordMany(events: readonly EventInput[]): RecordedEvent[] {
    if (this.failing) throw new Error('SQLITE_FULL: database or disk is full');
    return this.store.recordMany(events);
  }
}

