// End-to-end harness: a Supervisor (in this process, or as a child for the
// SIGKILL test) watching one real lab guest, with a fast policy that keeps the
// default ladders' order and counts but short verify windows, so a whole
// ladder fits in a test.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Supervisor } from '../../src/supervisor/supervisor.js';
import { loadSupervisorConfig } from '../../src/supervisor/config.js';
import { SqliteLadderStateStore } from '../../src/store/ladder-state-store.js';
import type { ActionJournalRow } from '../../src/policy/ladder-store.js';
import type { GuestLadderState } from '../../src/policy/ladder.js';
import type { GuestAgentClient } from '../../src/qemu/guest-agent-client.js';
import { sleep } from '../../src/util/deadline.js';
import { errorMessage } from '../../src/util/errors.js';
import { QemuGuestController } from '../../src/recovery/qemu-controller.js';
import { labKernelArgs } from '../../src/vm/guest-vm-spec.js';
import { loadLabImages, type LabKernelLine } from '../../lab/lab-images.js';

export const FAST_POLICY = {
  version: 1,
  maxActionsPerHour: 30,
  onExhausted: { hold: 'keep-running', alert: true },
  faults: {
    'critical-process-missing': {
      confirmScans: 1, resetWindowSec: 60,
      ladder: [
        { action: 'restart-process', count: 3, verifyTimeoutSec: 5, backoffSec: 1, backoffFactor: 2 },
        { action: 'reboot-os', count: 3, verifyTimeoutSec: 8, backoffSec: 0 },
        { action: 'restart-vm', count: 1, verifyTimeoutSec: 8, backoffSec: 0 },
        { action: 'restore-image', count: 1, verifyTimeoutSec: 30, backoffSec: 0 },
      ],
    },
    'hidden-process': {
      confirmScans: 2, resetWindowSec: 60,
      ladder: [
        { action: 'reboot-os', count: 2, verifyTimeoutSec: 20, backoffSec: 0 },
        { action: 'restart-vm', count: 1, verifyTimeoutSec: 20, backoffSec: 0 },
        { action: 'restore-image', count: 1, verifyTimeoutSec: 30, backoffSec: 0 },
      ],
    },
    'syscall-table-changed': {
      confirmScans: 1, resetWindowSec: 60,
      ladder: [{ action: 'restore-image', count: 1, verifyTimeoutSec: 30, backoffSec: 0 }],
    },
  },
};

export interface Harness {
  dir: string;
  configPath: string;
  dbPath: string;
  guest: string;
  cleanup(): void;
}

/**
 * A config with one guest: the lab guest by default (the default kernel line's images); `line` boots
 * another lab kernel line; `guest` replaces its definition (name kept) for other kinds, written as a
 * user writes one.
 */
export function makeHarness(name: string, opts: {
  critical?: { name: string; start?: string[] }[]; scanIntervalSec?: number;
  /**
   * A lab kernel line ('5.10', '6.1', '6.12'): its kernel, initrd and golden disk written out as a user
   * writes a kernel guest, with the lab's kernel arguments (`"lab": true` always boots the default line).
   */
  line?: LabKernelLine;
  guest?: (dir: string) => Record<string, unknown>; policy?: object; actionTimeoutsSec?: Record<string, number>;
  /** Further top-level fields of the config (e.g. `libvirt`). */
  config?: Record<string, unknown>;
} = {}): Harness {
  const guest = name;
  const critical = opts.critical ?? [{ name: 'csdtest', start: ['/data/bin/csdtest', '-d'] }];
  let image: Record<string, unknown> = { lab: true };
  let kernelArgs: { kernelArgs?: string[] } = {};
  if (opts.line) {
    const images = loadLabImages(opts.line);
    image = { kernel: images.kernel, initrd: images.initrd, baseImage: images.baseImage };
    // A kernel guest gets console=ttyS0 of its own.
    kernelArgs = { kernelArgs: labKernelArgs(guest).filter((a) => a !== 'console=ttyS0') };
  }
  const dir = mkdtempSync(join(tmpdir(), `iv-sup-${guest}-`));
  writeFileSync(join(dir, 'policy.json'), JSON.stringify(opts.policy ?? FAST_POLICY, null, 1));
  const configPath = join(dir, 'supervisor.json');
  writeFileSync(configPath, JSON.stringify({
    version: 1,
    database: 'introvisor.db',
    deviceId: 'e2e',
    policy: 'policy.json',
    scanIntervalSec: opts.scanIntervalSec ?? 1,
    runDir: 'run',
    onExit: 'stop-guests',
    ...(opts.actionTimeoutsSec ? { actionTimeoutsSec: opts.actionTimeoutsSec } : {}),
    ...(opts.config ?? {}),
    guests: [opts.guest ? { ...opts.guest(dir), name: guest } : { name: guest, image, ...kernelArgs, memoryMiB: 256, cpus: 1, critical }],
  }, null, 1));
  return { dir, configPath, dbPath: join(dir, 'introvisor.db'), guest, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

const verboseEcho = (line: string): void => {
  if (process.env.IV_E2E_VERBOSE) console.error(`# ${((Date.now() % 1e6) / 1000).toFixed(1)} ${line}`);
};

/** An in-process supervisor with its log lines captured; echo sees each line too (by default only with IV_E2E_VERBOSE). */
export class LiveSupervisor {
  readonly lines: { atMs: number; line: string }[] = [];
  readonly sup: Supervisor;
  constructor(readonly h: Pick<Harness, 'configPath' | 'guest'>, echo: (line: string) => void = verboseEcho) {
    this.sup = new Supervisor(loadSupervisorConfig(h.configPath), {
      log: (line) => {
        this.lines.push({ atMs: Date.now(), line });
        echo(line);
      },
    });
  }
  async start(): Promise<void> { await this.sup.start(); }
  async stop(): Promise<void> { await this.sup.stop(); }
  agent(): Promise<GuestAgentClient> {
    const ctl = this.sup.controllers[0];
    if (!(ctl instanceof QemuGuestController)) throw new Error('the harness\'s agent() is for a guest introvisor runs with QEMU');
    return ctl.vm.agent();
  }
  /**
   * A command in the guest through the agent, on a fresh connection if the one in hand closes (the
   * supervisor shares the agent and reconnects it after a timeout on a loaded machine). Only for
   * commands that may run twice.
   */
  async shell(command: string): Promise<string> {
    for (let i = 0; ; i++) {
      try {
        return await (await this.agent()).shell(command);
      } catch (e) {
        if (i >= 3 || !/connection closed|not reachable|timed out|no answer/i.test(String(e))) {
          // What the supervisor was doing says why the guest did not answer (an action under way, a restart).
          throw new Error(`${errorMessage(e)}; the supervisor's last lines:\n${this.lines.slice(-15).map((l) => l.line).join('\n')}`);
        }
        await sleep(2_000);
      }
    }
  }
  actions(): ActionJournalRow[] { return new SqliteLadderStateStore(this.sup.store.db).actions(this.h.guest); }
  /** The guest's ladders as last saved (empty once every one has reset). */
  ladders(): GuestLadderState['ladders'] { return new SqliteLadderStateStore(this.sup.store.db).load(this.h.guest)?.ladders ?? []; }

  /** Resolves with the first log line (from index `from`) matching re; rejects after timeoutMs naming what it waited for. */
  async waitFor(re: RegExp, timeoutMs: number, from = 0): Promise<{ atMs: number; line: string; index: number }> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      for (let i = from; i < this.lines.length; i++) {
        const l = this.lines[i] as { atMs: number; line: string };
        if (re.test(l.line)) return { ...l, index: i };
      }
      if (Date.now() > until) throw new Error(`waited ${timeoutMs} ms for ${re}; last lines:\n${this.lines.slice(-15).map((l) => l.line).join('\n')}`);
      await sleep(100);
    }
  }
}
