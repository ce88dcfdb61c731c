// The supervisor's configuration file: guests, their disks and golden images,
// critical processes, the policy, the scan interval, and the record/report
// services (policy store, MQTT, OTA, web page). Schema-checked (errors name the
// field); loading returns a SupervisorConfig with every default applied and
// every relative path resolved against the config file's folder, once, here.
import { readFileSync } from 'node:fs';
import { availableParallelism, totalmem } from 'node:os';
import { dirname, isAbsolute, resolve } from 'node:path';
import { Ajv } from 'ajv';
import { describeAjvErrors } from '../policy/schema.js';
import type { ActionKind } from '../policy/types.js';
import type { CriticalProcessConfig } from '../recovery/actions.js';
import type { GuestMachineDefinition } from '../vm/guest-vm-spec.js';
import { defaultSupervisorRunRoot } from '../vm/guest-layout.js';
import { errorMessage } from '../util/errors.js';
import { DEFAULT_MAX_BUNDLE_BYTES } from '../ota/bundle.js';
import { extraQemuArgErrors } from '../vm/qemu-args.js';
import { DEFAULT_LIBVIRT_STATE_DIR, DEFAULT_LIBVIRT_URI, type LibvirtConnection } from '../libvirt/virsh.js';

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
  /** A domain libvirt defines and runs, by name: its XML says the machine, libvirt runs it. */
  readonly libvirt?: string;
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

/** One guest as written in the config file. */
export interface GuestConfigFile {
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
  /** How often the guest's own process list (agent ps, a process in the guest) is taken; default the supervisor's, else 5 s. */
  readonly agentIntervalSec?: number;
  /** Kernel introspection (task list, IDR, run queues, syscall tables, integrity); default true. */
  readonly introspection?: boolean;
  /** KVM write trap on the syscall tables (src/trap/, docs/TRAP.md): what a refused write gets, or 'off'; default the supervisor's writeTrap. */
  readonly writeTrap?: 'gp' | 'drop' | 'off';
}

/** The record/report section as written in the config file. */
export interface ReportConfigFile {
  /** Where the running policy lives (current.json, previous.json). */
  readonly policyDir: string;
  /** Policy document to start from when policyDir holds none; default: the config's `policy`, else the built-in defaults. */
  readonly initialPolicy?: string;
  readonly groups?: readonly string[];
  readonly mqtt?: {
    readonly url: string;
    readonly clientId?: string;
    readonly tls?: { readonly ca: string; readonly cert?: string; readonly key?: string };
    readonly username?: string;
    /** A file holding the password (not the password itself, so configs can be shared). */
    readonly passwordFile?: string;
    readonly window?: number;
  };
  readonly ota?: { readonly keyringDir: string; readonly maxBundleBytes?: number };
  /** allowedHosts: names the page answers to in the Host header besides loopback names, IPs and `host` (e.g. the box's DNS name). */
  readonly web?: { readonly host: string; readonly port: number; readonly tokenFile?: string; readonly allowedHosts?: readonly string[] };
  /** 0 turns host metrics off; default 60. */
  readonly hostMetricsIntervalSec?: number;
}

/** The config file as written. */
export interface SupervisorConfigFile {
  readonly version: 1;
  /** SQLite file: events, ladder state, baselines. */
  readonly database: string;
  readonly deviceId?: string;
  /** Policy file; the defaults when absent. */
  readonly policy?: string;
  readonly scanIntervalSec?: number;
  /** Default for every guest's agentIntervalSec. */
  readonly agentIntervalSec?: number;
  /** Default for every guest's writeTrap; default 'gp'. */
  readonly writeTrap?: 'gp' | 'drop' | 'off';
  /** Where sockets and overlays live; default $INTROVISOR_RUN/supervisor. */
  readonly runDir?: string;
  /** The libvirtd that runs the libvirt guests: its URI (default qemu:///system) and its QEMU driver's run folder (default /run/libvirt/qemu, where <domain>.pid is). */
  readonly libvirt?: { readonly uri?: string; readonly stateDir?: string };
  /** On SIGTERM: stop the guests (default) or leave them running for the next supervisor to adopt. */
  readonly onExit?: 'stop-guests' | 'leave-running';
  readonly actionTimeoutsSec?: Partial<Record<'restart-process' | 'kill-process' | 'reboot-os' | 'restart-vm' | 'restore-image', number>>;
  readonly guests: readonly GuestConfigFile[];
  /** Policy store, MQTT telemetry, OTA policy updates, host metrics and the web page; off when absent. */
  readonly report?: ReportConfigFile;
}

/** One guest, every default applied. */
export interface GuestConfig extends GuestMachineDefinition {
  readonly critical: readonly CriticalProcessConfig[];
  /** How long a boot may take until the guest agent answers (the watch's default when absent). */
  readonly bootTimeoutMs?: number;
  /** How long each scan waits for the guest agent (the watch's default when absent). */
  readonly agentTimeoutMs?: number;
  readonly scanIntervalMs: number;
  /** The guest's own report at most this often (and at once when the memory views disagree). */
  readonly agentIntervalMs: number;
  /** Kernel introspection (off: only the guest agent's view). */
  readonly introspection: boolean;
  /** The write trap rides on introspection (it needs the syscall tables' addresses): 'off' when introspection is. */
  readonly writeTrap: 'gp' | 'drop' | 'off';
}

export interface ReportConfig {
  readonly policyDir: string;
  /** The policy document the store starts from when it holds none; null: the built-in defaults. */
  readonly initialPolicy: string | null;
  readonly groups: readonly string[];
  readonly mqtt: {
    readonly url: string;
    readonly clientId: string;
    readonly tls: { readonly ca: string; readonly cert: string | null; readonly key: string | null } | null;
    readonly username: string | null;
    readonly passwordFile: string | null;
    readonly window: number | null;
  } | null;
  readonly ota: { readonly keyringDir: string; readonly maxBundleBytes: number } | null;
  readonly web: { readonly host: string; readonly port: number; readonly tokenFile: string | null; readonly allowedHosts: readonly string[] } | null;
  /** 0: host metrics off. */
  readonly hostMetricsIntervalMs: number;
}

/** What the supervisor runs with: every default applied, every path absolute. */
export interface SupervisorConfig {
  readonly database: string;
  readonly deviceId: string;
  /** The policy file; null: the built-in defaults. */
  readonly policyFile: string | null;
  readonly runDir: string;
  readonly onExit: 'stop-guests' | 'leave-running';
  readonly actionTimeoutsMs: Readonly<Partial<Record<ActionKind, number>>>;
  readonly guests: readonly GuestConfig[];
  /** The libvirtd of the libvirt guests. */
  readonly libvirt: LibvirtConnection;
  /** null: no policy store, telemetry, OTA or web page. */
  readonly report: ReportConfig | null;
}


const path = { type: 'string', minLength: 1, maxLength: 4096 } as const;
const topicName = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' } as const;
const REPORT_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['policyDir'],
  properties: {
    policyDir: path,
    initialPolicy: path,
    groups: { type: 'array', maxItems: 32, items: topicName },
    mqtt: {
      type: 'object', additionalProperties: false, required: ['url'],
      properties: {
        url: { type: 'string', pattern: '^mqtts?://[^/]+$' },
        clientId: { type: 'string', minLength: 1, maxLength: 128 },
        tls: { type: 'object', additionalProperties: false, required: ['ca'], properties: { ca: path, cert: path, key: path } },
        username: { type: 'string', maxLength: 256 },
        passwordFile: path,
        window: { type: 'integer', minimum: 1, maximum: 10000 },
      },
    },
    ota: { type: 'object', additionalProperties: false, required: ['keyringDir'], properties: { keyringDir: path, maxBundleBytes: { type: 'integer', minimum: 1024, maximum: 16777216 } } },
    web: {
      type: 'object', additionalProperties: false, required: ['host', 'port'],
      properties: {
        host: { type: 'string', minLength: 1, maxLength: 255 }, port: { type: 'integer', minimum: 0, maximum: 65535 }, tokenFile: path,
        allowedHosts: { type: 'array', maxItems: 32, items: { type: 'string', pattern: '^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$' } },
      },
    },
    hostMetricsIntervalSec: { type: 'number', minimum: 0, maximum: 86400 },
  },
} as const;
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
    agentIntervalSec: { type: 'number', minimum: 0.1, maximum: 3600 },
    runDir: path,
    libvirt: {
      type: 'object', additionalProperties: false,
      properties: { uri: { type: 'string', pattern: '^[a-z][a-z0-9+]*://[^\\s]*$', maxLength: 4096 }, stateDir: path },
    },
    onExit: { type: 'string', enum: ['stop-guests', 'leave-running'] },
    actionTimeoutsSec: {
      type: 'object',
      additionalProperties: false,
      properties: Object.fromEntries(['restart-process', 'kill-process', 'reboot-os', 'restart-vm', 'restore-image']
        .map((k) => [k, { type: 'number', minimum: 1, maximum: 3600 }])),
    },
    report: REPORT_SCHEMA,
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
              libvirt: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_.+:-]{0,99}$' },
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
          agentIntervalSec: { type: 'number', minimum: 0.1, maximum: 3600 },
          introspection: { type: 'boolean' },
          writeTrap: { type: 'string', enum: ['gp', 'drop', 'off'] },
        },
      },
    },
  },
} as const;

export const SUPERVISOR_CONFIG_SCHEMA = schema;
const validate = new Ajv({ allErrors: true, strict: true }).compile<SupervisorConfigFile>(schema);
/** The guest's own view (a process spawned in the guest) is the expensive one: seconds, not every scan. */
export const DEFAULT_AGENT_INTERVAL_SEC = 5;
const DEFAULT_SCAN_INTERVAL_SEC = 2;

/** What the host has, for the checks a guest's size must pass. */
export interface HostLimits { readonly memoryMiB: number; readonly cpus: number }
const thisHost = (): HostLimits => ({ memoryMiB: Math.floor(totalmem() / 1048576), cpus: availableParallelism() });

/** Checks a config document and resolves it: relative paths against baseDir, every default applied. */
export function parseSupervisorConfig(raw: unknown, where: string, baseDir = process.cwd(), host: HostLimits = thisHost()): SupervisorConfig {
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
  // Two guests on one writable disk would corrupt it; a guest larger than the host cannot run.
  const overlays = new Map<string, number>();
  raw.guests.forEach((g, i) => {
    if (g.overlay === undefined) return;
    const at = resolve(baseDir, g.overlay);
    const other = overlays.get(at);
    if (other !== undefined) errors.push(`/guests/${i}/overlay ${at} is also the overlay of /guests/${other}`);
    overlays.set(at, i);
  });
  raw.guests.forEach((g, i) => {
    if (g.memoryMiB !== undefined && g.memoryMiB > host.memoryMiB) errors.push(`/guests/${i}/memoryMiB ${g.memoryMiB} is more than this host has (${host.memoryMiB} MiB)`);
    if (g.cpus !== undefined && g.cpus > host.cpus) errors.push(`/guests/${i}/cpus ${g.cpus} is more than this host has (${host.cpus})`);
  });
  const m = raw.report?.mqtt;
  if (m && m.url.startsWith('mqtts:') !== (m.tls !== undefined)) errors.push(`/report/mqtt/tls is ${m.tls ? 'given for mqtt://' : 'required for mqtts://'}`);
  if (m?.tls && (m.tls.cert === undefined) !== (m.tls.key === undefined)) errors.push('/report/mqtt/tls needs both cert and key, or neither');
  if (errors.length) throw new Error(`config ${where}: ${errors.join('; ')}`);
  return resolveConfig(raw, baseDir);
}

/** What the schema cannot say about one guest's machine: which image kind, and what goes with it. */
function guestDefinitionErrors(g: GuestConfigFile, at: string): string[] {
  const errors: string[] = [];
  const img = g.image;
  const kinds = [img.lab ? 'lab' : null, img.kernel || img.initrd || img.baseImage ? 'kernel' : null, img.disk ? 'disk' : null, img.libvirt ? 'libvirt' : null].filter(Boolean);
  if (kinds.length !== 1) {
    errors.push(`${at}/image needs exactly one of "lab": true, kernel + initrd + baseImage, "disk", or "libvirt" (found ${kinds.length ? kinds.join(' and ') : 'none'})`);
  } else if (kinds[0] === 'kernel' && !(img.kernel && img.initrd && img.baseImage)) {
    errors.push(`${at}/image needs kernel, initrd and baseImage together`);
  }
  if (img.libvirt) {
    // The domain's XML defines the machine; libvirt runs it.
    for (const f of ['disks', 'network', 'consoleLog', 'extraQemuArgs', 'overlay', 'memoryMiB', 'cpus', 'accel', 'cpuModel', 'kaslr', 'kernelArgs'] as const) {
      if (g[f] !== undefined) errors.push(`${at}/${f} cannot be set for a libvirt guest (the domain's XML defines its machine)`);
    }
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

function resolveConfig(c: SupervisorConfigFile, baseDir: string): SupervisorConfig {
  const abs = (p: string): string => (isAbsolute(p) ? p : resolve(baseDir, p));
  const deviceId = c.deviceId ?? 'introvisor';
  const policyFile = c.policy ? abs(c.policy) : null;
  return {
    database: abs(c.database),
    deviceId,
    policyFile,
    runDir: c.runDir ? abs(c.runDir) : defaultSupervisorRunRoot(),
    onExit: c.onExit ?? 'stop-guests',
    actionTimeoutsMs: Object.fromEntries(Object.entries(c.actionTimeoutsSec ?? {}).map(([k, v]) => [k, v * 1000])),
    guests: c.guests.map((g) => {
      const introspection = g.introspection ?? true;
      return {
        name: g.name,
        image: {
          ...(g.image.lab ? { lab: true } : {}),
          ...(g.image.kernel ? { kernel: abs(g.image.kernel) } : {}),
          ...(g.image.initrd ? { initrd: abs(g.image.initrd) } : {}),
          ...(g.image.baseImage ? { baseImage: abs(g.image.baseImage) } : {}),
          ...(g.image.disk ? { disk: { ...g.image.disk, golden: abs(g.image.disk.golden) } } : {}),
          ...(g.image.firmware ? { firmware: g.image.firmware } : {}),
          ...(g.image.libvirt ? { libvirt: g.image.libvirt } : {}),
        },
        ...(g.disks ? { disks: g.disks.map((d) => ({ ...d, path: abs(d.path) })) } : {}),
        ...(g.network ? { network: g.network } : {}),
        ...(g.consoleLog ? { consoleLog: abs(g.consoleLog) } : {}),
        ...(g.extraQemuArgs ? { extraQemuArgs: [...g.extraQemuArgs] } : {}),
        ...(g.bootTimeoutSec ? { bootTimeoutMs: 1000 * g.bootTimeoutSec } : {}),
        ...(g.agentTimeoutSec ? { agentTimeoutMs: 1000 * g.agentTimeoutSec } : {}),
        ...(g.overlay ? { overlay: abs(g.overlay) } : {}),
        ...(g.memoryMiB ? { memoryMiB: g.memoryMiB } : {}),
        ...(g.cpus ? { cpus: g.cpus } : {}),
        ...(g.accel ? { accel: g.accel } : {}),
        ...(g.cpuModel ? { cpuModel: g.cpuModel } : {}),
        ...(g.kaslr === false ? { kaslr: false } : {}),
        ...(g.kernelArgs ? { kernelArgs: [...g.kernelArgs] } : {}),
        critical: (g.critical ?? []).map((p) => ({
          name: p.name, ...(p.comm ? { comm: p.comm } : {}),
          ...(p.start ? { start: { path: p.start[0] as string, args: p.start.slice(1) } } : {}),
        })),
        scanIntervalMs: 1000 * (g.scanIntervalSec ?? c.scanIntervalSec ?? DEFAULT_SCAN_INTERVAL_SEC),
        agentIntervalMs: 1000 * (g.agentIntervalSec ?? c.agentIntervalSec ?? DEFAULT_AGENT_INTERVAL_SEC),
        introspection,
        writeTrap: introspection ? g.writeTrap ?? c.writeTrap ?? 'gp' : 'off',
      };
    }),
    libvirt: { uri: c.libvirt?.uri ?? DEFAULT_LIBVIRT_URI, stateDir: c.libvirt?.stateDir ? abs(c.libvirt.stateDir) : DEFAULT_LIBVIRT_STATE_DIR },
    report: c.report ? resolveReport(c.report, deviceId, policyFile, abs) : null,
  };
}

function resolveReport(r: ReportConfigFile, deviceId: string, policyFile: string | null, abs: (p: string) => string): ReportConfig {
  const m = r.mqtt;
  return {
    policyDir: abs(r.policyDir),
    initialPolicy: r.initialPolicy ? abs(r.initialPolicy) : policyFile,
    groups: [...(r.groups ?? [])],
    mqtt: m ? {
      url: m.url,
      clientId: m.clientId ?? `introvisor-${deviceId}`,
      tls: m.tls ? { ca: abs(m.tls.ca), cert: m.tls.cert ? abs(m.tls.cert) : null, key: m.tls.key ? abs(m.tls.key) : null } : null,
      username: m.username ?? null,
      passwordFile: m.passwordFile ? abs(m.passwordFile) : null,
      window: m.window ?? null,
    } : null,
    ota: r.ota ? { keyringDir: abs(r.ota.keyringDir), maxBundleBytes: r.ota.maxBundleBytes ?? DEFAULT_MAX_BUNDLE_BYTES } : null,
    web: r.web ? { host: r.web.host, port: r.web.port, tokenFile: r.web.tokenFile ? abs(r.web.tokenFile) : null, allowedHosts: [...(r.web.allowedHosts ?? [])] } : null,
    hostMetricsIntervalMs: 1000 * (r.hostMetricsIntervalSec ?? 60),
  };
}

/** Reads the file and resolves it against its folder. */
export function loadSupervisorConfig(file: string): SupervisorConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`config ${file}: ${errorMessage(e)}`);
  }
  return parseSupervisorConfig(raw, file, dirname(resolve(file)));
}
