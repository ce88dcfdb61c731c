// docs/MQTT.md's schema appendix is generated from the code; this keeps the two equal.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { schemaAppendix } from '../../src/cli/schema-doc.js';

t.test('docs/MQTT.md ends with the schemas the code uses', async (t) => {
  const doc = readFileSync(join(process.cwd(), 'docs', 'MQTT.md'), 'utf8');
  const at = doc.indexOf('## Appendix: JSON schemas');
  t.ok(at > 0, 'the appendix is there');
  t.equal(doc.slice(at), schemaAppendix(), 'regenerate with: node dist/src/cli/schema-doc.js');
});
