#!/bin/bash
# Healthy: GET /health/ready answers 200 (migrations applied, a database reachable),
# asked with bash's /dev/tcp so the image needs no HTTP client.
set -euo pipefail

port=${PARLEY_LISTEN##*:}
exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET /health/ready HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
read -r status_line <&3
[[ ${status_line} == *" 200 "* ]]
