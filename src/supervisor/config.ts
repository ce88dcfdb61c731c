// The supervisor's configuration file: guests, their disks and golden images,
// critical processes, the policy file, the scan interval. Schema-checked; errors
// name the field. Relative paths are relative to the config file.
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { Ajv } from 'ajv';
import { describeAjvErrors } from '../policy/schema.js';
import { extraQemuArgErrors } from '../vm/qemu-args.js';
import { RECORD_REPORT_CONFIG_SCHEMA, parseRecordReportConfig, type RecordReportConfig } from '../telemetry/record-report.js';

export type DiskFormat = 'qcow2' | 'raw';

export interface GuestImageConfig {
  /** Use the lab's images (lab/build-images.sh manifest) for kernel, initrd and golden image. */
  readonly lab?: boolean;
  readonly kernel?: string;
  readonly initrd?: string;
  /** The golden image (qcow2); never written: the guest runs on an overlay. */
  readonly baseImage?: string;
  /** A guest that boots from its own disk through its own bootloader: the golden image and its format. */
  readonly disk?: { readonly golden: string; readonly format?: DiskFormat };
  /** Firmware of a disk-booting guest: SeaBIOS (default) or UEFI (Debian's ovmf). */
  readonly firmware?: 'bios' | 'uefi';
}

/** A further disk the guest writes directly: persistent, an image restore keeps it. */
export interface DataDiskConfig {
  readonly path: string;
  readonly format?: DiskFormat;
  readonly readOnly?: boolean;
}

/** virtio-net: QEMU user networking with port forwards, or a tap interface the appliance owns. */
export type GuestNetworkConfig =
  | { readonly user: { readonly forwards?: readonly { readonly protocol?: 'tcp' | 'udp'; readonly hostAddress?: string; readonly hostPort: number; readonly guestPort: number }[] }; readonly mac?: string }
  | { readonly tap: string; readonly mac?: string };

export interface CriticalProcessEntry {
  readonly name: string;
  readonly comm?: string;
  /** argv to start it through the guest agent, e.g. ["/data/bin/csdtest", "-d"]. */
  readonly start?: readonly string[];
}

export interface GuestConfig {
  readonly name: string;
  readonly image: GuestImageConfig;
  /** Persistent data disks after the boot disk (virtio: /dev/vdb, /dev/vdc, ...). */
  readonly disks?: readonly DataDiskConfig[];
  readonly network?: GuestNetworkConfig;
  /** The serial console's log file; default <runDir>/guests/<name>/console.log. */
  readonly consoleLog?: string;
  /** Extra QEMU arguments, appended; those that would clash with what introvisor sets are refused. */
  readonly extraQemuArgs?: readonly string[];
  /** The guest's writable disk (qcow2 overlay on the golden image); default <runDir>/guests/<name>/disk.qcow2. */
  readonly overlay?: string;
  readonly memoryMiB?: number;
  readonly cpus?: number;
  readonly accel?: 'tcg' | 'kvm';
  readonly cpuModel?: string;
  readonly kaslr?: boolean;
  readonly kernelArgs?: readonly string[];
  readonly critical?: readonly CriticalProcessEntry[];
  readonly scanIntervalSec?: number;
  /** How long a boot may take until the guest agent answers; default 180. A distro guest under TCG needs more. */
  readonly bootTimeoutSec?: number;
  /** How long each scan waits for the guest agent's process list; default 5. Busy TCG guests need more. */
  readonly agentTimeoutSec?: number;
  /** Kernel introspection (task list, IDR, run queues, syscall tables, integrity); default true. */
  readonly introspection?: boolean;
  /** KVM write trap on the syscall tables (src/trap/, docs/TRAP.md): what a refused write gets, or 'off'; default the supervisor's writeTrap. */
  readonly writeTrap?: 'gp' | 'drop' | 'off';
}

export interface SupervisorConfig {
  readonly version: 1;
  /** SQLite file: events, ladder state, baselines. */
  readonly database: string;
  readonly deviceId?: string;
  /** Policy file; the defaults when absent. */
  readonly policy?: string;
  readonly scanIntervalSec?: number;
  /** Default for every guest's writeTrap; default 'gp'. */
  readonly writeTrap?: 'gp' | 'drop' | 'off';
  /** Where sockets and overlays live; default $INTROVISOR_RUN/supervisor. */
  readonly runDir?: string;
  /** On SIGTERM: stop the guests (default) or leave them running for the next supervisor to adopt. */
  readonly onExit?: 'stop-guests' | 'leave-running';
  readonly actionTimeoutsSec?: Partial<Record<'restart-process' | 'kill-process' | 'reboot-os' | 'restart-vm' | 'restore-image', number>>;
  readonly guests: readonly GuestConfig[];
  /** Policy store, MQTT telemetry, OTA policy updates, host metrics and the web page; off when absent. */
  readonly report?: RecordReportConfig;
}

const path = { type: 'string', minLength: 1, maxLength: 4096 } as const;
const schema = {
  type: 'object',
  additionalProperties: false,
  required: ['version', 'database', 'guests'],
  properties: {
    version: { const: 1 },
    database: path,
    deviceId: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' },
    policy: path,
    writeTrap: { type: 'string', enum: ['gp', 'drop', 'off'] },
    scanIntervalSec: { type: 'number', minimum: 0.1, maximum: 3600 },
    runDir: path,
    onExit: { type: 'string', enum: ['stop-guests', 'leave-running'] },
    actionTimeoutsSec: {
      type: 'object',
      additionalProperties: false,
      properties: Object.fromEntries(['restart-process', 'kill-process', 'reboot-os', 'restart-vm', 'restore-image']
        .map((k) => [k, { type: 'number', minimum: 1, maximum: 3600 }])),
    },
    report: RECORD_REPORT_CONFIG_SCHEMA,
    guests: {
      type: 'array',
      minItems: 1,
      maxItems: 64,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'image'],
        properties: {
          name: { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,31}$' },
          image: {
            type: 'object',
            additionalProperties: false,
            properties: {
              lab: { type: 'boolean' }, kernel: path, initrd: path, baseImage: path,
              disk: {
                type: 'object',
                additionalProperties: false,
                required: ['golden'],
                properties: { golden: path, format: { type: 'string', enum: ['qcow2', 'raw'] } },
              },
              firmware: { type: 'string', enum: ['bios', 'uefi'] },
            },
          },
          disks: {
            type: 'array',
            maxItems: 16,
            items: {
              type: 'object',
              additionalProperties: false,
              required: ['path'],
              properties: { path, format: { type: 'string', enum: ['qcow2', 'raw'] }, readOnly: { type: 'boolean' } },
            },
          },
          network: {
            type: 'object',
            additionalProperties: false,
            properties: {
              user: {
                type: 'object',
                additionalProperties: false,
                properties: {
                  forwards: {
                    type: 'array',
                    maxItems: 64,
                    items: {
                      type: 'object',
                      additionalProperties: false,
                      required: ['hostPort', 'guestPort'],
                      properties: {
                        protocol: { type: 'string', enum: ['tcp', 'udp'] },
                        hostAddress: { type: 'string', pattern: '^[0-9]{1,3}(\\.[0-9]{1,3}){3}$' },
                        hostPort: { type: 'integer', minimum: 1, maximum: 65535 },
                        guestPort: { type: 'integer', minimum: 1, maximum: 65535 },
                      },
                    },
                  },
                },
              },
              tap: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$' },
              mac: { type: 'string', pattern: '^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$' },
            },
          },
          consoleLog: path,
          extraQemuArgs: { type: 'array', maxItems: 64, items: { type: 'string', minLength: 1, maxLength: 1024 } },
          overlay: path,
          memoryMiB: { type: 'integer', minimum: 64, maximum: 1048576 },
          cpus: { type: 'integer', minimum: 1, maximum: 64 },
          accel: { type: 'string', enum: ['tcg', 'kvm'] },
          cpuModel: { type: 'string', minLength: 1, maxLength: 200 },
          kaslr: { type: 'boolean' },
          kernelArgs: { type: 'array', items: { type: 'string', maxLength: 512 }, maxItems: 64 },
          critical: {
            type: 'array',
            maxItems: 64,
            items: {
              type: 'object',
              additionalProperties: false,
              required: ['name'],
              properties: {
                name: { type: 'string', minLength: 1, maxLength: 64 },
                comm: { type: 'string', minLength: 1, maxLength: 15 },
                start: { type: 'array', minItems: 1, maxItems: 64, items: { type: 'string', minLength: 1, maxLength: 4096 } },
              },
            },
          },
          scanIntervalSec: { type: 'number', minimum: 0.1, maximum: 3600 },
          bootTimeoutSec: { type: 'number', minimum: 10, maximum: 3600 },
          agentTimeoutSec: { type: 'number', minimum: 1, maximum: 600 },
          introspection: { type: 'boolean' },
          writeTrap: { type: 'string', enum: ['gp', 'drop', 'off'] },
        },
      },
    },
  },
} as const;

export const SUPERVISOR_CONFIG_SCHEMA = schema;
const validate = new Ajv({ allErrors: true, strict: true }).compile<SupervisorConfig>(schema);

export function parseSupervisorConfig(raw: unknown, where: string): SupervisorConfig {
  if (!validate(raw)) throw new Error(`config ${where}: ${describeAjvErrors(validate.errors).join('; ')}`);
  const errors: string[] = [];
  const names = new Set<string>();
  raw.guests.forEach((g, i) => {
    if (names.has(g.name)) errors.push(`/guests/${i}/name "${g.name}" is used by another guest`);
    names.add(g.name);
    errors.push(...guestDefinitionErrors(g, `/guests/${i}`));
    (g.critical ?? []).forEach((c, j) => {
      if (c.comm === undefined && c.name.length > 15) errors.push(`/guests/${i}/critical/${j}/comm is required when the name is longer than 15 characters (the kernel keeps 15)`);
      if (c.start && !c.start[0]?.startsWith('/')) errors.push(`/guests/${i}/critical/${j}/start/0 must be an absolute path in the guest`);
    });
  });
  if (errors.length) throw new Error(`config ${where}: ${errors.join('; ')}`);
  return raw;
}

/** What the schema cannot say about one guest's machine: which image kind, and what goes with it. */
function guestDefinitionErrors(g: GuestConfig, at: string): string[] {
  const errors: string[] = [];
  const img = g.image;
  const kinds = [img.lab ? 'lab' : null, img.kernel || img.initrd || img.baseImage ? 'kernel' : null, img.disk ? 'disk' : null].filter(Boolean);
  if (kinds.length !== 1) {
    errors.push(`${at}/image needs exactly one of "lab": true, kernel + initrd + baseImage, or "disk" (found ${kinds.length ? kinds.join(' and ') : 'none'})`);
  } else if (kinds[0] === 'kernel' && !(img.kernel && img.initrd && img.baseImage)) {
    errors.push(`${at}/image needs kernel, initrd and baseImage together`);
  }
  if (img.firmware && !img.disk) errors.push(`${at}/image/firmware applies only to a guest that boots from its "disk"`);
  if (img.disk) {
    // Its kernel command line is the bootloader's, on the guest's own disk.
    if (g.kaslr !== undefined) errors.push(`${at}/kaslr cannot be set for a guest that boots from its own disk (its bootloader sets the kernel command line)`);
    if (g.kernelArgs !== undefined) errors.push(`${at}/kernelArgs cannot be set for a guest that boots from its own disk (its bootloader sets the kernel command line)`);
  }
  const mac = (g.network as { mac?: string } | undefined)?.mac;
  if (g.network && !('user' in g.network) && !('tap' in g.network)) errors.push(`${at}/network needs "user" or "tap"`);
  if (g.network && 'user' in g.network && 'tap' in g.network) errors.push(`${at}/network has both "user" and "tap": choose one`);
  if (mac && (parseInt(mac.slice(0, 2), 16) & 1) === 1) errors.push(`${at}/network/mac ${mac} is a multicast address`);
  const ports = new Set<string>();
  if (g.network && 'user' in g.network) {
    (g.network.user.forwards ?? []).forEach((f, j) => {
      const k = `${f.protocol ?? 'tcp'}:${f.hostAddress ?? ''}:${f.hostPort}`;
      if (ports.has(k)) errors.push(`${at}/network/user/forwards/${j}/hostPort ${f.hostPort} is forwarded twice`);
      ports.add(k);
    });
  }
  const seen = new Set<string>();
  (g.disks ?? []).forEach((d, j) => {
    if (seen.has(d.path)) errors.push(`${at}/disks/${j}/path ${d.path} is given twice`);
    seen.add(d.path);
    if (d.path === img.disk?.golden || d.path === img.baseImage) errors.push(`${at}/disks/${j}/path is the guest's golden image, which is never written`);
  });
  errors.push(...extraQemuArgErrors(g.extraQemuArgs ?? []).map((e) => `${at}/extraQemuArgs/${e}`));
  return errors;
}

/** Reads the file and resolves its relative paths against its folder. */
export function loadSupervisorConfig(file: string): SupervisorConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`config ${file}: ${(e as Error).message}`);
  }
  const c = parseSupervisorConfig(raw, file);
  const base = dirname(resolve(file));
  const abs = (p: string): string => (isAbsolute(p) ? p : join(base, p));
  return {
    ...c,
    database: abs(c.database),
    ...(c.policy ? { policy: abs(c.policy) } : {}),
    ...(c.runDir ? { runDir: abs(c.runDir) } : {}),
    ...(c.report ? { report: parseRecordReportConfig(c.report, `config ${file}: /report`, base) } : {}),
    guests: c.guests.map((g) => ({
      ...g,
      image: {
        ...g.image,
        ...(g.image.kernel ? { kernel: abs(g.image.kernel) } : {}),
        ...(g.image.initrd ? { initrd: abs(g.image.initrd) } : {}),
        ...(g.image.baseImage ? { baseImage: abs(g.image.baseImage) } : {}),
        ...(g.image.disk ? { disk: { ...g.image.disk, golden: abs(g.image.disk.golden) } } : {}),
      },
      ...(g.disks ? { disks: g.disks.map((d) => ({ ...d, path: abs(d.path) })) } : {}),
      ...(g.consoleLog ? { consoleLog: abs(g.consoleLog) } : {}),
      ...(g.overlay ? { overlay: abs(g.overlay) } : {}),
    })),
  };
}
