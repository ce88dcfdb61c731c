// A clean copy of kernel text, kept compactly. Guests of one kernel build differ in their text only
// where the KASLR slide relocated an address and where a patch site holds another state, so the
// first copy of a build is kept whole (the base) and every later one (another guest, another slide)
// as the runs of bytes where it differs from that base: tens or hundreds of KiB instead of the
// 10-20 MB of a whole copy per guest. A copy that differs from its base in more than a few bytes in
// eight is kept whole instead. Pure bytes, no guest access: the caller reads the text.

const PAGE = 4096;
/** Differing bytes closer than this are one run (a relocated address, a patched instruction). */
const RUN_GAP = 8;

export class TextCopy {
  private constructor(
    private readonly base: Buffer,
    /** Differing runs, sorted by offset: where, how long, and where their bytes are in `data`. */
    private readonly offs: Uint32Array,
    private readonly lens: Uint32Array,
    private readonly dataAt: Uint32Array,
    private readonly data: Buffer,
  ) {}

  /** `raw` kept against `base` (same length; otherwise, or with no base, kept whole). `raw` is not retained when kept as runs. */
  static of(raw: Buffer, base: Buffer | null): TextCopy {
    const none = new Uint32Array(0);
    if (!base || base.length !== raw.length) return new TextCopy(raw, none, none, none, Buffer.alloc(0));
    const offs: number[] = [];
    const lens: number[] = [];
    let bytes = 0;
    const limit = raw.length >>> 3;
    for (let p = 0; p < raw.length; p += PAGE) {
      const end = Math.min(raw.length, p + PAGE);
      if (raw.compare(base, p, end, p, end) === 0) continue;
      let i = p;
      while (i < end) {
        if (raw[i] === base[i]) { i++; continue; }
        let last = i;
        for (let j = i + 1; j < end && j - last < RUN_GAP; j++) if (raw[j] !== base[j]) last = j;
        offs.push(i);
        lens.push(last + 1 - i);
        bytes += last + 1 - i;
        if (bytes > limit) return new TextCopy(raw, none, none, none, Buffer.alloc(0));
        i = last + 1;
      }
    }
    const data = Buffer.allocUnsafe(bytes);
    const dataAt = new Uint32Array(offs.length);
    let at = 0;
    for (let r = 0; r < offs.length; r++) {
      dataAt[r] = at;
      raw.copy(data, at, offs[r] as number, (offs[r] as number) + (lens[r] as number));
      at += lens[r] as number;
    }
    return new TextCopy(base, Uint32Array.from(offs), Uint32Array.from(lens), dataAt, data);
  }

  get length(): number { return this.base.length; }

  /** Bytes kept beyond the base (0 for a copy kept whole, which is its own base). */
  get ownBytes(): number { return this.data.length + this.offs.byteLength * 3; }

  /** The whole buffer this copy builds on (shared by the build's other copies). */
  get baseBuffer(): Buffer { return this.base; }

  /**
   * The copy's bytes [off, off + len), cut at its end; null when `off` is outside. Read-only: the
   * result may be a view of the shared base.
   */
  bytes(off: number, len: number): Buffer | null {
    if (!Number.isInteger(off) || off < 0 || off >= this.base.length || len < 0) return null;
    const end = Math.min(this.base.length, off + len);
    // The first run ending after `off`.
    let lo = 0;
    let hi = this.offs.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.offs[mid] as number) + (this.lens[mid] as number) <= off) lo = mid + 1; else hi = mid;
    }
    if (lo >= this.offs.length || (this.offs[lo] as number) >= end) return this.base.subarray(off, end);
    const out = Buffer.from(this.base.subarray(off, end));
    for (let r = lo; r < this.offs.length && (this.offs[r] as number) < end; r++) {
      const from = Math.max(off, this.offs[r] as number);
      const to = Math.min(end, (this.offs[r] as number) + (this.lens[r] as number));
      const src = (this.dataAt[r] as number) + (from - (this.offs[r] as number));
      this.data.copy(out, from - off, src, src + (to - from));
    }
    return out;
  }
}
