#!/usr/bin/env bash
# Run postman_collection.json against a running server with newman.
#
#   BASE_URL=http://localhost:3000 scripts/newman.sh [extra newman options]
#   API_KEY=oee_... scripts/newman.sh   # AUTH_MODE=keys: an admin key, sent on every request
#
# newman is installed once under .cache/newman (nothing global, no package.json
# touched); it needs Node.js 18+ and npm.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BASE_URL="${BASE_URL:-http://localhost:3000}"
NEWMAN_DIR=".cache/newman"
NEWMAN_BIN="$NEWMAN_DIR/node_modules/.bin/newman"

if ! command -v node >/dev/null 2>&1; then
    echo "error: node not found on PATH; newman needs Node.js 18+ (https://nodejs.org)" >&2
    exit 127
fi

if [ ! -x "$NEWMAN_BIN" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "error: npm not found on PATH; it is needed once to install newman into $NEWMAN_DIR" >&2
        exit 127
    fi
    echo "installing newman into $NEWMAN_DIR ..." >&2
    mkdir -p "$NEWMAN_DIR"
    npm install --no-save --no-audit --no-fund --prefix "$NEWMAN_DIR" newman@6 >&2
fi

exec "$NEWMAN_BIN" run postman_collection.json --env-var "baseUrl=$BASE_URL" \
    --env-var "apiKey=${API_KEY:-}" --bail "$@"
