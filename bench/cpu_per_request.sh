#!/usr/bin/env bash
# Server CPU per request of one binary under closed-loop wrk, on loopback.
#
#   bench/cpu_per_request.sh BIN PORT CONNECTIONS SECONDS PATH [VAR=value ...]
#   e.g. bench/cpu_per_request.sh target/release/spotify-token-swap 18081 64 5 /health
#
# Starts BIN with a dummy client id and secret (no call to Spotify is made
# for /health) plus the given variables, warms up for 1 s, then runs wrk
# for SECONDS and prints requests/s and the server's user+system CPU
# time per request (from /proc/PID/stat), its threads and peak RSS.
set -euo pipefail
BIN=$1 PORT=$2 C=$3 S=$4 P=$5
shift 5
env -i PATH="$PATH" SPOTIFY_CLIENT_ID=bench SPOTIFY_CLIENT_SECRET=bench-secret \
    SPOTIFY_REDIRECT_URI=bench://callback LISTEN_ADDR="127.0.0.1:$PORT" LOG_LEVEL=warn "$@" \
    "$BIN" 2>/dev/null &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null || true' EXIT
sleep 0.5
wrk -t2 -c"$C" -d1s "http://127.0.0.1:$PORT$P" >/dev/null
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$PID/stat")
OUT=$(wrk -t2 -c"$C" -d"${S}s" "http://127.0.0.1:$PORT$P")
read -r u2 s2 < <(awk '{print $14, $15}' "/proc/$PID/stat")
REQ=$(echo "$OUT" | awk '/requests in/ {print $1}')
RPS=$(echo "$OUT" | awk '/Requests\/sec/ {print $2}')
TICKS=$(((u2 + s2) - (u1 + s1)))
HZ=$(getconf CLK_TCK)
echo "c=$C requests=$REQ req/s=$RPS cpu_us_per_request=$(python3 -c "print(round($TICKS * 1e6 / $HZ / $REQ, 1))") \
threads=$(awk '/^Threads/ {print $2}' "/proc/$PID/status") peak_rss_kib=$(awk '/^VmHWM/ {print $2}' "/proc/$PID/status")"
echo "$OUT" | grep -E "Non-2xx|Socket errors" || true
