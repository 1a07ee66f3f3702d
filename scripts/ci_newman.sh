#!/usr/bin/env bash
# Start the whole stack with `make run` (embedded servers, fresh data dir) in each AUTH_MODE,
# run the Postman collection under newman against it, and stop everything:
#   open: the collection with no key (the seed's clients, unchanged), its "Accounts and keys"
#         folder with an admin key, and the demo;
#   keys: a request without a key must be 401, then the whole collection and the demo with an
#         admin key.
# The admin key is made with the CLI against the stack's database, as an operator would.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PORT=${NEWMAN_PORT:-3917}
RUN_PID=""
DATA=""

stop_stack() {
    if [ -n "$RUN_PID" ]; then
        kill -INT -- "-$RUN_PID" 2>/dev/null || true
        wait "$RUN_PID" 2>/dev/null || true
        RUN_PID=""
    fi
    if [ -n "$DATA" ]; then
        rm -rf "$DATA"
        DATA=""
    fi
}
trap stop_stack EXIT

# start_stack MODE: `make run` with AUTH_MODE=MODE; sets RUN_PID, DATA, LOG, ADMIN_KEY.
start_stack() {
    DATA=$(mktemp -d /tmp/oee-ci-XXXXXX)
    chmod 755 "$DATA"
    LOG="$DATA/run.log"
    AUTH_MODE=$1 PORT=$PORT DATA_DIR=$DATA SIM_LATENCY_SCALE=${SIM_LATENCY_SCALE:-0.2} \
        setsid make run >"$LOG" 2>&1 &
    RUN_PID=$!
    local deadline=$((SECONDS + 120))
    until curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; do
        if ! kill -0 "$RUN_PID" 2>/dev/null || [ $SECONDS -gt $deadline ]; then
            echo "stack did not become healthy; log:" >&2
            cat "$LOG" >&2
            exit 1
        fi
        sleep 0.5
    done
    echo "stack healthy (AUTH_MODE=$1) after ${SECONDS}s"
    local database_url=${DATABASE_URL:-$(sed -n 's/^» PostgreSQL (embedded) at //p' "$LOG" | head -n 1)}
    ADMIN_KEY=$(DATABASE_URL=$database_url .venv/bin/python -m app keys create \
        --account ci-admin --scope admin --name newman | tail -n 1)
}

BASE_URL="http://127.0.0.1:$PORT"

start_stack open
BASE_URL=$BASE_URL API_KEY="" bash scripts/newman.sh
BASE_URL=$BASE_URL API_KEY=$ADMIN_KEY bash scripts/newman.sh --folder "Accounts and keys"
.venv/bin/python demo.py --url "$BASE_URL" --orders 5 --timeout 90
stop_stack

start_stack keys
status=$(curl -s -o /dev/null -w '%{http_code}' "$BASE_URL/api/orders")
if [ "$status" != 401 ]; then
    echo "AUTH_MODE=keys: GET /api/orders without a key answered $status, not 401" >&2
    exit 1
fi
BASE_URL=$BASE_URL API_KEY=$ADMIN_KEY bash scripts/newman.sh
API_KEY=$ADMIN_KEY .venv/bin/python demo.py --url "$BASE_URL" --orders 3 --timeout 90
stop_stack
