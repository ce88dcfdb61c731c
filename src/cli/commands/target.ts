// What the offline commands (inspect, check, baseline save) read: a raw dump file, or the RAM
// file of a running guest (with CR3 from its QMP socket when nobody else holds it). One place
// for the flags that say how to read it.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { UsageError, type ParsedArgs } from '../args.js';
import { Introspector, type AttachOptions, type ScanOptions } from '../../views/scan.js';
import { QmpClient } from '../../qemu/qmp-client.js';
import { defaultSupervisorRunRoot, guestLayout, labRunRoot } from '../../vm/guest-layout.js';
import { parseSystemMap, type SymbolTable } from '../../profile/symbols.js';
import { IsfLayouts, isfSymbols, parseIsf } from '../../profile/layouts.js';
import type { MachineLayout } from '../../memory/guest-memory.js';
import type { KernelSnapshot } from '../../views/types.js';
import { errorMessage } from '../../util/errors.js';

/** The flags every reader of guest memory takes. */
export const TARGET_FLAGS = { boolean: [] as string[], valued: ['system-map', 'isf', 'machine'] };
export const TARGET_USAGE = '[--system-map FILE] [--isf FILE] [--machine q35|pc|flat]';

export interface OpenedTarget {
  readonly ins: Introspector;
  /** The file read. */
  readonly source: string;
  /** How: a dump, or a live guest with or without CR3. */
  readonly mode: string;
  readonly live: boolean;
  /** Discovery time, ms. */
  readonly attachMs: number;
  /** One snapshot; a live guest is paused for it when its QMP is ours. */
  scan(opts?: ScanOptions): Promise<KernelSnapshot>;
  close(): void;
}

/** A guest name is lowercase letters, digits and dashes; anything else must be a file. */
export const isGuestName = (s: string): boolean => /^[a-z0-9][a-z0-9-]{0,31}$/.test(s);

export async function openTarget(target: string, flags: ParsedArgs['flags']): Promise<OpenedTarget> {
  const machine = (flags.get('machine') as string | undefined) ?? 'q35';
  if (!['q35', 'pc', 'flat'].includes(machine)) throw new UsageError(`--machine must be q35, pc or flat, not "${machine}"`);
  const opts: { -readonly [K in keyof AttachOptions]: AttachOptions[K] } = { machine: machine as MachineLayout };
  const mapFile = flags.get('system-map');
  const isfFile = flags.get('isf');
  let symbols: SymbolTable | undefined;
  if (typeof mapFile === 'string') symbols = parseSystemMap(readFileSync(mapFile, 'utf8'), mapFile);
  if (typeof isfFile === 'string') {
    const doc = parseIsf(readFileSync(isfFile, 'utf8'), isfFile);
    opts.layouts = new IsfLayouts(doc, isfFile);
    symbols ??= isfSymbols(doc, isfFile);
  }
  if (symbols) opts.symbols = symbols;

  let ramPath: string;
  let qmp: QmpClient | undefined;
  let mode: string;
  let live = false;
  if (existsSync(target) && statSync(target).isFile()) {
    ramPath = target;
    mode = 'dump';
  } else {
    if (!isGuestName(target)) throw new UsageError(`"${target}" is neither a file nor a guest name`);
    // A guest of the supervisor (its default run root), else a lab guest.
    const layouts = [guestLayout(defaultSupervisorRunRoot(), target), guestLayout(labRunRoot(), target)];
    const layout = layouts.find((l) => existsSync(l.ramPath));
    if (!layout) throw new Error(`guest "${target}": no RAM file at ${layouts.map((l) => l.ramPath).join(' or ')} (is it running?)`);
    ramPath = layout.ramPath;
    live = true;
    try {
      qmp = await QmpClient.connect(layout.qmpSocket, 2_000);
      mode = 'live (CR3 from QMP, paused while read)';
    } catch (e) {
      // QEMU serves one QMP client at a time; the supervisor may hold it. The RAM alone still works.
      mode = `live RAM without CR3, not paused (QMP ${layout.qmpSocket}: ${errorMessage(e)})`;
    }
  }
  const t0 = performance.now();
  let ins: Introspector;
  try {
    ins = await Introspector.attach(ramPath, { ...opts, ...(qmp ? { qmp } : {}) });
  } catch (e) {
    qmp?.close();
    throw e;
  }
  const attachMs = performance.now() - t0;
  const q = qmp;
  return {
    ins, source: ramPath, mode, live, attachMs,
    async scan(o) {
      if (!q) return ins.scan(o);
      await q.execute('stop');
      try {
        return ins.scan(o);
      } finally {
        await q.execute('cont');
      }
    },
    close() {
      ins.close();
      q?.close();
    },
  };
}
