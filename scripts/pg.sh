#!/usr/bin/env bash
# Throwaway PostgreSQL cluster for the Flotilla test suite.
#
#   scripts/pg.sh start    init (first time) + start, idempotent; waits until ready
#   scripts/pg.sh stop     stop it (no-op if not running)
#   scripts/pg.sh status   exit 0 if running
#   scripts/pg.sh url      print the connection URL for the tests
#   scripts/pg.sh ca       print the path of the CA certificate that signed the server's
#
# TLS is on (ssl=on) with a certificate for 127.0.0.1/localhost signed by a throwaway CA made at
# the first start; plain connections keep working for every role but `flotilla_tls`, which
# pg_hba admits over TLS only (so a test can prove its connection is encrypted).
#
# Environment:
#   FLOTILLA_PG_DIR   data directory          (default /tmp/flotilla-pg)
#   FLOTILLA_PG_PORT  TCP port on 127.0.0.1   (default 54329)
#   FLOTILLA_PG_BIN   PostgreSQL bin dir      (default: newest /usr/lib/postgresql/*/bin)
#
# Listens on 127.0.0.1 only; the unix socket lives inside the data directory.
# Trust auth: this cluster is for tests only. PostgreSQL refuses to run as
# root, so when invoked as root the server runs as the `postgres` system user.
set -euo pipefail

PGDIR=${FLOTILLA_PG_DIR:-/tmp/flotilla-pg}
PORT=${FLOTILLA_PG_PORT:-54329}
HOST=127.0.0.1
DB_USER=flotilla
DB_PASS=flotilla
DB_NAME=flotilla
TLS_USER=flotilla_tls
LOG="$PGDIR/server.log"
# Outside the data directory (0700, owned by postgres) so that tests can read it.
CA_FILE="${PGDIR%/}-ca.crt"

say() { printf 'pg.sh: %s\n' "$*" >&2; }
die() { printf 'pg.sh: ERROR: %s\n' "$*" >&2; exit 1; }

url() { printf 'postgres://%s:%s@%s:%s/%s\n' "$DB_USER" "$DB_PASS" "$HOST" "$PORT" "$DB_NAME"; }

# Locate the server binaries (Debian keeps them out of PATH).
find_bin() {
  if [[ -n ${FLOTILLA_PG_BIN:-} ]]; then
    [[ -x $FLOTILLA_PG_BIN/initdb ]] || die "FLOTILLA_PG_BIN=$FLOTILLA_PG_BIN has no initdb"
    BIN=$FLOTILLA_PG_BIN
    return
  fi
  local best="" v d
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x $d/initdb ]] || continue
    v=${d#/usr/lib/postgresql/}; v=${v%/bin}
    if [[ -z $best ]] || (( ${v%%.*} > ${best%%.*} )); then best=$v; fi
  done
  if [[ -n $best ]]; then
    BIN=/usr/lib/postgresql/$best/bin
  elif command -v initdb >/dev/null 2>&1; then
    BIN=$(dirname "$(command -v initdb)")
  else
    die "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb). Install them with: apt-get install -y postgresql  (scripts/test.sh does this)"
  fi
}

# Run a command as the cluster owner: `postgres` when we are root, else ourselves.
if [[ $(id -u) -eq 0 ]]; then
  OWNER=postgres
  as_owner() {
    # cd / so tools do not warn about an unreadable cwd (e.g. /root).
    (cd / && runuser -u "$OWNER" -- "$@")
  }
else
  OWNER=$(id -un)
  as_owner() { "$@"; }
fi

ensure_owner() {
  [[ $(id -u) -eq 0 ]] || return 0
  if ! id -u "$OWNER" >/dev/null 2>&1; then
    say "creating system user '$OWNER'"
    useradd --system --user-group --no-create-home \
      --home-dir /var/lib/postgresql --shell /usr/sbin/nologin "$OWNER"
  fi
}

is_running() {
  [[ -f $PGDIR/PG_VERSION ]] || return 1
  as_owner "$BIN/pg_ctl" -D "$PGDIR" status >/dev/null 2>&1
}

show_log() {
  if [[ -f $LOG ]]; then
    printf -- '----- %s (last 50 lines) -----\n' "$LOG" >&2
    tail -n 50 "$LOG" >&2 || true
    printf -- '-----\n' >&2
  fi
}

# Superuser psql over the unix socket; SQL on stdin.
psql_admin() {
  as_owner "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGDIR" -p "$PORT" -U postgres -d postgres
}

init_cluster() {
  local server_major
  # "postgres (PostgreSQL) 15.13 (Debian ...)" -> 15
  server_major=$("$BIN/postgres" --version | sed -E 's/^[^0-9]*([0-9]+).*/\1/')
  if [[ -f $PGDIR/PG_VERSION ]]; then
    local have
    have=$(cat "$PGDIR/PG_VERSION")
    [[ $have == "$server_major" ]] \
      || die "$PGDIR holds a PostgreSQL $have cluster but the server is $server_major; remove it (rm -rf $PGDIR) and retry"
    return 0
  fi
  if [[ -d $PGDIR ]] && [[ -n $(ls -A "$PGDIR") ]]; then
    die "$PGDIR exists, is not empty and is not a PostgreSQL data directory (interrupted initdb?); remove it (rm -rf $PGDIR) and retry"
  fi

  say "initdb $PGDIR (PostgreSQL $server_major, owner $OWNER)"
  mkdir -p "$PGDIR"
  chown "$OWNER:" "$PGDIR" 2>/dev/null || chown "$OWNER" "$PGDIR"
  chmod 700 "$PGDIR"
  # The owner must be able to reach the directory (e.g. not under /root).
  as_owner test -w "$PGDIR" \
    || die "user '$OWNER' cannot write $PGDIR (a parent directory is not accessible?); set FLOTILLA_PG_DIR elsewhere"

  local locale=C
  # (grep without -q: an early exit would SIGPIPE `locale -a` under pipefail)
  if locale -a 2>/dev/null | grep -iE '^c\.utf-?8$' >/dev/null; then locale=C.UTF-8; fi
  local initlog
  initlog=$(mktemp)
  if ! as_owner "$BIN/initdb" -D "$PGDIR" -U postgres --auth=trust \
        --encoding=UTF8 --locale="$locale" >"$initlog" 2>&1; then
    cat "$initlog" >&2; rm -f "$initlog"
    rm -rf "${PGDIR:?}"/* 2>/dev/null || true   # leave an empty dir so a retry works
    die "initdb failed"
  fi
  rm -f "$initlog"
  echo "include_if_exists = 'flotilla.conf'" >>"$PGDIR/postgresql.conf"
}

# A CA and a server certificate (P-256, SAN 127.0.0.1 and localhost), made when the data
# directory has none; the CA's key is thrown away once it has signed.
ensure_tls() {
  if [[ ! -f $PGDIR/flotilla-server.crt || ! -f $PGDIR/flotilla-server.key || ! -f $PGDIR/flotilla-ca.crt ]]; then
    command -v openssl >/dev/null 2>&1 || die "openssl not found: apt-get install -y openssl"
    say "making a test CA and server certificate in $PGDIR"
    local tmp
    tmp=$(mktemp -d)
    cat >"$tmp/openssl.cnf" <<'EOF2'
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
authorityKeyIdentifier = keyid
EOF2
    if ! (cd "$tmp" \
        && openssl req -x509 -config openssl.cnf -extensions ca -newkey ec \
             -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
             -subj "/CN=Flotilla test CA" -keyout ca.key -out ca.crt \
        && openssl req -new -config openssl.cnf -newkey ec \
             -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -subj "/CN=127.0.0.1" -keyout server.key -out server.csr \
        && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
             -days 3650 -extfile openssl.cnf -extensions server -out server.crt) >"$tmp/log" 2>&1; then
      cat "$tmp/log" >&2; rm -rf "$tmp"
      die "could not make the TLS certificates"
    fi
    install -m 600 -o "$OWNER" "$tmp/server.key" "$PGDIR/flotilla-server.key"
    install -m 644 -o "$OWNER" "$tmp/server.crt" "$PGDIR/flotilla-server.crt"
    install -m 644 -o "$OWNER" "$tmp/ca.crt" "$PGDIR/flotilla-ca.crt"
    rm -rf "$tmp"
  fi
  install -m 644 "$PGDIR/flotilla-ca.crt" "$CA_FILE"
}

# Rules for the TLS-only role, ahead of initdb's (first match wins); reloaded by setup_db.
ensure_hba() {
  local hba=$PGDIR/pg_hba.conf marker="# flotilla: $TLS_USER over TLS only"
  grep -qF "$marker" "$hba" && return 0
  local tmp
  tmp=$(mktemp)
  printf '%s\nhostssl all %s 127.0.0.1/32 trust\nhost    all %s 127.0.0.1/32 reject\n\n' \
    "$marker" "$TLS_USER" "$TLS_USER" >"$tmp"
  cat "$hba" >>"$tmp"
  install -m 600 -o "$OWNER" "$tmp" "$hba"
  rm -f "$tmp"
}

write_conf() {
  # Rewritten at every start so FLOTILLA_PG_PORT changes take effect.
  cat >"$PGDIR/flotilla.conf" <<EOF
# Written by scripts/pg.sh -- throwaway test cluster.
listen_addresses = '$HOST'
port = $PORT
unix_socket_directories = '$PGDIR'
max_connections = 200
ssl = on
ssl_cert_file = 'flotilla-server.crt'
ssl_key_file = 'flotilla-server.key'
# fsync / synchronous_commit stay on: tests measure durability.
EOF
  chown "$OWNER:" "$PGDIR/flotilla.conf" 2>/dev/null || true
}

setup_db() {
  psql_admin <<SQL
SET client_min_messages = warning;
SELECT format('CREATE ROLE %I', '$DB_USER')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER') \gexec
ALTER ROLE $DB_USER WITH LOGIN CREATEDB PASSWORD '$DB_PASS';
SELECT format('CREATE DATABASE %I OWNER %I', '$DB_NAME', '$DB_USER')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$DB_NAME') \gexec
SELECT format('CREATE ROLE %I', '$TLS_USER')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$TLS_USER') \gexec
ALTER ROLE $TLS_USER WITH LOGIN;
-- Membership: the schemas the tests make as $DB_USER are usable as $TLS_USER.
GRANT $DB_USER TO $TLS_USER;
-- A cluster started before TLS was added picks up ssl=on and the hba rules here.
\o /dev/null
SELECT pg_reload_conf();
SQL
}

wait_ready() {
  local _
  for _ in $(seq 1 60); do
    if "$BIN/pg_isready" -q -h "$HOST" -p "$PORT" -d postgres; then return 0; fi
    sleep 0.5
  done
  show_log
  die "server did not accept connections on $HOST:$PORT within 30s"
}

start() {
  find_bin
  ensure_owner
  # Serialise concurrent `start`s (e.g. two test runs at once).
  mkdir -p "$(dirname "$PGDIR")"
  exec 9>"${PGDIR%/}.lock"
  flock 9

  if is_running; then
    local running_port
    running_port=$(sed -n 4p "$PGDIR/postmaster.pid" 2>/dev/null || true)
    [[ -z $running_port || $running_port == "$PORT" ]] \
      || die "$PGDIR is already running on port $running_port, not $PORT; run 'scripts/pg.sh stop' first"
    say "already running ($PGDIR, port $PORT)"
    ensure_tls
    ensure_hba
    write_conf
  else
    init_cluster
    ensure_tls
    ensure_hba
    write_conf
    rm -f "$LOG"
    touch "$LOG"; chown "$OWNER:" "$LOG" 2>/dev/null || true
    say "starting on $HOST:$PORT (data $PGDIR, log $LOG)"
    # 9>&-: the postmaster must not inherit (and hold forever) the lock.
    if ! as_owner "$BIN/pg_ctl" -D "$PGDIR" -l "$LOG" -w -t 60 start >/dev/null 9>&-; then
      show_log
      die "pg_ctl start failed"
    fi
  fi
  wait_ready
  if ! setup_db; then
    show_log
    die "could not create role/database '$DB_NAME'"
  fi
  say "ready: $(url)"
}

stop() {
  find_bin
  if is_running; then
    say "stopping ($PGDIR)"
    as_owner "$BIN/pg_ctl" -D "$PGDIR" -m fast -w -t 60 stop >/dev/null || { show_log; die "pg_ctl stop failed"; }
  else
    say "not running"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) find_bin; if is_running; then say "running ($PGDIR, port $PORT)"; else say "not running"; exit 1; fi ;;
  url) url ;;
  ca) printf '%s\n' "$CA_FILE" ;;
  *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
