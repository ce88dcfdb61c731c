// What introvisor needs to know from a libvirt domain's XML: whether its RAM is a
// shared file (the introspection engine maps it), whether it has the guest
// agent's channel, its boot disk (the overlay an image restore replaces) and
// what a guest-initiated reboot does. Parsed with fast-xml-parser; anything
// missing or odd is reported as absent, never thrown past here.
import { XMLParser } from 'fast-xml-parser';

export interface DomainFacts {
  readonly name: string;
  /** `<memoryBacking><source type='file'/>` */
  readonly fileMemory: boolean;
  /** `<access mode='shared'/>` in memoryBacking, or memAccess='shared' on every NUMA cell. */
  readonly sharedMemory: boolean;
  /** A virtio channel named org.qemu.guest_agent.0. */
  readonly agentChannel: boolean;
  /** The first `<disk device='disk'>` with a file source. */
  readonly bootDisk: { readonly file: string; readonly format: string } | null;
  /** `<on_reboot>`: 'destroy' would turn a guest's reboot into a stop. */
  readonly onReboot: string;
}

export const AGENT_CHANNEL_NAME = 'org.qemu.guest_agent.0';

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@',
  parseAttributeValue: false,
  parseTagValue: false,
  processEntities: true,
  // Elements that may repeat are always arrays, so a lone one needs no special case.
  isArray: (name) => ['disk', 'channel', 'cell'].includes(name),
});

type Node = Record<string, unknown>;
const obj = (v: unknown): Node | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Node) : undefined);
const list = (v: unknown): Node[] => (Array.isArray(v) ? v.map(obj).filter((n): n is Node => n !== undefined) : []);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
/** An element's text (fast-xml-parser gives a string, or #text beside attributes). */
const text = (v: unknown): string | undefined => str(v) ?? str(obj(v)?.['#text']);

/** Throws only when the text is not a domain at all. */
export function domainFacts(xml: string): DomainFacts {
  const doc = obj(parser.parse(xml) as unknown);
  const dom = obj(doc?.domain);
  if (!dom) throw new Error('not a libvirt domain XML (no <domain>)');
  const mb = obj(dom.memoryBacking);
  const cells = list(obj(obj(dom.cpu)?.numa)?.cell);
  const devices = obj(dom.devices);
  const disk = list(devices?.disk).find((d) => d['@device'] === 'disk' && d['@type'] === 'file' && str(obj(d.source)?.['@file']));
  return {
    name: text(dom.name) ?? '',
    fileMemory: obj(mb?.source)?.['@type'] === 'file',
    sharedMemory: obj(mb?.access)?.['@mode'] === 'shared' || (cells.length > 0 && cells.every((c) => c['@memAccess'] === 'shared')),
    agentChannel: list(devices?.channel).some((c) => obj(c.target)?.['@type'] === 'virtio' && obj(c.target)?.['@name'] === AGENT_CHANNEL_NAME),
    bootDisk: disk ? { file: str(obj(disk.source)?.['@file']) as string, format: str(obj(disk.driver)?.['@type']) ?? 'raw' } : null,
    onReboot: text(dom.on_reboot)?.trim() || 'restart',
  };
}

/** The XML a domain needs for introvisor, as the documentation and errors quote it. */
export const SHARED_FILE_MEMORY_XML = "<memoryBacking><source type='file'/><access mode='shared'/></memoryBacking>";
export const AGENT_CHANNEL_XML = `<channel type='unix'><target type='virtio' name='${AGENT_CHANNEL_NAME}'/></channel>`;
