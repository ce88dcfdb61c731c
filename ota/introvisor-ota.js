#!/usr/bin/env node
// The operator's OTA tool (docs/OTA.md); the code is src/cli/ota.ts, built into dist/ by `npm run build`.
import { runMain } from '../dist/src/cli/ota.js';
runMain();
