#!/usr/bin/env bash
# Starts the cluster for `make run-cluster` (docs/cluster.md): PostgreSQL
# (the shared registry), NATS with JetStream (live fan-out), Mosquitto,
# InfluxDB 1.8.10, three telemetryd instances and HAProxy in front of their
# HTTP/WebSocket ports, all on loopback, state under $TELEMETRY_DATA_DIR
# (default data/cluster). The demo fleet goes through HAProxy. Ctrl-C
# stops everything this script started.
#
# CLUSTER_CHECK=1 writes the configuration files, checks HAProxy's with
# `haproxy -c` and exits without starting anything (the tests use it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. "$root/deploy/lib.sh" # port_busy, secret, influxd_conf
data=${TELEMETRY_DATA_DIR:-$root/data/cluster}
lb_port=${LB_PORT:-8080}
lb_stats_port=${LB_STATS_PORT:-8404}
inst_ports=(${INSTANCE_PORTS:-8181 8182 8183})
pg_port=${PG_PORT:-15432}
nats_port=${NATS_PORT:-4222}
nats_mon_port=${NATS_MONITOR_PORT:-8222}
influx_port=${INFLUX_PORT:-8086}
mqtt_port=${MQTT_PORT:-1883}
pg_bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
telemetryd=${TELEMETRYD_BIN:-$root/bin/telemetryd}
simulator=${SIMULATOR_BIN:-$root/bin/simulator}
influxd=${INFLUXD_BIN:-$root/.tools/bin/influxd}
names=(a b c)
mkdir -p "$data/influxdb" "$data/mosquitto" "$data/nats" "$data/logs" "$data/haproxy"
data=$(cd "$data" && pwd)

need() { command -v "$1" >/dev/null || [ -x "$1" ] || { echo "$1 not found (make tools installs $2)" >&2; exit 1; }; }
need haproxy haproxy

# HAProxy reads its addresses from the environment (deploy/haproxy.cfg).
export HAPROXY_BIND=127.0.0.1:$lb_port HAPROXY_STATS_BIND=127.0.0.1:$lb_stats_port
export TELEMETRYD_A=127.0.0.1:${inst_ports[0]} TELEMETRYD_B=127.0.0.1:${inst_ports[1]} TELEMETRYD_C=127.0.0.1:${inst_ports[2]}
haproxy -q -c -f deploy/haproxy.cfg
if [ "${CLUSTER_CHECK:-0}" = 1 ]; then echo "haproxy configuration OK"; exit 0; fi
need nats-server nats-server
need "$pg_bin/initdb" postgresql
need "$influxd" influxd
need "$telemetryd" "bin/telemetryd: run make build"

for p in "$lb_port" "$lb_stats_port" "${inst_ports[@]}" "$pg_port" "$nats_port" "$nats_mon_port" "$influx_port" "$mqtt_port"; do
  if port_busy "$p"; then echo "port $p is already in use; stop what uses it or set LB_PORT / LB_STATS_PORT / INSTANCE_PORTS / PG_PORT / NATS_PORT / NATS_MONITOR_PORT / INFLUX_PORT / MQTT_PORT" >&2; exit 1; fi
done

# Secrets, created on the first run and kept (0600) under the data dir.
mkdir -p "$data/secrets" && chmod 700 "$data/secrets"
admin_token=$(secret "$data/secrets/admin-token")
mqtt_password=$(secret "$data/secrets/mqtt-password")
pg_password=$(secret "$data/secrets/postgres-password")

pids=()
pg_started=
cleanup() {
  trap - INT TERM EXIT
  echo; echo "stopping the cluster…"
  if [ -n "${sim_pid:-}" ]; then kill -TERM "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; fi
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for ((i=${#pids[@]}-1; i>=0; i--)); do wait "${pids[i]}" 2>/dev/null || true; done
  if [ -n "$pg_started" ]; then as_pg "$pg_bin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null || true; fi
}
trap cleanup INT TERM EXIT

wait_for() { # wait_for <what> <command...>: up to 30 s
  local what=$1; shift
  for _ in $(seq 1 120); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  echo "$what did not come up; see $data/logs/" >&2; exit 1
}

# PostgreSQL refuses to run as root: as root, it runs as the postgres user
# in a directory owned by it. Password authentication over TCP; the Unix
# socket stays in that private directory.
pgdir=$data/postgres
pgdata=$pgdir/data
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
mkdir -p "$pgdir"
if [ "$(id -u)" = 0 ]; then chown postgres: "$pgdir"; fi
chmod 700 "$pgdir"
fresh=
if [ ! -s "$pgdata/PG_VERSION" ]; then
  (umask 077; printf '%s\n' "$pg_password" > "$pgdir/pwfile")
  if [ "$(id -u)" = 0 ]; then chown postgres: "$pgdir/pwfile"; fi
  as_pg "$pg_bin/initdb" -D "$pgdata" --username=telemetryd --pwfile="$pgdir/pwfile" \
    --auth-host=scram-sha-256 --auth-local=trust --encoding=UTF8 --locale=C > "$data/logs/initdb.log" 2>&1
  rm -f "$pgdir/pwfile"
  fresh=1
fi
as_pg mkdir -p "$pgdir/sock"
as_pg "$pg_bin/pg_ctl" -D "$pgdata" -l "$pgdir/postgres.log" -w -t 60 \
  -o "-p $pg_port -k $pgdir/sock -c listen_addresses=127.0.0.1" start >/dev/null
pg_started=1
if [ -n "$fresh" ]; then as_pg "$pg_bin/createdb" -h "$pgdir/sock" -p "$pg_port" -U telemetryd telemetryd; fi
registry_url="postgres://telemetryd:$pg_password@127.0.0.1:$pg_port/telemetryd?sslmode=disable"

# NATS with JetStream: the live fan-out and the fleet's last values.
nats-server -a 127.0.0.1 -p "$nats_port" -m "$nats_mon_port" -js -sd "$data/nats" > "$data/logs/nats.log" 2>&1 &
pids+=($!)

influxd_conf "$data/influxdb" "$influx_port" > "$data/influxdb/influxdb.conf"
"$influxd" run -config "$data/influxdb/influxdb.conf" > "$data/logs/influxd.log" 2>&1 &
pids+=($!)

export TELEMETRY_ADMIN_TOKEN=${TELEMETRY_ADMIN_TOKEN:-$admin_token}
export TELEMETRY_MQTT_USERNAME=telemetryd
export TELEMETRY_MQTT_PASSWORD=$mqtt_password
export TELEMETRY_REGISTRY_URL=$registry_url

# The broker's users and ACL come from the shared registry. All three
# instances are given the files; the one holding PostgreSQL's advisory lock
# writes them (and sends Mosquitto SIGHUP) — one writer at a time.
mosq_passwd=$data/mosquitto/passwd
mosq_acl=$data/mosquitto/acl
"$telemetryd" mosquitto-auth -password-file "$mosq_passwd" -acl-file "$mosq_acl" >/dev/null
{ cat deploy/mosquitto.conf
  echo "persistence_location $data/mosquitto/"
  echo "log_dest file $data/logs/mosquitto.log"
  echo "listener $mqtt_port 127.0.0.1"
  echo "allow_anonymous false"
  echo "password_file $mosq_passwd"
  echo "acl_file $mosq_acl"
  echo "user $(id -un)"
} > "$data/mosquitto/mosquitto.conf"
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
"$mosquitto" -c "$data/mosquitto/mosquitto.conf" > "$data/logs/mosquitto.stdout" 2>&1 &
pids+=($!)
echo $! > "$data/mosquitto/mosquitto.pid"

wait_for InfluxDB curl -fsS "http://127.0.0.1:$influx_port/ping"
wait_for NATS curl -fsS "http://127.0.0.1:$nats_mon_port/healthz?js-enabled-only=true"

export TELEMETRY_MQTT_URL=tcp://127.0.0.1:$mqtt_port
export TELEMETRY_MQTT_CLIENT_ID=telemetryd
export TELEMETRY_MQTT_SHARE_GROUP=${TELEMETRY_MQTT_SHARE_GROUP:-telemetryd}
export TELEMETRY_LIVE_NATS_URL=nats://127.0.0.1:$nats_port
export TELEMETRY_INFLUX_URL=http://127.0.0.1:$influx_port
export TELEMETRY_MOSQUITTO_PASSWORD_FILE=$mosq_passwd
export TELEMETRY_MOSQUITTO_ACL_FILE=$mosq_acl
export TELEMETRY_MOSQUITTO_PID_FILE=$data/mosquitto/mosquitto.pid
export TELEMETRY_LOG_FORMAT=${TELEMETRY_LOG_FORMAT:-text}
export TELEMETRY_TRUSTED_PROXIES=127.0.0.1 # HAProxy: X-Forwarded-For names the device
inst_pids=()
for i in 0 1 2; do
  n=${names[i]}
  mkdir -p "$data/telemetryd-$n"
  TELEMETRY_INSTANCE_ID=$n TELEMETRY_HTTP_ADDR=127.0.0.1:${inst_ports[i]} TELEMETRY_DATA_DIR=$data/telemetryd-$n \
    "$telemetryd" > "$data/logs/telemetryd-$n.log" 2>&1 &
  pids+=($!)
  inst_pids+=($!)
done
for i in 0 1 2; do wait_for "telemetryd ${names[i]}" curl -fsS "http://127.0.0.1:${inst_ports[i]}/readyz"; done

haproxy -f deploy/haproxy.cfg -db > "$data/logs/haproxy.log" 2>&1 &
pids+=($!)
lb=http://127.0.0.1:$lb_port
wait_for HAProxy curl -fsS "$lb/readyz"

# The demo fleet (as in `make run`), through HAProxy: WebSocket devices
# are spread by the balancer, MQTT devices by the broker's share group.
sim_msg="off (SIMULATOR=0)"
if [ "${SIMULATOR:-1}" != 0 ]; then
  TELEMETRY_URL=$lb "$simulator" -fleet demo -creds "$data/simulator/creds.json" \
    -devices "${SIMULATOR_DEVICES:-20}" -transport mixed -profile mixed -rate 1 -duration 0 \
    -drain-timeout 5s -quiet -log-level info > "$data/logs/simulator.log" 2>&1 &
  sim_pid=$!
  sim_msg="${SIMULATOR_DEVICES:-20} simulated devices over WebSocket (through HAProxy) and MQTT (SIMULATOR=0 turns it off)"
fi

cat <<MSG

  telemetryd   $lb   (HAProxy: devices ws://127.0.0.1:$lb_port/v1/ingest, dashboards $lb/)
  instances    a http://$TELEMETRYD_A  (pid ${inst_pids[0]})
               b http://$TELEMETRYD_B  (pid ${inst_pids[1]})
               c http://$TELEMETRYD_C  (pid ${inst_pids[2]})
               kill -9 one of them: HAProxy takes it out of rotation within 2 s, devices reconnect through the others
  HAProxy      http://$HAPROXY_STATS_BIND/   (servers, health)
  PostgreSQL   postgres://telemetryd:…@127.0.0.1:$pg_port/telemetryd   (password in $data/secrets/postgres-password)
  NATS         nats://127.0.0.1:$nats_port   (monitoring http://127.0.0.1:$nats_mon_port)
  InfluxDB     http://127.0.0.1:$influx_port   (database "telemetry")
  Mosquitto    tcp://127.0.0.1:$mqtt_port   (topic devices/<id>/telemetry, share group \$share/$TELEMETRY_MQTT_SHARE_GROUP)
  admin token  $data/secrets/admin-token
  provision    export TELEMETRY_ADMIN_TOKEN=\$(cat $data/secrets/admin-token) TELEMETRY_URL=$lb
               bin/telemetryd devices create -name my-device      (see docs/provisioning.md)
  demo fleet   $sim_msg
  logs         $data/logs/

  Ctrl-C stops everything.
MSG
# The shared servers and the balancer are the cluster: when one of them
# exits, everything stops. An instance may die (that is what a cluster is
# for); it is not waited on.
wait -n "${pids[@]:0:3}" "${pids[-1]}" || true
