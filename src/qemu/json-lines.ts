// Newline-delimited JSON framing for QMP and the guest agent. Bounded in
// memory and time: a line over maxLineBytes is dropped as it streams in (never
// buffered whole), and a line nested deeper than maxDepth or with more than
// maxTokens elements is refused by one linear pass over its bytes before
// JSON.parse could spend seconds and gigabytes on it. Either comes out as a 'garbage' event naming the bound.

/**
 * The guest agent's largest legitimate reply: guest-exec-status carrying the
 * output of a process read (qemu-ga itself stops capturing at 16 MiB), base64
 * (x 4/3 = 21.3 MiB) in a small envelope. Everything the supervisor asks for
 * fits; a reply over this is the guest's doing.
 */
export const MAX_AGENT_LINE_BYTES = 24 * 1024 * 1024;
/** QEMU's own replies (query-status, HMP text, events) are kilobytes; the schema introspection is ~200 KB. */
export const MAX_QMP_LINE_BYTES = 8 * 1024 * 1024;
/** Default for a decoder built without a bound. */
export const MAX_LINE_BYTES = MAX_AGENT_LINE_BYTES;
/** No reply of QMP or the agent nests deeper than a handful of levels. */
export const MAX_JSON_DEPTH = 64;

/** The guest agent's guest-sync-delimited reply starts with this byte. */
export const QGA_DELIMITER = 0xff;

export type JsonLineEvent =
  | { kind: 'message'; value: unknown }
  /** bound: the line went over a size/shape bound (a hostile peer), not merely unparsable text. */
  | { kind: 'garbage'; text: string; reason: string; bound?: true };

/**
 * Structural tokens ({ [ , :) outside strings in one line. A guest-exec-status reply has a dozen;
 * QEMU's whole schema introspection some tens of thousands. Millions of tiny arrays in 20 MB
 * (`[[1],[1],...]`) make JSON.parse take seconds and half a gigabyte, so the count is bounded too.
 */
export const MAX_JSON_TOKENS = 262_144;

/**
 * Why a JSON line is refused before parsing (nesting deeper than maxDepth, more structural
 * tokens than maxTokens), or null. One pass, no allocation; strings are skipped with memchr,
 * so a large base64 payload costs next to nothing, and their brackets and escaped quotes do
 * not count.
 */
export function jsonShapeRefusal(buf: Buffer, maxDepth = MAX_JSON_DEPTH, maxTokens = MAX_JSON_TOKENS): string | null {
  let depth = 0;
  let tokens = 0;
  for (let i = 0; i < buf.length; i++) {
    const c = buf[i] as number;
    if (c === 0x22) {
      // A string: jump to its closing quote, past quotes escaped by an odd run of backslashes.
      for (;;) {
        const q = buf.indexOf(0x22, i + 1);
        if (q < 0) return null; // unterminated: JSON.parse says so, cheaply
        let bs = 0;
        while (buf[q - 1 - bs] === 0x5c) bs++;
        i = q;
        if (bs % 2 === 0) break;
      }
      continue;
    }
    if (c === 0x7b || c === 0x5b) {
      if (++depth > maxDepth) return `JSON nested deeper than ${maxDepth} levels (at byte ${i} of a ${buf.length}-byte line) refused`;
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
      continue;
    } else if (c !== 0x2c && c !== 0x3a) continue;
    if (++tokens > maxTokens) return `JSON with more than ${maxTokens} elements (at byte ${i} of a ${buf.length}-byte line) refused`;
  }
  return null;
}

export class JsonLineDecoder {
  private chunks: Buffer[] = [];
  private length = 0;
  private skippingToDelimiter = false;
  /** Inside a line that went over the bound: drop bytes up to its newline. */
  private discarding = false;

  constructor(
    private readonly maxLineBytes = MAX_LINE_BYTES,
    private readonly maxDepth = MAX_JSON_DEPTH,
    private readonly maxTokens = MAX_JSON_TOKENS,
  ) {}

  /** Drop everything up to and including the next 0xFF byte (agent resync). */
  skipToDelimiter(): void {
    this.skippingToDelimiter = true;
  }

  push(data: Buffer): JsonLineEvent[] {
    const out: JsonLineEvent[] = [];
    let buf = data;
    if (this.skippingToDelimiter) {
      const ff = buf.indexOf(QGA_DELIMITER);
      if (ff < 0) return out;
      this.skippingToDelimiter = false;
      this.discarding = false;
      this.chunks = [];
      this.length = 0;
      buf = buf.subarray(ff + 1);
    }
    let start = 0;
    for (;;) {
      const nl = buf.indexOf(0x0a, start);
      if (nl < 0) break;
      if (this.discarding) {
        this.discarding = false;
      } else if (this.length + (nl - start) > this.maxLineBytes) {
        this.drop(out);
        this.discarding = false;
      } else {
        const ev = this.parse(this.take(buf.subarray(start, nl)));
        if (ev) out.push(ev);
      }
      start = nl + 1;
    }
    const rest = buf.subarray(start);
    if (rest.length > 0 && !this.discarding) {
      if (this.length + rest.length > this.maxLineBytes) {
        this.drop(out);
        this.discarding = true;
      } else {
        this.chunks.push(Buffer.from(rest));
        this.length += rest.length;
      }
    }
    return out;
  }

  private drop(out: JsonLineEvent[]): void {
    this.chunks = [];
    this.length = 0;
    out.push({ kind: 'garbage', text: '', reason: `line longer than ${this.maxLineBytes} bytes dropped`, bound: true });
  }

  private take(tail: Buffer): Buffer {
    if (this.chunks.length === 0) return tail;
    const line = Buffer.concat([...this.chunks, tail]);
    this.chunks = [];
    this.length = 0;
    return line;
  }

  private parse(raw: Buffer): JsonLineEvent | undefined {
    // A stray delimiter byte can precede a line after a resync; it is never JSON.
    let line = raw;
    while (line.length > 0 && line[0] === QGA_DELIMITER) line = line.subarray(1);
    const refused = jsonShapeRefusal(line, this.maxDepth, this.maxTokens);
    if (refused !== null) return { kind: 'garbage', text: line.subarray(0, 80).toString('utf8'), reason: refused, bound: true };
    const text = line.toString('utf8').trim();
    if (text === '') return undefined;
    try {
      return { kind: 'message', value: JSON.parse(text) as unknown };
    } catch (e) {
      return { kind: 'garbage', text: text.slice(0, 200), reason: (e as Error).message };
    }
  }
}

/** Encodes a command; JSON text is UTF-8, which never contains the byte 0xFF. */
export function encodeJsonLine(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value) + '\n', 'utf8');
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
