# Sourced by run-local.sh and run-cluster.sh: what both stacks do alike.

# port_busy PORT: something listens on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# secret FILE: prints the secret in FILE, creating it (0600) first.
secret() {
  if [ ! -s "$1" ]; then
    (umask 077; head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' > "$1")
  fi
  cat "$1"
}

# influxd_conf DIR PORT prints the configuration of the local InfluxDB 1.8 (state under DIR, HTTP on
# 127.0.0.1:PORT, reporting and query logs off; Flux on for users' own
# queries — telemetryd itself reads with InfluxQL).
influxd_conf() {
  cat <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:0"
[meta]
  dir = "$1/meta"
[data]
  dir = "$1/data"
  wal-dir = "$1/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$2"
  flux-enabled = true
  log-enabled = false
[logging]
  level = "warn"
[continuous_queries]
  log-enabled = false
CONF
}
