// The lab's guest images, as lab/build-images.sh leaves them in the cache.
import { readFileSync } from 'node:fs';
import { Ajv, type JSONSchemaType } from 'ajv';
import { labManifestPath } from '../src/util/paths.js';

export interface LabImages {
  kernelAbi: string;
  kernelVersion: string;
  key: string;
  dir: string;
  kernel: string;
  initrd: string;
  baseImage: string;
  attackModules: { syscallHook: string; dkomHide: string; hideModule: string };
  criticalService: string;
}

const schema: JSONSchemaType<LabImages> = {
  type: 'object',
  required: ['kernelAbi', 'kernelVersion', 'key', 'dir', 'kernel', 'initrd', 'baseImage', 'attackModules', 'criticalService'],
  properties: {
    kernelAbi: { type: 'string', pattern: '^6\\.1\\.0-[0-9]+-amd64$' },
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
    },
    criticalService: { type: 'string' },
  },
};

const validate = new Ajv({ allErrors: true }).compile(schema);

export function loadLabImages(path = labManifestPath()): LabImages {
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
