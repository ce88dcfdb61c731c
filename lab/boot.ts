// Boots a lab guest and shows that it is reachable through every channel the
// supervisor uses (QMP, guest agent, guest RAM).
import { join } from 'node:path';
import { labGuestVm } from './lab-guest.js';
import { openPhysicalMemory } from '../src/memory/physical-memory.js';
import { cacheDir } from '../src/util/paths.js';
import { errorMessage } from '../src/util/errors.js';
import { lastLineNote, loadTimings, PhaseClock, ProgressPrinter, saveTimings } from '../src/util/progress.js';
import type { QemuVm } from '../src/vm/qemu-vm.js';

const BOOT_WORK = 'lab-boot';

/**
 * Boots the guest with its progress on stderr (a bar on a terminal, timestamped lines otherwise),
 * estimated against the last lab boot on this machine (kept in the cache's progress folder).
 */
async function bootWithProgress(name: string, o: { memoryMiB: number; kaslr: boolean }): Promise<QemuVm> {
  const dir = join(cacheDir(), 'progress');
  const { timings, error } = loadTimings(dir, BOOT_WORK);
  const bar = new ProgressPrinter(process.stderr);
  if (error) bar.line(`lab: no boot estimate: ${error}`);
  const vm = labGuestVm(name, { memoryMiB: o.memoryMiB, kaslr: o.kaslr });
  const clock = new PhaseClock('boot', timings);
  const tick = setInterval(() => bar.update(clock.progress(lastLineNote(vm.consoleTail(5)))), 1_000);
  try {
    await vm.start({ freshDisk: true });
  } finally {
    clearInterval(tick);
    bar.done();
  }
  try {
    saveTimings(dir, BOOT_WORK, clock.finish());
  } catch (e) {
    console.error(`lab: boot time not kept for the next estimate: ${errorMessage(e)}`);
  }
  return vm;
}

export async function bootLabGuest(o: { name: string; memoryMiB: number; kaslr: boolean; once: boolean }): Promise<number> {
  const { name, memoryMiB } = o;
  console.log(`lab: booting lab guest "${name}" (${memoryMiB} MiB)...`);
  const vm = await bootWithProgress(name, { memoryMiB, kaslr: o.kaslr });
  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    console.log('lab: stopping the guest');
    await vm.stop();
  };
  try {
    const status = await vm.qmp.queryStatus();
    const agent = await vm.agent();
    const ps = await agent.shell('ps -o pid,comm');
    const critical = ps.split('\n').filter((l) => /\bcsdtest\b/.test(l)).map((l) => l.trim());
    const mem = openPhysicalMemory(vm.ramPath);
    const at = mem.indexOf(Buffer.from('Linux version '));
    const banner = at >= 0 ? mem.read(at, 160).toString('latin1').split('\n')[0] : '(not found)';
    mem.close();
    console.log(`guest "${name}" is reachable (booted in ${(vm.lastBootMs / 1000).toFixed(1)} s, QEMU pid ${vm.pid})`);
    console.log(`  QMP          ${vm.qmpPath}: status ${status.status}`);
    console.log(`  guest agent  ${vm.agentPath}: ping ok; critical process: ${critical.join(', ') || 'NOT RUNNING'}`);
    console.log(`  guest RAM    ${vm.ramPath}: kernel banner at 0x${at.toString(16)}: ${banner}`);
    console.log(`  console log  ${vm.consolePath}`);
    if (o.once) {
      await stop();
      return critical.length > 0 ? 0 : 1;
    }
    console.log('lab: guest running; Ctrl-C stops it');
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    await stop();
    return 0;
  } catch (e) {
    await stop();
    throw e;
  }
}
