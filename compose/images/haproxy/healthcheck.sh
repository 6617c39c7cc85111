#!/bin/bash
# Healthy: the read backend has a live server, read from HAProxy's own stats (CSV) with
# bash's /dev/tcp, so no HTTP client is needed. Not the write frontend: which server
# takes writes is the nodes' call (automatic failover), and when the whole stack starts
# again after a failover none does until the nodes, which wait for this check, promote
# one.
set -euo pipefail

exec 3<>/dev/tcp/127.0.0.1/8404
printf 'GET /stats;csv HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
stats=$(cat <&3)
# Field 1: proxy, 2: server, 18: status.
awk -F, '
    $1 == "mariadb_read" && $2 == "BACKEND" && $18 ~ /^UP/ { read_up = 1 }
    END { exit !read_up }
' <<<"${stats}"
