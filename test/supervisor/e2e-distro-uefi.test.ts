// The Debian 12 distro guest's disk booted under UEFI (Debian's OVMF -> GRUB's BOOTX64.EFI on the
// EFI system partition -> Debian's kernel): one boot, to the guest agent. The guest runs with its
// own copy of the firmware's variable store in its run folder; an image restore replaces it.
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadDistroGuest } from '../../lab/distro-guest.js';
import { guestVmSpec, preflightVmSpec } from '../../src/vm/guest-vm-spec.js';
import { QemuVm } from '../../src/vm/qemu-vm.js';

t.setTimeout(1_200_000); // OVMF and a systemd boot under TCG on a shared machine

t.test('UEFI: OVMF boots the distro disk to its agent; per-guest variable store', async (t) => {
  const image = loadDistroGuest('debian12');
  const dir = mkdtempSync(join(tmpdir(), 'iv-uefi-'));
  const spec = guestVmSpec({ name: 'e2e-uefi', image: { disk: { golden: image.disk, format: image.format }, firmware: 'uefi' }, memoryMiB: 768 },
    join(dir, 'run'), { dieWithParent: true });
  t.same(preflightVmSpec(spec), []);
  const vm = new QemuVm(spec);
  t.teardown(async () => { await vm.stop(); rmSync(dir, { recursive: true, force: true }); });
  await vm.start({ freshDisk: true, readyTimeoutMs: 900_000 });
  t.pass(`booted under UEFI in ${vm.lastBootMs} ms`);
  if (spec.boot.kind !== 'firmware' || spec.boot.firmware !== 'uefi') throw new Error('not a UEFI spec');
  t.ok(existsSync(spec.boot.vars), 'the guest\'s own OVMF_VARS copy is in its run folder');
  t.equal(statSync(spec.boot.vars).size, statSync(spec.boot.varsTemplate).size);
  const agent = await vm.agent();
  t.equal((await agent.shell('test -d /sys/firmware/efi && echo efi || echo bios')).trim(), 'efi', 'the kernel came up under UEFI');
  t.equal((await agent.shell('uname -r')).trim(), image.kernelAbi);
  t.match(readFileSync(vm.consolePath, 'latin1'), /Booting `Debian GNU\/Linux/, 'GRUB\'s menu entry on the serial console');
});
