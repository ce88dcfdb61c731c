// Child process of ChildSwitchDecoder (switch-decoder.ts): reads {"requests": [base64 body, ...]}
// on stdin, decodes each dispatch switch body with mapSwitch and prints the nr ranges with their
// targets relative to the body's start. A rel32 is relative, so any base gives the same answer.
import { Ajv, type JSONSchemaType } from 'ajv';
import { mapSwitch } from '../views/dispatch.js';
import { relativeMap, type DecodeReply } from './switch-decoder.js';
import { formatAjvErrors } from '../events/schemas.js';

interface Request { requests: string[] }
const schema: JSONSchemaType<Request> = {
  type: 'object',
  additionalProperties: false,
  required: ['requests'],
  // A body is at most 64 KiB (dispatch.ts), base64 ~ 88 KiB.
  properties: { requests: { type: 'array', maxItems: 16, items: { type: 'string', maxLength: 90_000 } } },
};
const check = new Ajv({ allErrors: true, strict: true }).compile(schema);
// Far from both ends of the address space: a rel32 from here cannot wrap.
const BASE = 0xffff_ff00_0000_0000n;
const MAX_INPUT = 2 << 20;

const chunks: Buffer[] = [];
let size = 0;
process.stdin.on('data', (c: Buffer) => {
  size += c.length;
  if (size > MAX_INPUT) { process.stderr.write(`request larger than ${MAX_INPUT} bytes\n`); process.exit(2); }
  chunks.push(c);
});
process.stdin.on('end', () => {
  let data: unknown;
  try { data = JSON.parse(Buffer.concat(chunks).toString('utf8')); } catch (e) {
    process.stderr.write(`request is not JSON: ${String(e)}\n`);
    process.exit(2);
  }
  if (!check(data)) { process.stderr.write(`request malformed: ${formatAjvErrors(check.errors)}\n`); process.exit(2); }
  const reply: DecodeReply = { results: data.requests.map((b64) => relativeMap(mapSwitch(Buffer.from(b64, 'base64'), BASE), BASE)) };
  process.stdout.write(JSON.stringify(reply));
});
