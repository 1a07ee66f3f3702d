#!/usr/bin/env bash
# Start the whole stack with `make run` (embedded servers, fresh data dir), then run the
# Postman collection under newman and the demo against it, and stop everything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PORT=${NEWMAN_PORT:-3917}
DATA=$(mktemp -d /tmp/oee-ci-XXXXXX)
chmod 755 "$DATA"
LOG="$DATA/run.log"

PORT=$PORT DATA_DIR=$DATA SIM_LATENCY_SCALE=${SIM_LATENCY_SCALE:-0.2} setsid make run >"$LOG" 2>&1 &
RUN_PID=$!
cleanup() {
    kill -INT -- "-$RUN_PID" 2>/dev/null || true
    wait "$RUN_PID" 2>/dev/null || true
    rm -rf "$DATA"
}
trap cleanup EXIT

deadline=$((SECONDS + 120))
until curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; do
    if ! kill -0 "$RUN_PID" 2>/dev/null || [ $SECONDS -gt $deadline ]; then
        echo "stack did not become healthy; log:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    sleep 0.5
done
echo "stack healthy after ${SECONDS}s"

BASE_URL="http://127.0.0.1:$PORT" bash scripts/newman.sh
.venv/bin/python demo.py --url "http://127.0.0.1:$PORT" --orders 5 --timeout 90
