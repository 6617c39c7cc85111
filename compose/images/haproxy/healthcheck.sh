#!/bin/bash
# Healthy: the write frontend's master is up and the read backend has a live server,
# read from HAProxy's own stats (CSV) with bash's /dev/tcp, so no HTTP client is needed.
set -euo pipefail

exec 3<>/dev/tcp/127.0.0.1/8404
printf 'GET /stats;csv HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
stats=$(cat <&3)
# Field 1: proxy, 2: server, 18: status.
awk -F, '
    $1 == "mariadb_write" && $2 == "master" && $18 ~ /^UP/ { write_up = 1 }
    $1 == "mariadb_read" && $2 == "BACKEND" && $18 ~ /^UP/ { read_up = 1 }
    END { exit !(write_up && read_up) }
' <<<"${stats}"
