#!/usr/bin/env bash
# Start SeaweedFS (`weed mini`: master, volume, filer and S3 gateway in one process) on
# 127.0.0.1 as the real S3 server the storage tests run against, and print the
# ZEROSHOT_TEST_S3_* variables to export:
#
#   eval "$(scripts/seaweedfs.sh)"
#
# Idempotent: a SeaweedFS already answering on the port is reused; with --fresh, one
# this script started is restarted on an empty data directory instead (every test
# bucket is a collection with volumes of its own, so the volume slots of a long-lived
# server run out after some hundred buckets). The server keeps
# running in the background (own session, output in the log file below); stop it with
# `scripts/seaweedfs.sh --stop`. With --keep-data a stopped server starts again on the
# data it had (the fault tests take their own server down and back up mid-job).
#
# ZEROSHOT_TEST_S3_PORT   S3 port (default 8333); the other components listen on
#                         PORT+1..PORT+4 and their gRPC ports 10000 above, so
#                         servers on different S3 ports do not collide.
# ZEROSHOT_WEED           the weed binary (default: fetched by scripts/setup.py).
set -euo pipefail
cd "$(dirname "$0")/.."

port=${ZEROSHOT_TEST_S3_PORT:-8333}
endpoint="http://127.0.0.1:$port"
state="${TMPDIR:-/tmp}/zeroshot-seaweedfs-$port"
access_key=zeroshot-test
secret_key=zeroshot-test-secret

log() { echo "seaweedfs: $*" >&2; }

print_env() {
  echo "export ZEROSHOT_TEST_S3_ENDPOINT='$endpoint'"
  echo "export ZEROSHOT_TEST_S3_ACCESS_KEY_ID='$access_key'"
  echo "export ZEROSHOT_TEST_S3_SECRET_ACCESS_KEY='$secret_key'"
  echo "export ZEROSHOT_TEST_S3_REGION='us-east-1'"
  echo "export ZEROSHOT_TEST_S3_STATE='$state'"
}

# The Server header of whatever answers on the S3 port; empty when nothing does.
server_header() {
  curl -s -o /dev/null -D - --max-time 2 "$endpoint/" 2>/dev/null |
    tr -d '\r' | sed -n 's/^[Ss]erver: //p' || true
}

# Stops the SeaweedFS this script started, waiting (up to 30 s) until it has exited and
# freed its ports.
stop_ours() {
  local pid
  pid=$(cat "$state/weed.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 120); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.25
  done
  kill -9 "$pid" 2>/dev/null || true
  sleep 1
}

running() { [[ -f "$state/weed.pid" ]] && kill -0 "$(cat "$state/weed.pid")" 2>/dev/null; }

# Volumes the master knows of (0 when it does not answer).
volumes_known() {
  curl -s --max-time 2 "http://127.0.0.1:$((port + 1))/dir/status" 2>/dev/null | python3 -c '
import json, sys
try:
    racks = [r for dc in json.load(sys.stdin)["Topology"]["DataCenters"] or [] for r in dc["Racks"] or []]
    print(sum(node["Volumes"] for rack in racks for node in rack["DataNodes"] or []))
except (ValueError, KeyError, TypeError):
    print(0)'
}

# Started again on kept data, the S3 gateway answers before the volume server has told
# the master of its volumes, and reads of the kept objects fail (500) until it has:
# ready only once every volume on disk is known.
volumes_ready() {
  [[ "$mode" != --keep-data ]] || (( $(volumes_known) >= $(find "$state/data" -name '*.dat' | wc -l) ))
}

mode=${1:-}
if [[ "$mode" == --stop ]]; then
  if running; then stop_ours; fi
  exit 0
fi
if [[ "$mode" == --fresh ]] && running; then
  log "restarting the SeaweedFS on $endpoint on an empty data directory"
  stop_ours
fi

case "$(server_header)" in
  SeaweedFS*)
    log "reusing the SeaweedFS on $endpoint"
    print_env
    exit 0
    ;;
  "") ;;
  *)
    log "port $port is taken by something that is not SeaweedFS; set ZEROSHOT_TEST_S3_PORT"
    exit 1
    ;;
esac

if [[ -z "${ZEROSHOT_WEED:-}" ]]; then
  eval "$(python3 scripts/setup.py --seaweedfs --print-env | grep '^export ZEROSHOT_WEED=')"
fi

if running; then
  log "stopping unresponsive SeaweedFS (pid $(cat "$state/weed.pid"))"
  stop_ours
fi
# A fresh data directory each start (tests use their own buckets, nothing is kept),
# unless asked to keep it.
if [[ "$mode" != --keep-data ]] || [[ ! -d "$state/data" ]]; then
  rm -rf "$state"
  mkdir -p "$state/data"
fi

# One identity with every action: requests must be signed with its keys (anonymous
# access is refused once any identity exists), so signatures are really checked.
cat >"$state/s3.json" <<EOF
{
  "identities": [
    {
      "name": "zeroshot-test",
      "credentials": [{"accessKey": "$access_key", "secretKey": "$secret_key"}],
      "actions": ["Admin", "Read", "List", "Tagging", "Write"]
    }
  ]
}
EOF

log "starting SeaweedFS on $endpoint (log: $state/weed.log)"
setsid nohup "$ZEROSHOT_WEED" mini \
  -dir="$state/data" \
  -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -master.telemetry=false \
  -s3.port="$port" -s3.config="$state/s3.json" \
  -master.port=$((port + 1)) -volume.port=$((port + 2)) -filer.port=$((port + 3)) \
  -admin.port=$((port + 4)) -admin.ui=false \
  -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
  </dev/null >"$state/weed.log" 2>&1 &
echo $! >"$state/weed.pid"

for _ in $(seq 1 120); do
  if [[ "$(server_header)" == SeaweedFS* ]] && volumes_ready; then
    print_env
    exit 0
  fi
  if ! kill -0 "$(cat "$state/weed.pid")" 2>/dev/null; then
    log "SeaweedFS exited; last lines of $state/weed.log:"
    tail -n 20 "$state/weed.log" >&2
    exit 1
  fi
  sleep 0.5
done
log "SeaweedFS did not answer on $endpoint within 60 s; last lines of $state/weed.log:"
tail -n 20 "$state/weed.log" >&2
exit 1
