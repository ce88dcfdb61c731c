// From a guest's definition (the kind of guest and its files) to the VmSpec QEMU
// is started with. Guest kinds are resolved here and nowhere else.
import { readFileSync } from 'node:fs';
import { Ajv, type JSONSchemaType } from 'ajv';
import { labManifestPath } from '../util/paths.js';
import { errorMessage } from '../util/errors.js';
import { defaultAccel, type Accel } from './accel.js';
import { guestLayout } from './guest-layout.js';
import type { VmSpec } from './qemu-vm.js';

/** A kernel + initrd + golden disk described by a manifest (the lab's image builder writes one). */
export interface KernelBootImages {
  readonly kernelAbi: string;
  readonly kernel: string;
  readonly initrd: string;
  readonly baseImage: string;
}

const manifestSchema: JSONSchemaType<KernelBootImages> = {
  type: 'object',
  required: ['kernelAbi', 'kernel', 'initrd', 'baseImage'],
  properties: {
    kernelAbi: { type: 'string', minLength: 1, maxLength: 128 },
    kernel: { type: 'string', minLength: 1, maxLength: 4096 },
    initrd: { type: 'string', minLength: 1, maxLength: 4096 },
    baseImage: { type: 'string', minLength: 1, maxLength: 4096 },
  },
};
const checkManifest = new Ajv({ allErrors: true }).compile(manifestSchema);

/** Reads an image manifest; errors name the file and say how to build it. */
export function loadKernelBootImages(path = labManifestPath()): KernelBootImages {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'not built yet' : errorMessage(e);
    throw new Error(`guest images: ${path}: ${why} (run scripts/setup.sh, which runs lab/build-images.sh)`);
  }
  if (!checkManifest(raw)) throw new Error(`guest images: ${path}: ${checkManifest.errors?.map((e) => `${e.instancePath || '/'} ${e.message}`).join('; ')}`);
  return raw;
}

/** What the supervisor's config (or the lab) says about one guest's machine. */
export interface GuestMachineDefinition {
  readonly name: string;
  /** `lab`: the lab's image manifest; otherwise kernel, initrd and golden image given. */
  readonly image: { readonly lab?: boolean; readonly kernel?: string; readonly initrd?: string; readonly baseImage?: string };
  readonly overlay?: string;
  readonly memoryMiB?: number;
  readonly cpus?: number;
  readonly accel?: Accel;
  readonly cpuModel?: string;
  readonly kaslr?: boolean;
  readonly kernelArgs?: readonly string[];
}

/** Kernel arguments every lab guest gets: its name for the initramfs, reboot on panic, a quiet console. */
export const labKernelArgs = (name: string): string[] => ['console=ttyS0', `introvisor.name=${name}`, 'panic=-1', 'loglevel=4'];

export function guestVmSpec(g: GuestMachineDefinition, runRoot: string, opts: { dieWithParent: boolean; images?: KernelBootImages }): VmSpec {
  const layout = guestLayout(runRoot, g.name);
  const accel = g.accel ?? defaultAccel();
  let kernel: string, initrd: string, baseImage: string, kernelArgs: string[];
  if (g.image.lab) {
    const images = opts.images ?? loadKernelBootImages();
    ({ kernel, initrd, baseImage } = images);
    kernelArgs = labKernelArgs(g.name);
  } else {
    if (!g.image.kernel || !g.image.initrd || !g.image.baseImage) throw new Error(`guest ${g.name}: /image needs "lab": true or kernel, initrd and baseImage`);
    ({ kernel, initrd, baseImage } = g.image as Required<typeof g.image>);
    kernelArgs = ['console=ttyS0'];
  }
  return {
    name: g.name, kernel, initrd, baseImage,
    kernelArgs: [...kernelArgs, ...(g.kaslr === false ? ['nokaslr'] : []), ...(g.kernelArgs ?? [])],
    overlay: g.overlay ?? layout.overlay,
    memoryMiB: g.memoryMiB ?? (g.image.lab ? 256 : 512),
    cpus: g.cpus ?? 1,
    accel,
    cpuModel: g.cpuModel ?? (accel === 'kvm' ? 'host' : 'max'),
    layout,
    qemuBinary: 'qemu-system-x86_64',
    dieWithParent: opts.dieWithParent,
  };
}
