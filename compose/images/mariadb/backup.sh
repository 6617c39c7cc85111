#!/bin/bash
# parley-backup DIR: a consistent physical backup of this replica with mariadb-backup,
# taken while the cluster serves (the compose counterpart of `parley-sim backup`). Run it
# inside a replica's container, into the backups bind mount (PARLEY_BACKUP_DIR on the
# host, /backups here):
#   docker-compose -f compose/docker-compose.yml exec replica-1 parley-backup /backups/parley-2026-12-03
# DIR/data is the prepared copy, DIR/gtid-position its GTID position (the replica's
# gtid_slave_pos at the copy's consistent point), DIR/mariadb-backup.log the tool's output.
set -euo pipefail

target=${1:?usage: parley-backup DIR (e.g. /backups/parley-$(date +%F))}
# Overridable to run it outside the image, against any replica of the same release.
socket=${PARLEY_BACKUP_SOCKET:-/run/mysqld/mysqld.sock}
config=${PARLEY_BACKUP_DEFAULTS_FILE:-/etc/parley/mariadb.cnf}

log() {
    echo "parley-backup: $*" >&2
}

if [[ ${PARLEY_MARIADB_ROLE:-replica} != replica ]]; then
    log "run it in a replica's container (replica-1 or replica-2): a replica is copied, not the master"
    exit 1
fi
if [[ -e ${target} && -n $(ls -A "${target}") ]]; then
    log "${target} is not empty; a backup goes into a new directory"
    exit 1
fi
mkdir -p "${target}"

# Apply what this replica has received before copying: with semi-synchronous
# replication every acknowledged commit reached a replica's relay log, and the copy
# should hold at least what this one has.
received=$(mariadb --socket="${socket}" -uroot --batch -e 'SHOW SLAVE STATUS\G' | sed -n 's/^ *Gtid_IO_Pos: //p')
if [[ -n ${received} ]]; then
    applied=$(mariadb --socket="${socket}" -uroot --batch --skip-column-names \
        -e "SELECT MASTER_GTID_WAIT('${received//[^0-9,-]/}', 30)")
    [[ ${applied} == 0 ]] || log "the replica did not apply ${received} within 30 s; copying what it has"
fi

log "copying into ${target}/data"
mariadb-backup --defaults-file="${config}" --backup --slave-info --safe-slave-backup \
    --user=root --socket="${socket}" --target-dir="${target}/data" >>"${target}/mariadb-backup.log" 2>&1
log "preparing"
mariadb-backup --prepare --target-dir="${target}/data" >>"${target}/mariadb-backup.log" 2>&1

slave_info=${target}/data/xtrabackup_slave_info
[[ -f ${slave_info} ]] || slave_info=${target}/data/mariadb_backup_slave_info
position=$(sed -n "s/.*gtid_slave_pos = '\([0-9,-]*\)'.*/\1/p" "${slave_info}")
if [[ -z ${position} ]]; then
    log "no gtid_slave_pos in ${slave_info}"
    exit 1
fi
printf '%s\n' "${position}" >"${target}/gtid-position"
log "done: ${target}, GTID position ${position}"
