#!/bin/bash
# The trial image's command (the root Dockerfile): the schema of the SQLite file brought up to
# date, then the OCR server and the API server side by side in one container. docker stop (or
# Ctrl-C) stops both, each after its running work; if one exits, the other is stopped too.
set -uo pipefail

ocr-migrate || exit
echo "ocr-trial: the API and the OCR server in one container, on SQLite (/app/data);" \
    "the API listens on ${OCR_API_BIND}, every interface of the container: anyone who" \
    "reaches the published port can use it. For a try only: see compose.yaml for a service." >&2

stopping=0
api=""
stop() { kill -TERM $api "$ocr" 2>/dev/null; }
trap 'stopping=1; stop' INT TERM
ocr-server &
ocr=$!
# The API once the OCR server answers (its engines loaded): a first /image-sync then reads
# instead of being told to retry.
healthz="import urllib.request; urllib.request.urlopen('http://${OCR_SERVER_BIND}/healthz', timeout=2)"
for _ in $(seq 120); do
    if [ "$stopping" = 1 ] || ! kill -0 "$ocr" 2>/dev/null; then break; fi
    python -c "$healthz" 2>/dev/null && break
    sleep 0.5
done
if [ "$stopping" = 0 ]; then
    ocr-api &
    api=$!
fi
wait -n
status=$?
stop
wait
# Stopped on request: a clean exit; else the status of the service that ended first.
[ "$stopping" = 1 ] && [ "$status" -ge 128 ] && status=0
exit "$status"
