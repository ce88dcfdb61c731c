// Lab guests: Debian's stock kernel with the lab initramfs and golden disk,
// booted the way the appliance runs guests. Used by tests, benchmarks and the demo.
import { join } from 'node:path';
import { QemuVm } from '../vm/qemu-vm.js';
import { loadLabImages, type LabImages } from './lab-images.js';
import { runDir, shmDir } from '../util/paths.js';
import { defaultAccel } from './accel.js';

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
  const images = opts.images ?? loadLabImages();
  const dir = join(opts.runRoot ?? join(runDir(), 'lab'), name);
  const accel = opts.accel ?? defaultAccel();
  return new QemuVm({
    name,
    kernel: images.kernel,
    initrd: images.initrd,
    kernelArgs: [
      'console=ttyS0', `introvisor.name=${name}`, 'panic=-1', 'loglevel=4',
      ...(opts.kaslr === false ? ['nokaslr'] : []),
      ...(opts.extraKernelArgs ?? []),
    ],
    baseImage: images.baseImage,
    overlay: join(dir, 'disk.qcow2'),
    memoryMiB: opts.memoryMiB ?? 256,
    cpus: opts.cpus ?? 1,
    accel,
    cpuModel: opts.cpuModel ?? (accel === 'kvm' ? 'host' : 'max'),
    runDir: dir,
    ramPath: join(shmDir(), `introvisor-${name}.ram`),
    qemuBinary: opts.qemuBinary ?? 'qemu-system-x86_64',
    dieWithParent: true,
  });
}

/** Builds and boots a lab guest; resolves once its guest agent answers. */
export async function startLabGuest(name: string, opts: LabGuestOptions = {}): Promise<QemuVm> {
  const vm = labGuestVm(name, opts);
  await vm.start({ freshDisk: opts.freshDisk ?? true, ...(opts.readyTimeoutMs ? { readyTimeoutMs: opts.readyTimeoutMs } : {}) });
  return vm;
}
