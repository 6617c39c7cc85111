#!/bin/bash
# Entrypoint of Parley's nginx image: renders deploy/nginx/nginx.conf with one upstream
# server per node of PARLEY_NODES (comma separated service names) and runs nginx in the
# foreground. With PARLEY_EDGE_TLS_CERT and PARLEY_EDGE_TLS_KEY (files in the mounted
# /etc/parley/edge-tls, or absolute paths) port 80 serves HTTPS and WSS instead of
# plain HTTP.
set -euo pipefail

nodes=${PARLEY_NODES:?set PARLEY_NODES, e.g. node-1,node-2}
node_port=${PARLEY_NODE_HTTP_PORT:-8080}
access_log=${NGINX_ACCESS_LOG:-/dev/stdout}
temp_dir=/var/lib/nginx/parley
config=/etc/nginx/parley.conf

# Same as parley-sim (deploy/nginx/nginx.conf says why): no node is ever marked failed
# (max_fails=0); a request that fails on one node goes on to the next one.
http_upstream_servers=""
websocket_upstream_servers=""
IFS=',' read -r -a node_names <<<"${nodes}"
for node in "${node_names[@]}"; do
    node=${node//[[:space:]]/}
    [[ -n ${node} ]] || continue
    http_upstream_servers+="server ${node}:${node_port} max_fails=0;"$'\n        '
    websocket_upstream_servers+="server ${node}:${node_port} max_fails=0;"$'\n        '
done
if [[ -z ${http_upstream_servers} ]]; then
    echo "parley-nginx: PARLEY_NODES names no node" >&2
    exit 1
fi

# Edge TLS: the template's lines starting with {{when_edge_tls}} or {{when_plain_http}}
# are switched on (empty) or commented out ("# "), as parley-sim does.
edge_tls_dir=/etc/parley/edge-tls
edge_tls_certificate=${PARLEY_EDGE_TLS_CERT:-}
edge_tls_key=${PARLEY_EDGE_TLS_KEY:-}
if [[ -n ${edge_tls_certificate} || -n ${edge_tls_key} ]]; then
    if [[ -z ${edge_tls_certificate} || -z ${edge_tls_key} ]]; then
        echo "parley-nginx: set both PARLEY_EDGE_TLS_CERT and PARLEY_EDGE_TLS_KEY, or neither" >&2
        exit 1
    fi
    [[ ${edge_tls_certificate} == /* ]] || edge_tls_certificate=${edge_tls_dir}/${edge_tls_certificate}
    [[ ${edge_tls_key} == /* ]] || edge_tls_key=${edge_tls_dir}/${edge_tls_key}
    for file in "${edge_tls_certificate}" "${edge_tls_key}"; do
        if [[ ! -r ${file} ]]; then
            echo "parley-nginx: cannot read ${file}: put it in PARLEY_EDGE_TLS_DIR (mounted at ${edge_tls_dir})" >&2
            exit 1
        fi
    done
    when_edge_tls=""
    when_plain_http="# "
else
    edge_tls_certificate=none
    edge_tls_key=none
    when_edge_tls="# "
    when_plain_http=""
fi

mkdir -p "${temp_dir}"
chown www-data:www-data "${temp_dir}"
render-template /etc/parley/templates/nginx.conf "${config}" \
    user_directive="user www-data;" \
    pid_file=/run/nginx.pid \
    error_log=/dev/stderr \
    access_log="${access_log}" \
    temp_dir="${temp_dir}" \
    http_upstream_servers="${http_upstream_servers%$'\n        '}" \
    websocket_upstream_servers="${websocket_upstream_servers%$'\n        '}" \
    listen=80 \
    when_edge_tls="${when_edge_tls}" \
    when_plain_http="${when_plain_http}" \
    edge_tls_certificate="${edge_tls_certificate}" \
    edge_tls_key="${edge_tls_key}"

nginx -t -q -c "${config}"
exec nginx -c "${config}"
