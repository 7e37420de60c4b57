#!/usr/bin/env bash
# Install (from Debian packages) and start PostgreSQL and Redis on loopback for the demo and tests,
# and install Prometheus (promtool and the server binary, which tests start themselves).
#
#   deploy/local/services.sh start   install when missing, start when not running
#   deploy/local/services.sh stop    stop both
#   deploy/local/services.sh status  exit 0 when both respond
#
# PostgreSQL runs as its own cluster "tombstone" (port TOMBSTONE_PG_PORT, default 55432) with
# wal_level=logical, so that Debezium can read it; Redis runs on TOMBSTONE_REDIS_PORT (56379)
# with its files under /var/lib/tombstone/redis. Neither touches a server already on the machine.
set -euo pipefail

PG_VERSION="${TOMBSTONE_PG_VERSION:-15}"
PG_CLUSTER=tombstone
PG_PORT="${TOMBSTONE_PG_PORT:-55432}"
PG_USER=tombstone
PG_PASSWORD="${TOMBSTONE_PG_PASSWORD:-tombstone}"
REDIS_PORT="${TOMBSTONE_REDIS_PORT:-56379}"
REDIS_DIR=/var/lib/tombstone/redis

apt_install() {
    local missing=()
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "Installing ${missing[*]} from Debian packages"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

pg_running() {
    pg_lsclusters -h 2>/dev/null | awk -v c="$PG_CLUSTER" '$2 == c && $4 == "online" {found=1} END {exit !found}'
}

start_postgres() {
    apt_install "postgresql-$PG_VERSION" postgresql-client-common
    if ! pg_lsclusters -h | awk -v c="$PG_CLUSTER" '$2 == c {found=1} END {exit !found}'; then
        pg_createcluster "$PG_VERSION" "$PG_CLUSTER" -p "$PG_PORT" -- --auth-local=peer --auth-host=scram-sha-256 >/dev/null
        conf="/etc/postgresql/$PG_VERSION/$PG_CLUSTER/conf.d/tombstone.conf"
        cat > "$conf" <<CONF
listen_addresses = '127.0.0.1'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
fsync = on
CONF
    fi
    if ! pg_running; then
        pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start
    fi
    runuser -u postgres -- psql -q -p "$PG_PORT" -v ON_ERROR_STOP=1 <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE $PG_USER LOGIN REPLICATION CREATEDB PASSWORD '$PG_PASSWORD';
  END IF;
END \$\$;
SQL
    if ! runuser -u postgres -- psql -p "$PG_PORT" -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_USER'" | grep -q 1; then
        runuser -u postgres -- createdb -p "$PG_PORT" -O "$PG_USER" "$PG_USER"
    fi
    echo "PostgreSQL: postgresql://$PG_USER@127.0.0.1:$PG_PORT/$PG_USER (password in TOMBSTONE_PG_PASSWORD, default tombstone)"
}

redis_running() {
    redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG
}

start_redis() {
    apt_install redis-server redis-tools
    # The package starts a system-wide server on 6379; ours is separate and left alone by it.
    if ! redis_running; then
        mkdir -p "$REDIS_DIR"
        redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --dir "$REDIS_DIR" \
            --appendonly yes --appendfsync everysec --pidfile "$REDIS_DIR/redis.pid" \
            --logfile "$REDIS_DIR/redis.log" --save ""
        for _ in $(seq 1 50); do redis_running && break; sleep 0.1; done
        redis_running || { echo "Redis did not start; see $REDIS_DIR/redis.log" >&2; exit 1; }
    fi
    echo "Redis: redis://127.0.0.1:$REDIS_PORT/0"
}

# promtool for the Prometheus rule tests, and the server for the scrape test, from Debian's
# prometheus package; the package's own service stays stopped.
install_prometheus() {
    command -v promtool >/dev/null && command -v prometheus >/dev/null && return
    echo "Installing prometheus from Debian packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
        systemctl disable --now prometheus
    fi
    pkill -x prometheus || true
}

case "${1:-start}" in
    start)
        start_postgres
        start_redis
        install_prometheus
        ;;
    stop)
        pg_running && pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" stop || true
        redis_running && redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null || true
        ;;
    status)
        pg_running && redis_running
        ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
