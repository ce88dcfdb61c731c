#!/usr/bin/env bash
# The main job: idempotent set-up, then the demo guest under introvisor.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec node dist/src/cli/main.js demo "$@"
