// Structure layouts from the kernel's own BTF (include/uapi/linux/btf.h), read
// from guest memory between __start_BTF and __stop_BTF. Parsed once into an
// index of type records; names and members are resolved on demand.
// The blob comes from the guest: every offset and count is checked against
// the blob's length, and nested lookups are depth-bounded.

const BTF_MAGIC = 0xeb9f;
const MAX_DEPTH = 16;
/** Longest type or member name read from BTF (the kernel's KSYM_NAME_LEN is 512). */
const MAX_NAME_BYTES = 1024;

export const enum BtfKind {
  Int = 1, Ptr = 2, Array = 3, Struct = 4, Union = 5, Enum = 6, Fwd = 7, Typedef = 8,
  Volatile = 9, Const = 10, Restrict = 11, Func = 12, FuncProto = 13, Var = 14,
  Datasec = 15, Float = 16, DeclTag = 17, TypeTag = 18, Enum64 = 19,
}

export class BtfError extends Error {
  override readonly name = 'BtfError';
}

export interface BtfMember {
  readonly name: string;
  readonly type: number;
  /** Offset from the start of the containing struct, in bits. */
  readonly bitOffset: number;
  /** 0 unless a bitfield. */
  readonly bitSize: number;
}

export interface MemberLocation {
  /** Byte offset from the start of the outermost struct. */
  readonly offset: number;
  readonly bitOffset: number;
  readonly bitSize: number;
  /** Type id of the member. */
  readonly type: number;
}

export class Btf {
  private readonly typeStart: Int32Array; // index by type id; byte offset of the btf_type in the types section
  private readonly types: Buffer;
  private readonly strings: Buffer;
  private nameIndex: { head: Int32Array; next: Int32Array } | undefined;
  /** find()'s answers so far (the names the views ask for). */
  private readonly byName = new Map<string, number[]>();
  private readonly memberCache = new Map<string, MemberLocation>();

  constructor(blob: Buffer) {
    if (blob.length < 24) throw new BtfError(`BTF blob of ${blob.length} bytes is shorter than its header`);
    if (blob.readUInt16LE(0) !== BTF_MAGIC) throw new BtfError(`BTF magic 0x${blob.readUInt16LE(0).toString(16)} is not 0xeb9f`);
    const hdrLen = blob.readUInt32LE(4);
    const typeOff = blob.readUInt32LE(8);
    const typeLen = blob.readUInt32LE(12);
    const strOff = blob.readUInt32LE(16);
    const strLen = blob.readUInt32LE(20);
    const check = (what: string, off: number, len: number): void => {
      if (hdrLen + off + len > blob.length || hdrLen + off + len < hdrLen) throw new BtfError(`BTF ${what} section (+${off}, ${len} bytes) runs past the ${blob.length}-byte blob`);
    };
    if (hdrLen < 24 || hdrLen > 256) throw new BtfError(`BTF header length ${hdrLen} is implausible`);
    check('type', typeOff, typeLen);
    check('string', strOff, strLen);
    this.types = blob.subarray(hdrLen + typeOff, hdrLen + typeOff + typeLen);
    this.strings = blob.subarray(hdrLen + strOff, hdrLen + strOff + strLen);
    // Every type takes at least its 12-byte header: that many slots hold them all (type id 0 is void).
    const starts = new Int32Array(Math.floor(typeLen / 12) + 1);
    let count = 1;
    let off = 0;
    const t = this.types;
    while (off < t.length) {
      if (off + 12 > t.length) throw new BtfError(`BTF type ${count} header at +${off} is truncated`);
      const info = t.readUInt32LE(off + 4);
      const kind = (info >>> 24) & 0x1f;
      const vlen = info & 0xffff;
      starts[count++] = off;
      off += 12 + extraBytes(kind, vlen, count - 1, off);
    }
    if (off !== t.length) throw new BtfError('BTF type section does not end on a type boundary');
    this.typeStart = starts.slice(0, count);
  }

  get typeCount(): number { return this.typeStart.length - 1; }

  kind(id: number): number { return (this.info(id) >>> 24) & 0x1f; }
  name(id: number): string { return this.str(this.types.readUInt32LE(this.at(id))); }
  /** size for INT/STRUCT/UNION/ENUM/DATASEC/FLOAT. */
  sizeField(id: number): number { return this.types.readUInt32LE(this.at(id) + 8); }
  /** referenced type for PTR/TYPEDEF/CONST/VOLATILE/RESTRICT/FUNC/VAR/TYPE_TAG. */
  refType(id: number): number { return this.types.readUInt32LE(this.at(id) + 8); }

  /** Ids of named types (struct, union, typedef, enum, ...) with this name. */
  find(name: string, kind?: number): number[] {
    let ids = this.byName.get(name);
    if (!ids) {
      // Types by a hash of their name's bytes: no string is decoded for the index (a kernel has
      // ~100k types and a scan looks up a few hundred names), and no lookup scans the string
      // section (it did, once per name: most of a first scan's cost).
      const index = this.nameIndex ??= this.buildNameIndex();
      const found: number[] = [];
      if (name !== '' && name.length <= MAX_NAME_BYTES) {
        const needle = Buffer.from(name + '\0', 'latin1');
        const s = this.strings;
        for (let id = index.head[nameHash(needle, 0, needle.length - 1) & (index.head.length - 1)] as number; id !== 0; id = index.next[id] as number) {
          const off = this.types.readUInt32LE(this.typeStart[id] as number);
          if (off + needle.length <= s.length && s.compare(needle, 0, needle.length, off, off + needle.length) === 0) found.push(id);
        }
      }
      ids = found; // ascending: the chains are built from the highest id down
      if (this.byName.size >= 4096) this.byName.clear(); // bounded whatever asks
      this.byName.set(name, ids);
    }
    return kind === undefined ? ids : ids.filter((id) => this.kind(id) === kind);
  }

  /**
   * Named types chained by name hash: head[hash & mask] is the lowest id of its bucket, next[id]
   * the following one (0 ends). Typed arrays, not a Map: the index is built at the first lookup
   * of every scan-starting command, for ~100k types.
   */
  private buildNameIndex(): { head: Int32Array; next: Int32Array } {
    let buckets = 1024;
    while (buckets < this.typeStart.length) buckets *= 2;
    const head = new Int32Array(buckets);
    const mask = buckets - 1;
    const next = new Int32Array(this.typeStart.length);
    const s = this.strings;
    for (let id = this.typeStart.length - 1; id >= 1; id--) {
      const off = this.types.readUInt32LE(this.typeStart[id] as number);
      if (off === 0 || off >= s.length) continue;
      const stop = Math.min(s.length, off + MAX_NAME_BYTES + 1);
      let end = off;
      while (end < stop && s[end] !== 0) end++;
      if (end >= stop) continue; // no NUL within a name's length: never a lookup's answer
      const b = nameHash(s, off, end) & mask;
      next[id] = head[b] as number;
      head[b] = id;
    }
    return { head, next };
  }

  /** The struct (or union) named `name`; complete definitions win over forward declarations. */
  struct(name: string): number {
    const ids = [...this.find(name, BtfKind.Struct), ...this.find(name, BtfKind.Union)];
    const id = ids[0];
    if (id === undefined) throw new BtfError(`BTF has no struct ${name}`);
    return id;
  }

  /** Strips typedef/const/volatile/restrict/type_tag. */
  resolve(id: number): number {
    for (let depth = 0; depth < MAX_DEPTH && id !== 0; depth++) {
      const k = this.kind(id);
      if (k !== BtfKind.Typedef && k !== BtfKind.Const && k !== BtfKind.Volatile && k !== BtfKind.Restrict && k !== BtfKind.TypeTag) return id;
      id = this.refType(id);
    }
    return id;
  }

  /** Byte size of a type (arrays multiply, pointers are 8). */
  sizeof(id: number): number {
    for (let depth = 0; depth < MAX_DEPTH; depth++) {
      id = this.resolve(id);
      const k = this.kind(id);
      switch (k) {
        case BtfKind.Int: case BtfKind.Struct: case BtfKind.Union: case BtfKind.Enum: case BtfKind.Enum64: case BtfKind.Float: case BtfKind.Datasec:
          return this.sizeField(id);
        case BtfKind.Ptr: return 8;
        case BtfKind.Array: {
          const a = this.at(id) + 12;
          return this.types.readUInt32LE(a + 8) * this.sizeof(this.types.readUInt32LE(a));
        }
        default: throw new BtfError(`BTF type ${id} (kind ${k}) has no size`);
      }
    }
    throw new BtfError(`BTF type ${id}: size chain deeper than ${MAX_DEPTH}`);
  }

  sizeofStruct(name: string): number { return this.sizeof(this.struct(name)); }

  /** Element type and count of an array type. */
  array(id: number): { elem: number; count: number } | null {
    id = this.resolve(id);
    if (this.kind(id) !== BtfKind.Array) return null;
    const a = this.at(id) + 12;
    return { elem: this.types.readUInt32LE(a), count: this.types.readUInt32LE(a + 8) };
  }

  /** A struct or union's member count and whether its member offsets pack a bit size (kind_flag); else an error naming the type. */
  private memberRecords(id: number): { vlen: number; kindFlag: boolean } {
    const k = this.kind(id);
    if (k !== BtfKind.Struct && k !== BtfKind.Union) throw new BtfError(`BTF type ${id} (${this.name(id) || 'anonymous'}) is not a struct or union`);
    const info = this.info(id);
    return { vlen: info & 0xffff, kindFlag: (info >>> 31) !== 0 };
  }

  members(id: number): BtfMember[] {
    id = this.resolve(id);
    const { vlen, kindFlag } = this.memberRecords(id);
    const out: BtfMember[] = [];
    let off = this.at(id) + 12;
    for (let i = 0; i < vlen; i++, off += 12) {
      const raw = this.types.readUInt32LE(off + 8);
      out.push({
        name: this.str(this.types.readUInt32LE(off)),
        type: this.types.readUInt32LE(off + 4),
        bitOffset: kindFlag ? raw & 0xffffff : raw,
        bitSize: kindFlag ? raw >>> 24 : 0,
      });
    }
    return out;
  }

  /** The enumerators of the enum named `name` (value -> name), or null when BTF has no such enum. */
  enumerators(name: string): Map<number, string> | null {
    const id = [...this.find(name, BtfKind.Enum), ...this.find(name, BtfKind.Enum64)][0];
    if (id === undefined) return null;
    const wide = this.kind(id) === BtfKind.Enum64;
    const out = new Map<number, string>();
    let off = this.at(id) + 12;
    for (let i = 0; i < (this.info(id) & 0xffff); i++, off += wide ? 12 : 8) {
      out.set(wide ? this.types.readUInt32LE(off + 4) : this.types.readInt32LE(off + 4), this.str(this.types.readUInt32LE(off)));
    }
    return out;
  }

  /**
   * Where `path` ("tasks", "se.run_node", "thread_info.flags") lies in `structName`,
   * looking through anonymous structs and unions and following nested members.
   */
  member(structName: string, path: string): MemberLocation {
    const key = `${structName}.${path}`;
    const cached = this.memberCache.get(key);
    if (cached) return cached;
    let id = this.struct(structName);
    let bits = 0;
    let found: { type: number; bitSize: number } | null = null;
    for (const part of path.split('.')) {
      const hit = this.findMember(id, part, 0);
      if (!hit) throw new BtfError(`BTF: ${structName} has no member ${path} (missing "${part}")`);
      bits += hit.bitOffset;
      found = { type: hit.type, bitSize: hit.bitSize };
      id = hit.type;
    }
    if (!found) throw new BtfError(`BTF: empty member path for ${structName}`);
    const loc = { offset: Math.floor(bits / 8), bitOffset: bits, bitSize: found.bitSize, type: found.type };
    this.memberCache.set(key, loc);
    return loc;
  }

  offsetof(structName: string, path: string): number { return this.member(structName, path).offset; }

  /**
   * Compares member names in place (name + NUL against the string section): decoding every
   * member name of task_struct, rq, module ... per lookup made the first scan's few hundred
   * lookups cost more than the scan itself.
   */
  private findMember(id: number, name: string, depth: number, needle = Buffer.from(name + '\0', 'latin1')): { bitOffset: number; type: number; bitSize: number } | null {
    if (depth > MAX_DEPTH) return null;
    id = this.resolve(id);
    const { vlen, kindFlag } = this.memberRecords(id);
    const t = this.types;
    const s = this.strings;
    let off = this.at(id) + 12;
    for (let i = 0; i < vlen; i++, off += 12) {
      const nameOff = t.readUInt32LE(off);
      if (nameOff >= s.length) throw new BtfError(`BTF string offset ${nameOff} is past the ${s.length}-byte string section`);
      const type = t.readUInt32LE(off + 4);
      const raw = t.readUInt32LE(off + 8);
      const bitOffset = kindFlag ? raw & 0xffffff : raw;
      if (nameOff + needle.length <= s.length && s.compare(needle, 0, needle.length, nameOff, nameOff + needle.length) === 0) {
        return { bitOffset, type, bitSize: kindFlag ? raw >>> 24 : 0 };
      }
      if (s[nameOff] === 0) {
        const inner = this.resolve(type);
        const ik = this.kind(inner);
        if (ik === BtfKind.Struct || ik === BtfKind.Union) {
          const hit = this.findMember(inner, name, depth + 1, needle);
          if (hit) return { ...hit, bitOffset: hit.bitOffset + bitOffset };
        }
      }
    }
    return null;
  }

  private at(id: number): number {
    const s = this.typeStart[id];
    if (s === undefined || id <= 0) throw new BtfError(`BTF type id ${id} is out of range (1..${this.typeCount})`);
    return s;
  }

  private info(id: number): number { return this.types.readUInt32LE(this.at(id) + 4); }

  private str(off: number): string {
    if (off >= this.strings.length) throw new BtfError(`BTF string offset ${off} is past the ${this.strings.length}-byte string section`);
    // Bounded: in a damaged section (an old kernel's BTF half overwritten after a reset) a name
    // without its NUL would run on for megabytes, once per type.
    const end = this.strings.subarray(off, off + MAX_NAME_BYTES + 1).indexOf(0);
    if (end < 0) throw new BtfError(`BTF string at offset ${off} has no NUL within ${MAX_NAME_BYTES} bytes`);
    return this.strings.toString('latin1', off, off + end);
  }
}

/** FNV-1a over bytes [from, to). */
function nameHash(b: Buffer, from: number, to: number): number {
  let h = 0x811c9dc5;
  for (let i = from; i < to; i++) h = Math.imul(h ^ (b[i] as number), 0x0100_0193);
  return h >>> 0;
}

function extraBytes(kind: number, vlen: number, id: number, off: number): number {
  switch (kind) {
    case BtfKind.Int: return 4;
    case BtfKind.Ptr: case BtfKind.Fwd: case BtfKind.Typedef: case BtfKind.Volatile: case BtfKind.Const:
    case BtfKind.Restrict: case BtfKind.Func: case BtfKind.Float: case BtfKind.TypeTag: return 0;
    case BtfKind.Array: return 12;
    case BtfKind.Struct: case BtfKind.Union: return 12 * vlen;
    case BtfKind.Enum: return 8 * vlen;
    case BtfKind.FuncProto: return 8 * vlen;
    case BtfKind.Var: return 4;
    case BtfKind.Datasec: return 12 * vlen;
    case BtfKind.DeclTag: return 4;
    case BtfKind.Enum64: return 12 * vlen;
    default: throw new BtfError(`BTF type ${id} at +${off} has unknown kind ${kind}`);
  }
}
