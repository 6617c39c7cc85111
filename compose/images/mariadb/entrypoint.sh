#!/bin/bash
# Entrypoint of Parley's MariaDB image. One server, by PARLEY_MARIADB_ROLE:
#   master   binlog on, takes writes; on the first start creates the database and the
#            users (replication, app, HAProxy's check user) from deploy/mariadb/bootstrap-master.sql
#   replica  read_only; on the first start points itself at the master with GTID
#            (deploy/mariadb/replica-setup.sql); users and data arrive by replication
# The role is where a server starts, not what it stays: the nodes promote a replica when
# the master dies (docs/operations.md, automatic failover). So only the first start uses
# the role's configuration; every later start, of any server, comes up read-only with
# the replica configuration (commits of a crashed master that no replica acknowledged
# are dropped at recovery, init_rpl_role = SLAVE). The nodes then point it at the
# server that takes writes, or, when none does (the whole stack restarted), promote the
# one furthest ahead. A server never decides by itself that it is the master: two
# servers deciding so at once, after a crash and a quick restart, would diverge.
# The first start runs on a private socket with networking off, so nothing (HAProxy,
# a node, the healthcheck) sees a half-initialised server. The passwords come from the
# environment, or when it leaves them empty from compose's generated secrets.
set -euo pipefail

# shellcheck source=../common/generated-secrets.sh
source /usr/local/lib/parley/generated-secrets.sh

role=${PARLEY_MARIADB_ROLE:?set PARLEY_MARIADB_ROLE to master or replica}
server_id=${PARLEY_MARIADB_SERVER_ID:?set PARLEY_MARIADB_SERVER_ID (unique per server)}
database=${PARLEY_DATABASE:-parley}
# Replicas reach the master through HAProxy's write frontend: in the seed's networks the
# replicas live behind HAProxy and cannot see the master directly.
source_host=${PARLEY_REPLICATION_SOURCE_HOST:-haproxy}
source_port=${PARLEY_REPLICATION_SOURCE_PORT:-3306}

datadir=/var/lib/mysql
config=/etc/parley/mariadb.cnf
init_socket=/run/mysqld/initialising.sock
init_marker=${datadir}/.parley-initialised
templates=/etc/parley/templates

log() {
    echo "parley-mariadb (${PARLEY_MARIADB_ROLE:-?}): $*" >&2
}
trap 'log "failed at line ${LINENO}: ${BASH_COMMAND}"' ERR

# Passwords go into SQL string literals and mysql:// URLs; this alphabet needs no
# escaping in either. An example that says "change me" is public (the repository once
# shipped such values in compose/.env), so it is refused as the nodes refuse theirs.
require_password() {
    local name=$1 value=${!1:-}
    if [[ ! ${value} =~ ^[A-Za-z0-9._~-]{16,}$ ]]; then
        log "${name} must be at least 16 characters of A-Z a-z 0-9 . _ ~ - (see compose/.env)"
        exit 1
    fi
    if [[ ${value,,} =~ change[-_.]?me ]]; then
        log "${name} is a published example value (it says change-me); leave it empty in compose/.env for a generated one, or set your own"
        exit 1
    fi
}

# master.cnf or replica.cnf for this start (see the header).
choose_template() {
    if [[ ! -e ${init_marker} ]]; then
        echo "${role}.cnf"
    else
        echo replica.cnf
    fi
}

case ${role} in
    master | replica) ;;
    *) log "PARLEY_MARIADB_ROLE must be master or replica"; exit 1 ;;
esac
use_generated_secret_when_empty MARIADB_REPLICATION_PASSWORD
require_password MARIADB_REPLICATION_PASSWORD
if [[ ${role} == master ]]; then
    use_generated_secret_when_empty MARIADB_APP_PASSWORD
    require_password MARIADB_APP_PASSWORD
    use_generated_secret_when_empty MARIADB_ADMIN_PASSWORD
    require_password MARIADB_ADMIN_PASSWORD
fi
template=$(choose_template)

mkdir -p /run/mysqld
chown mysql:mysql /run/mysqld "${datadir}"
render-template "${templates}/${template}" "${config}" \
    user=mysql port=3306 bind_address=0.0.0.0 \
    socket=/run/mysqld/mysqld.sock pid_file=/run/mysqld/mysqld.pid \
    datadir="${datadir}" tmpdir=/tmp server_id="${server_id}" \
    log_error=/var/log/mysql/error.log
# The error log goes to the container's output (docker logs) instead of a file.
sed -i '/^log_error[[:space:]]*=/d' "${config}"

run_sql() {
    mariadb --socket="${init_socket}" -uroot --batch
}

initialise() {
    if [[ -n $(ls -A "${datadir}") ]]; then
        # Only a first start that died half way leaves this; it holds no data yet.
        log "the data directory holds an unfinished initialisation; starting it over"
        find "${datadir}" -mindepth 1 -delete
    fi
    log "initialising ${datadir}"
    # Without a binlog: every server starts with an empty GTID history, so a replica
    # replays the master's whole binlog, users included.
    mariadb-install-db --defaults-file="${config}" --skip-test-db --skip-log-bin >/dev/null
    mariadbd --defaults-file="${config}" --skip-networking --socket="${init_socket}" &
    local server_pid=$! deadline=$((SECONDS + 60))
    until mariadb-admin --socket="${init_socket}" -uroot ping >/dev/null 2>&1; do
        if ! kill -0 "${server_pid}" 2>/dev/null || ((SECONDS > deadline)); then
            log "the server did not come up for its initialisation"
            exit 1
        fi
        sleep 0.2
    done
    if [[ ${role} == master ]]; then
        # The admin user is the nodes' (they read every server and promote a replica,
        # through HAProxy's per-server ports); operators use root over the socket
        # (`docker compose exec master mariadb`).
        render-template "${templates}/bootstrap-master.sql" /tmp/bootstrap.sql \
            replication_host=% replication_password="${MARIADB_REPLICATION_PASSWORD}" \
            app_host=% app_password="${MARIADB_APP_PASSWORD}" \
            admin_host=% admin_password="${MARIADB_ADMIN_PASSWORD}"
        {
            cat /tmp/bootstrap.sql
            echo "CREATE DATABASE IF NOT EXISTS \`${database}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
        } | run_sql
    else
        render-template "${templates}/replica-setup.sql" /tmp/replica-setup.sql \
            master_host="${source_host}" master_port="${source_port}" \
            replication_password="${MARIADB_REPLICATION_PASSWORD}"
        run_sql </tmp/replica-setup.sql
    fi
    rm -f /tmp/bootstrap.sql /tmp/replica-setup.sql
    mariadb-admin --socket="${init_socket}" -uroot shutdown
    wait "${server_pid}" || true
    touch "${init_marker}"
    log "initialised"
}

if [[ ! -e ${init_marker} ]]; then
    initialise
fi
exec mariadbd --defaults-file="${config}"
