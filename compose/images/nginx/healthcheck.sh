#!/bin/bash
# Healthy: nginx answers and some node behind it is ready (GET /health/ready is 200).
# With edge TLS the request goes over TLS (plain HTTP would only get a redirect); the
# certificate is not checked: this asks whether nginx serves, not who it is.
set -euo pipefail

request=$'GET /health/ready HTTP/1.0\r\nHost: localhost\r\n\r\n'
if [[ -n ${PARLEY_EDGE_TLS_CERT:-} ]]; then
    status_line=$(printf '%s' "${request}" \
        | timeout 4 openssl s_client -quiet -connect 127.0.0.1:80 2>/dev/null | head -n 1) || true
else
    exec 3<>/dev/tcp/127.0.0.1/80
    printf '%s' "${request}" >&3
    read -r status_line <&3
fi
[[ ${status_line} == *" 200 "* ]]
