// Newline-delimited JSON framing for QMP and the guest agent. Bounded: a peer
// that never sends a newline cannot make us buffer without limit.

export const MAX_LINE_BYTES = 64 * 1024 * 1024;

/** The guest agent's guest-sync-delimited reply starts with this byte. */
export const QGA_DELIMITER = 0xff;

export type JsonLineEvent =
  | { kind: 'message'; value: unknown }
  | { kind: 'garbage'; text: string; reason: string };

export class JsonLineDecoder {
  private chunks: Buffer[] = [];
  private length = 0;
  private skippingToDelimiter = false;

  constructor(private readonly maxLineBytes = MAX_LINE_BYTES) {}

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
      this.chunks = [];
      this.length = 0;
      buf = buf.subarray(ff + 1);
    }
    let start = 0;
    for (;;) {
      const nl = buf.indexOf(0x0a, start);
      if (nl < 0) break;
      const line = this.take(buf.subarray(start, nl));
      start = nl + 1;
      const ev = this.parse(line);
      if (ev) out.push(ev);
    }
    const rest = buf.subarray(start);
    if (rest.length > 0) {
      if (this.length + rest.length > this.maxLineBytes) {
        this.chunks = [];
        this.length = 0;
        out.push({ kind: 'garbage', text: '', reason: `line longer than ${this.maxLineBytes} bytes dropped` });
      } else {
        this.chunks.push(Buffer.from(rest));
        this.length += rest.length;
      }
    }
    return out;
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
