#!/bin/sh
# HAProxy's external check for the write frontend: a server is up only while it takes
# writes (@@read_only = 0), so the write frontend follows the master wherever it is,
# also after a replica was promoted. HAProxy passes the server's address and port as
# the third and fourth arguments. The check user has no password and no privilege:
# anyone may read @@read_only.
read_only=$(mariadb --protocol=tcp --host="$3" --port="$4" --user=haproxy_check \
    --connect-timeout=1 --batch --skip-column-names --execute='SELECT @@read_only' 2>/dev/null) || exit 1
[ "${read_only}" = "0" ]
