#!/bin/bash
# Healthy: initialised, serving, the database present, and either taking writes (the
# master, whichever container that is after a promotion) or replicating with both
# threads running. The role a container started with says nothing here: the nodes
# promote replicas and turn a returning master into a replica.
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
grep -q 'Slave_IO_Running: Yes' <<<"${status}"
grep -q 'Slave_SQL_Running: Yes' <<<"${status}"
