// The lab's guest images, as lab/build-images.sh leaves them in the cache.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Ajv, type JSONSchemaType } from 'ajv';
import { labManifestPath } from '../src/util/paths.js';

export interface LabImages {
  /** The kernel line ("5.10", "6.1", "6.12"); absent in manifests older than the matrix. */
  kernelLine?: string;
  kernelAbi: string;
  kernelVersion: string;
  key: string;
  dir: string;
  kernel: string;
  initrd: string;
  baseImage: string;
  /**
   * Every attack module of lab/guest/attacks by camelCase name (iv_syscall_hook.ko: syscallHook);
   * dispatchHook rewrites a call target in x64_sys_call (kernels that have it).
   */
  attackModules: { syscallHook: string; dkomHide: string; hideModule: string; [name: string]: string };
  criticalService: string;
  /** The guest's eBPF loader (lab/guest/bpfload.c); absent in manifests built before it. */
  bpfLoader?: string;
}

const schema: JSONSchemaType<LabImages> = {
  type: 'object',
  required: ['kernelAbi', 'kernelVersion', 'key', 'dir', 'kernel', 'initrd', 'baseImage', 'attackModules', 'criticalService'],
  properties: {
    kernelLine: { type: 'string', pattern: '^[0-9]+\\.[0-9]+$', nullable: true },
    kernelAbi: { type: 'string', pattern: '^[0-9]+\\.[0-9]+\\.[0-9]+[-+][-+a-z0-9.]*-amd64$' },
    kernelVersion: { type: 'string' },
    key: { type: 'string' },
    dir: { type: 'string' },
    kernel: { type: 'string' },
    initrd: { type: 'string' },
    baseImage: { type: 'string' },
    attackModules: {
      type: 'object',
      required: ['syscallHook', 'dkomHide', 'hideModule'],
      properties: { syscallHook: { type: 'string' }, dkomHide: { type: 'string' }, hideModule: { type: 'string' } },
      additionalProperties: { type: 'string' },
    },
    criticalService: { type: 'string' },
    bpfLoader: { type: 'string', nullable: true },
  },
};

const validate = new Ajv({ allErrors: true }).compile(schema);

/** The kernel lines lab/build-images.sh builds (LAB_LINES in lab/lib.sh); 6.1 is the default. */
export const LAB_KERNEL_LINES = ['5.10', '6.1', '6.12'] as const;
export type LabKernelLine = (typeof LAB_KERNEL_LINES)[number];

/**
 * The lab images of a kernel line ('5.10', '6.1', '6.12'), or of the manifest at a path;
 * with neither, the default line's (what tests, benchmarks and the demo boot).
 */
export function loadLabImages(lineOrPath: LabKernelLine | string = labManifestPath()): LabImages {
  const path = (LAB_KERNEL_LINES as readonly string[]).includes(lineOrPath)
    ? join(dirname(labManifestPath()), `manifest-${lineOrPath}.json`) : lineOrPath;
  return loadManifest(path);
}

function loadManifest(path: string): LabImages {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'not built yet' : (e as Error).message;
    throw new Error(`lab images: ${path}: ${why} (run scripts/setup.sh, which runs lab/build-images.sh)`);
  }
  if (!validate(raw)) {
    throw new Error(`lab images: ${path}: ${validate.errors?.map((e) => `${e.instancePath || '/'} ${e.message}`).join('; ')}`);
  }
  return raw;
}
