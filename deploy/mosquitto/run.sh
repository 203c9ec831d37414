#!/bin/sh
# Entrypoint of the Mosquitto container in docker-compose.yml.
#
# telemetryd writes the broker's password and ACL files (0600, its own user)
# into the shared mosquitto-auth volume: once before the broker starts (the
# mosquitto-auth service) and again whenever the device registry changes.
# Mosquitto runs as its own user and only rereads them on SIGHUP, and a
# signal cannot cross containers. So this script, running as root, copies
# the files to where the mosquitto user can read them, starts the broker,
# and every few seconds copies them again and sends SIGHUP when they changed.
set -eu

home=${MOSQUITTO_HOME:-/mosquitto} # a test runs it elsewhere
src=$home/auth
run=$home/run
mkdir -p "$run" "$home/data"
chown mosquitto:mosquitto "$run" "$home/data"

install_auth() {
	for f in passwd acl; do
		if [ -f "$src/$f" ]; then
			cp "$src/$f" "$run/$f.new"
		else
			# No registry yet: nobody may log in until telemetryd writes it.
			: > "$run/$f.new"
		fi
		chown mosquitto:mosquitto "$run/$f.new"
		chmod 0600 "$run/$f.new"
		mv "$run/$f.new" "$run/$f"
	done
}

digest() { cat "$src/passwd" "$src/acl" 2>/dev/null | md5sum; }

install_auth
last=$(digest)
mosquitto -c "$home/config/mosquitto.conf" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid"; exit $?' TERM INT

while kill -0 "$pid" 2>/dev/null; do
	sleep "${AUTH_RELOAD_INTERVAL:-5}" &
	wait $! || true
	now=$(digest)
	if [ "$now" != "$last" ]; then
		install_auth
		kill -HUP "$pid"
		last=$now
		echo "telemetryd: password and ACL files changed; mosquitto reloaded"
	fi
done
wait "$pid"
