#!/bin/bash
# Healthy: nginx answers and some node behind it is ready (GET /health/ready is 200).
set -euo pipefail

exec 3<>/dev/tcp/127.0.0.1/80
printf 'GET /health/ready HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
read -r status_line <&3
[[ ${status_line} == *" 200 "* ]]
