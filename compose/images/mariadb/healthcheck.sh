#!/bin/bash
# Healthy: initialised, serving, the database present, and one of: taking writes (the
# master, whichever container that is after a promotion); replicating, its SQL thread
# running and its IO thread connected or connecting (no server takes writes while the
# whole stack starts again: the nodes promote one once they run); or read-only and
# replicating from nobody, which is how a server that was once the master comes up and
# waits for the nodes to point it at the master or to promote it. The role a container
# started with says nothing here.
set -euo pipefail

[[ -e /var/lib/mysql/.parley-initialised ]]
database=${PARLEY_DATABASE:-parley}
present=$(mariadb -uroot --batch --skip-column-names \
    -e "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '${database}'")
[[ ${present} == 1 ]]
read_only=$(mariadb -uroot --batch --skip-column-names -e 'SELECT @@read_only')
if [[ ${read_only} == 0 ]]; then
    exit 0
fi
status=$(mariadb -uroot -e 'SHOW SLAVE STATUS\G')
if [[ -z ${status} ]]; then
    exit 0
fi
grep -Eq 'Slave_IO_Running: (Yes|Connecting)' <<<"${status}"
grep -q 'Slave_SQL_Running: Yes' <<<"${status}"
