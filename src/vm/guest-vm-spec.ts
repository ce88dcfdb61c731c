// From a guest's definition (the kind of guest and its files) to the VmSpec QEMU
// is started with. Guest kinds are resolved here and nowhere else.
import { accessSync, closeSync, constants, existsSync, mkdirSync, openSync, readFileSync, readSync } from 'node:fs';
import { dirname } from 'node:path';
import { Ajv, type JSONSchemaType } from 'ajv';
import { compiledOnUse } from '../util/lazy-validator.js';
import { labManifestPath } from '../util/paths.js';
import { errorMessage } from '../util/errors.js';
import { findOnPath } from '../util/exec.js';
import { defaultAccel, type Accel } from './accel.js';
import { guestLayout } from './guest-layout.js';
import { extraQemuArgErrors } from './qemu-args.js';
import type { DiskFormat, VmBoot, VmNetwork, VmSpec } from './qemu-vm.js';

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
const checkManifest = compiledOnUse(() => new Ajv({ allErrors: true }).compile(manifestSchema));

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
  /**
   * `lab`: the lab's image manifest; kernel + initrd + baseImage: a kernel QEMU boots directly;
   * `disk`: the guest's own disk, booted by its own bootloader under `firmware`.
   */
  readonly image: {
    readonly lab?: boolean; readonly kernel?: string; readonly initrd?: string; readonly baseImage?: string;
    readonly disk?: { readonly golden: string; readonly format?: DiskFormat };
    readonly firmware?: 'bios' | 'uefi';
    readonly libvirt?: string;
  };
  readonly disks?: readonly { readonly path: string; readonly format?: DiskFormat; readonly readOnly?: boolean }[];
  readonly network?: VmNetwork;
  readonly consoleLog?: string;
  readonly extraQemuArgs?: readonly string[];
  readonly overlay?: string;
  readonly memoryMiB?: number;
  readonly cpus?: number;
  readonly accel?: Accel;
  readonly cpuModel?: string;
  readonly kaslr?: boolean;
  readonly kernelArgs?: readonly string[];
}

/** Kernel arguments every lab guest gets: its name for the initramfs, reboot on panic, a quiet console. */
// no_timer_check: a TCG guest on a loaded host can miss the IO-APIC timer test and panic at boot.
export const labKernelArgs = (name: string): string[] => ['console=ttyS0', `introvisor.name=${name}`, 'panic=-1', 'loglevel=4', 'no_timer_check'];

/** Debian's ovmf: the firmware code (read-only) and the template of the variable store each guest copies. */
export const OVMF_FILES = { code: '/usr/share/OVMF/OVMF_CODE_4M.fd', varsTemplate: '/usr/share/OVMF/OVMF_VARS_4M.fd' } as const;

export type GuestKind = 'lab' | 'kernel' | 'disk' | 'libvirt';

/** The kind of a (schema-checked) guest definition. */
export function guestKind(g: GuestMachineDefinition): GuestKind {
  return g.image.libvirt !== undefined ? 'libvirt' : g.image.lab ? 'lab' : g.image.disk ? 'disk' : 'kernel';
}

/** The QEMU machine of a guest introvisor runs itself (every kind but libvirt's). */
export function guestVmSpec(g: GuestMachineDefinition, runRoot: string, opts: { dieWithParent: boolean; images?: KernelBootImages; ovmf?: { code: string; varsTemplate: string } }): VmSpec {
  const layout = guestLayout(runRoot, g.name);
  if (g.image.libvirt !== undefined) throw new Error(`guest ${g.name}: libvirt runs domain "${g.image.libvirt}": there is no QEMU command line of introvisor's for it`);
  const accel = g.accel ?? defaultAccel();
  let boot: VmBoot, baseImage: string, baseFormat: DiskFormat = 'qcow2';
  if (g.image.lab) {
    const images = opts.images ?? loadKernelBootImages();
    boot = { kind: 'kernel', kernel: images.kernel, initrd: images.initrd, kernelArgs: labKernelArgs(g.name) };
    baseImage = images.baseImage;
  } else if (g.image.disk) {
    baseImage = g.image.disk.golden;
    baseFormat = g.image.disk.format ?? 'qcow2';
    if (g.kaslr !== undefined || g.kernelArgs !== undefined) throw new Error(`guest ${g.name}: /kaslr and /kernelArgs cannot be set for a guest that boots from its own disk`);
    const ovmf = opts.ovmf ?? OVMF_FILES;
    boot = g.image.firmware === 'uefi'
      ? { kind: 'firmware', firmware: 'uefi', code: ovmf.code, varsTemplate: ovmf.varsTemplate, vars: layout.uefiVars }
      : { kind: 'firmware', firmware: 'bios' };
  } else {
    if (!g.image.kernel || !g.image.initrd || !g.image.baseImage) throw new Error(`guest ${g.name}: /image needs "lab": true, kernel + initrd + baseImage, or "disk"`);
    boot = { kind: 'kernel', kernel: g.image.kernel, initrd: g.image.initrd, kernelArgs: ['console=ttyS0'] };
    baseImage = g.image.baseImage;
  }
  if (boot.kind === 'kernel') boot = { ...boot, kernelArgs: [...boot.kernelArgs, ...(g.kaslr === false ? ['nokaslr'] : []), ...(g.kernelArgs ?? [])] };
  const extra = extraQemuArgErrors(g.extraQemuArgs ?? []);
  if (extra.length) throw new Error(`guest ${g.name}: ${extra.map((e) => `/extraQemuArgs/${e}`).join('; ')}`);
  return {
    name: g.name, boot, baseImage, baseFormat,
    overlay: g.overlay ?? layout.overlay,
    disks: (g.disks ?? []).map((d) => ({ path: d.path, format: d.format ?? 'qcow2', readOnly: d.readOnly ?? false })),
    network: g.network ?? null,
    consoleLog: g.consoleLog ?? layout.consoleLog,
    extraArgs: [...(g.extraQemuArgs ?? [])],
    memoryMiB: g.memoryMiB ?? (g.image.lab ? 256 : 512),
    cpus: g.cpus ?? 1,
    accel,
    cpuModel: g.cpuModel ?? (accel === 'kvm' ? 'host' : 'max'),
    layout,
    qemuBinary: 'qemu-system-x86_64',
    dieWithParent: opts.dieWithParent,
  };
}

const QCOW2_MAGIC = Buffer.from([0x51, 0x46, 0x49, 0xfb]);

/** The first bytes of a file (a short read for a short file); throws as readFileSync does. */
function head(path: string, n: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(n);
    const got = readSync(fd, b, 0, n, 0);
    return b.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

function problem(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'permission denied' : errorMessage(e);
}

/** Whether `dir` exists (or can be made) and is writable; an error text otherwise. */
function writableDir(dir: string): string | null {
  try {
    mkdirSync(dir, { recursive: true });
    accessSync(dir, constants.W_OK);
    return null;
  } catch (e) {
    return problem(e);
  }
}

/**
 * What booting, rebooting, restarting and restoring this guest will need, checked now: QEMU, the
 * kernel or firmware files, the golden image (readable, of the format its definition says), the
 * overlay's and console's folders (writable), the data disks, the tap interface. Every problem
 * names the guest and the field; an empty list means every rung of the ladder can run.
 */
export function preflightVmSpec(s: VmSpec): string[] {
  const errors: string[] = [];
  const say = (field: string, what: string): void => { errors.push(`guest ${s.name}: ${field}: ${what}`); };
  if (!findOnPath(s.qemuBinary)) say('qemu', `QEMU not found: "${s.qemuBinary}" is not on PATH (apt-get install qemu-system-x86)`);
  if (s.boot.kind === 'kernel') {
    for (const [field, f] of [['/image/kernel', s.boot.kernel], ['/image/initrd', s.boot.initrd]] as const) {
      try { accessSync(f, constants.R_OK); } catch (e) { say(field, `${f} ${problem(e)}`); }
    }
  } else if (s.boot.kind === 'firmware' && s.boot.firmware === 'uefi') {
    for (const f of [s.boot.code, s.boot.varsTemplate]) {
      try { accessSync(f, constants.R_OK); } catch (e) { say('/image/firmware', `UEFI firmware ${f} ${problem(e)} (apt-get install ovmf)`); }
    }
    const d = writableDir(dirname(s.boot.vars));
    if (d) say('/image/firmware', `the folder of the guest's UEFI variable store ${dirname(s.boot.vars)}: ${d}`);
  }
  const golden = s.boot.kind === 'firmware' ? '/image/disk/golden' : '/image/baseImage';
  try {
    const magic = head(s.baseImage, 4).equals(QCOW2_MAGIC);
    if (s.baseFormat === 'qcow2' && !magic) say(golden, `${s.baseImage} is not a qcow2 image (give "format": "raw" for a raw one)`);
    // A raw image that holds a qcow2 header would be read as qcow2 by anyone who probes it.
    if (s.baseFormat === 'raw' && magic) say(golden, `${s.baseImage} is a qcow2 image, not raw`);
  } catch (e) {
    say(golden, `${s.baseImage} ${problem(e)}`);
  }
  const od = writableDir(dirname(s.overlay));
  if (od) say('/overlay', `the overlay's folder ${dirname(s.overlay)}: ${od}`);
  const cd = writableDir(dirname(s.consoleLog));
  if (cd) say('/consoleLog', `the console log's folder ${dirname(s.consoleLog)}: ${cd}`);
  s.disks.forEach((d, i) => {
    try {
      accessSync(d.path, d.readOnly ? constants.R_OK : constants.R_OK | constants.W_OK);
      const magic = head(d.path, 4).equals(QCOW2_MAGIC);
      if (d.format === 'qcow2' && !magic) say(`/disks/${i}/path`, `${d.path} is not a qcow2 image (give "format": "raw" for a raw one)`);
      if (d.format === 'raw' && magic) say(`/disks/${i}/path`, `${d.path} is a qcow2 image, not raw`);
    } catch (e) {
      say(`/disks/${i}/path`, `${d.path} ${problem(e)}`);
    }
  });
  if (s.network && 'tap' in s.network && !existsSync(`/sys/class/net/${s.network.tap}`)) {
    say('/network/tap', `interface ${s.network.tap} does not exist (the appliance creates it: ip tuntap add ${s.network.tap} mode tap)`);
  }
  return errors;
}
