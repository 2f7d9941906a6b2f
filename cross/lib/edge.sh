# shellcheck shell=bash disable=SC2153  # EDGE_* are set by the sourcing script
# Starting, feeding and stopping one bulkflow-edge (native or under
# qemu-user) for cross/test and cross/footprint. Sourced, not executed.
#
# EDGE_RUN holds the command prefix: "" for a native binary or e.g.
# "qemu-arm-static -cpu arm1176". EDGE_BIN is the binary, EDGE_DIR a scratch
# directory holding the config, the outbox and the log.

edge_config() {
  cat >"$EDGE_DIR/edge.toml" <<EOF
edge_id = "smoke"
listen = "127.0.0.1:0"
# Nothing listens there: forwarding fails and the reports stay in the outbox.
central_url = "http://127.0.0.1:9"

[outbox]
path = "$EDGE_DIR/outbox.db"

[forward]
backoff_min_ms = 60000
backoff_max_ms = 60000
EOF
}

# Runs an edge subcommand in the foreground.
edge_cmd() {
  # shellcheck disable=SC2086  # EDGE_RUN is a command prefix with arguments
  $EDGE_RUN "$EDGE_BIN" "$@"
}

# Starts `run` in the background; sets EDGE_PID and EDGE_ADDR.
edge_start() {
  local i
  rm -f "$EDGE_DIR/addr"
  # shellcheck disable=SC2086
  $EDGE_RUN "$EDGE_BIN" run --config "$EDGE_DIR/edge.toml" --addr-file "$EDGE_DIR/addr" \
    >>"$EDGE_DIR/edge.log" 2>&1 &
  EDGE_PID=$!
  for i in $(seq 300); do
    if [ -s "$EDGE_DIR/addr" ]; then
      EDGE_ADDR=$(head -n1 "$EDGE_DIR/addr")
      return 0
    fi
    kill -0 "$EDGE_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "edge did not start (waited ${i}x0.1 s); log:" >&2
  cat "$EDGE_DIR/edge.log" >&2
  return 1
}

# SIGTERM, then waits; fails unless the edge exits 0.
edge_stop() {
  local rc=0
  kill -TERM "$EDGE_PID"
  wait "$EDGE_PID" || rc=$?
  if [ "$rc" != 0 ]; then
    echo "edge exited with status $rc; log:" >&2
    cat "$EDGE_DIR/edge.log" >&2
    return 1
  fi
}

# POSTs a testdata/reports fixture (NAME.http holds the request line and
# headers, NAME.body the body as sent); prints the HTTP status.
post_fixture() {
  local name=$1 dir=$CROSS_ROOT/testdata/reports line method target
  local headers=()
  {
    read -r method target _
    while IFS= read -r line; do
      line=${line%$'\r'}
      [ -n "$line" ] && headers+=(-H "$line")
    done
  } <"$dir/$name.http"
  curl -s -o /dev/null -w '%{http_code}' -X "$method" "${headers[@]}" \
    --data-binary "@$dir/$name.body" "http://$EDGE_ADDR$target"
}

# kB from /proc/PID/status (VmRSS, VmHWM) of the edge process (under qemu,
# the emulator process: emulator plus guest).
proc_kb() {
  awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"
}
