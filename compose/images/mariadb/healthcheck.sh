#!/bin/bash
# Healthy: initialised, serving, the database present, and on a replica both
# replication threads running.
set -euo pipefail

[[ -e /var/lib/mysql/.parley-initialised ]]
database=${PARLEY_DATABASE:-parley}
present=$(mariadb -uroot --batch --skip-column-names \
    -e "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '${database}'")
[[ ${present} == 1 ]]
if [[ ${PARLEY_MARIADB_ROLE} == replica ]]; then
    status=$(mariadb -uroot -e 'SHOW SLAVE STATUS\G')
    grep -q 'Slave_IO_Running: Yes' <<<"${status}"
    grep -q 'Slave_SQL_Running: Yes' <<<"${status}"
fi
