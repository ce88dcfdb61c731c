// Lab guests: Debian's stock kernel with the lab initramfs and golden disk,
// booted the way the appliance runs guests. Used by tests, benchmarks and the lab tools.
import { QemuVm } from '../src/vm/qemu-vm.js';
import { guestVmSpec } from '../src/vm/guest-vm-spec.js';
import { labRunRoot } from '../src/vm/guest-layout.js';
import { loadLabImages, type LabImages } from './lab-images.js';

export interface LabGuestOptions {
  memoryMiB?: number;
  cpus?: number;
  /** Debian's kernel randomises its base by default; false adds nokaslr. */
  kaslr?: boolean;
  cpuModel?: string;
  accel?: 'tcg' | 'kvm';
  images?: LabImages;
  qemuBinary?: string;
  runRoot?: string;
  /** Start from a fresh overlay (default true). */
  freshDisk?: boolean;
  readyTimeoutMs?: number;
  extraKernelArgs?: string[];
}

export function labGuestVm(name: string, opts: LabGuestOptions = {}): QemuVm {
  const spec = guestVmSpec({
    name, image: { lab: true },
    ...(opts.memoryMiB ? { memoryMiB: opts.memoryMiB } : {}), ...(opts.cpus ? { cpus: opts.cpus } : {}),
    ...(opts.kaslr === false ? { kaslr: false } : {}), ...(opts.cpuModel ? { cpuModel: opts.cpuModel } : {}),
    ...(opts.accel ? { accel: opts.accel } : {}), ...(opts.extraKernelArgs ? { kernelArgs: opts.extraKernelArgs } : {}),
  }, opts.runRoot ?? labRunRoot(), { dieWithParent: true, images: opts.images ?? loadLabImages() });
  return new QemuVm({ ...spec, ...(opts.qemuBinary ? { qemuBinary: opts.qemuBinary } : {}) });
}

/** Builds and boots a lab guest; resolves once its guest agent answers. */
export async function startLabGuest(name: string, opts: LabGuestOptions = {}): Promise<QemuVm> {
  const vm = labGuestVm(name, opts);
  await vm.start({ freshDisk: opts.freshDisk ?? true, ...(opts.readyTimeoutMs ? { readyTimeoutMs: opts.readyTimeoutMs } : {}) });
  return vm;
}
