#!/usr/bin/env bash
# Starts the local stack for `make run`: InfluxDB 1.8.10, Mosquitto and
# telemetryd, all on loopback, state under $TELEMETRY_DATA_DIR. Ctrl-C stops
# everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. "$root/deploy/lib.sh" # port_busy, secret, influxd_conf
data=${TELEMETRY_DATA_DIR:-$root/data}
influx_port=${INFLUX_PORT:-8086}
mqtt_port=${MQTT_PORT:-1883}
http_addr=${TELEMETRY_HTTP_ADDR:-127.0.0.1:8080}
mkdir -p "$data/influxdb" "$data/mosquitto" "$data/logs"
data=$(cd "$data" && pwd)

for p in "$influx_port" "$mqtt_port" "${http_addr##*:}"; do
  if port_busy "$p"; then echo "port $p is already in use; stop what uses it or set INFLUX_PORT / MQTT_PORT / TELEMETRY_HTTP_ADDR" >&2; exit 1; fi
done

# Secrets, created on the first run and kept (0600) under the data dir: the
# operator's admin token and the password of telemetryd's own MQTT account.
mkdir -p "$data/secrets" && chmod 700 "$data/secrets"
admin_token=$(secret "$data/secrets/admin-token")
mqtt_password=$(secret "$data/secrets/mqtt-password")
export TELEMETRY_DATA_DIR=$data
export TELEMETRY_ADMIN_TOKEN=${TELEMETRY_ADMIN_TOKEN:-$admin_token}
export TELEMETRY_MQTT_USERNAME=telemetryd
export TELEMETRY_MQTT_PASSWORD=$mqtt_password

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "stopping the local stack…"
  if [ -n "${sim_pid:-}" ]; then kill -TERM "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; fi
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; wait "${pids[i]}" 2>/dev/null || true; done
}
trap cleanup INT TERM EXIT

influxd_conf "$data/influxdb" "$influx_port" > "$data/influxdb/influxdb.conf"
"$root/.tools/bin/influxd" run -config "$data/influxdb/influxdb.conf" > "$data/logs/influxd.log" 2>&1 &
pids+=($!)

# The broker's users and ACL come from the device registry: each device may
# publish to its own topic only, and only telemetryd may subscribe. telemetryd
# rewrites both files and sends Mosquitto SIGHUP whenever the registry changes.
mosq_passwd=$data/mosquitto/passwd
mosq_acl=$data/mosquitto/acl
"$root/bin/telemetryd" mosquitto-auth -password-file "$mosq_passwd" -acl-file "$mosq_acl" >/dev/null
{ cat deploy/mosquitto.conf
  echo "persistence_location $data/mosquitto/"
  echo "log_dest file $data/logs/mosquitto.log"
  echo "listener $mqtt_port 127.0.0.1"
  echo "allow_anonymous false"
  echo "password_file $mosq_passwd"
  echo "acl_file $mosq_acl"
  echo "user $(id -un)" # run as root, mosquitto would switch to a user that cannot read the 0600 files
} > "$data/mosquitto/mosquitto.conf"
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
"$mosquitto" -c "$data/mosquitto/mosquitto.conf" > "$data/logs/mosquitto.stdout" 2>&1 &
pids+=($!)
echo $! > "$data/mosquitto/mosquitto.pid"

for i in $(seq 1 120); do
  if curl -fsS "http://127.0.0.1:$influx_port/ping" >/dev/null 2>&1; then break; fi
  sleep 0.25
done

export TELEMETRY_HTTP_ADDR=$http_addr
export TELEMETRY_MQTT_URL=${TELEMETRY_MQTT_URL-tcp://127.0.0.1:$mqtt_port}
export TELEMETRY_INFLUX_URL=${TELEMETRY_INFLUX_URL:-http://127.0.0.1:$influx_port}
export TELEMETRY_MOSQUITTO_PASSWORD_FILE=$mosq_passwd
export TELEMETRY_MOSQUITTO_ACL_FILE=$mosq_acl
export TELEMETRY_MOSQUITTO_PID_FILE=$data/mosquitto/mosquitto.pid
export TELEMETRY_LOG_FORMAT=${TELEMETRY_LOG_FORMAT:-text}
"$root/bin/telemetryd" &
pids+=($!)

# A demo fleet (docs/simulator.md): 20 simulated devices, alternately over
# WebSocket and MQTT, provisioned once through the admin API (credentials
# cached under the data dir), so that data flows into InfluxDB and onto the
# dashboard at once. SIMULATOR=0 turns it off; SIMULATOR_DEVICES sizes it.
# It is not in pids: a demo fleet that gives up must not stop the stack.
sim_msg="off (SIMULATOR=0)"
if [ "${SIMULATOR:-1}" != 0 ]; then
  sim_url=http://${http_addr/#:/127.0.0.1:}
  for i in $(seq 1 120); do
    if curl -fsS "$sim_url/readyz" >/dev/null 2>&1; then break; fi
    sleep 0.25
  done
  TELEMETRY_URL=$sim_url "$root/bin/simulator" -fleet demo -creds "$data/simulator/creds.json" \
    -devices "${SIMULATOR_DEVICES:-20}" -transport mixed -profile mixed -rate 1 -duration 0 \
    -drain-timeout 5s -quiet -log-level info > "$data/logs/simulator.log" 2>&1 &
  sim_pid=$!
  sim_msg="${SIMULATOR_DEVICES:-20} simulated devices over WebSocket and MQTT (SIMULATOR=0 turns it off; log $data/logs/simulator.log)"
fi

cat <<MSG

  telemetryd   http://$http_addr   (devices: ws://$http_addr/v1/ingest, dashboards: ws://$http_addr/v1/live)
  health       http://$http_addr/healthz   http://$http_addr/readyz
  InfluxDB     http://127.0.0.1:$influx_port   (database "telemetry")
  Mosquitto    tcp://127.0.0.1:$mqtt_port   (topic devices/<id>/telemetry)
  admin token  $data/secrets/admin-token   (admin API /api/v1, and a viewer token for dashboards)
  provision    export TELEMETRY_ADMIN_TOKEN=\$(cat $data/secrets/admin-token)
               bin/telemetryd devices create -name my-device      (see docs/provisioning.md)
  demo fleet   $sim_msg
  logs         $data/logs/

  Ctrl-C stops everything.
MSG
wait -n "${pids[@]}" || true
