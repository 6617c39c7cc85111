#!/bin/bash
# Entrypoint of Parley's node image. Fills in what a container knows about itself:
#   PARLEY_NODE_NAME and PARLEY_CLUSTER_ADVERTISE_HOST default to the container's host
#   name (set it to the service name: peers and nginx reach the node by that name);
#   PARLEY_CLUSTER_SEEDS defaults to every node of PARLEY_NODES on the cluster port (a
#   node skips itself), so all nodes share one list.
set -euo pipefail

host_name=$(hostname)
export PARLEY_NODE_NAME=${PARLEY_NODE_NAME:-${host_name}}
export PARLEY_CLUSTER_ADVERTISE_HOST=${PARLEY_CLUSTER_ADVERTISE_HOST:-${host_name}}
if [[ -z ${PARLEY_CLUSTER_SEEDS:-} && -n ${PARLEY_NODES:-} ]]; then
    cluster_port=${PARLEY_CLUSTER_LISTEN##*:}
    seeds=()
    IFS=',' read -r -a node_names <<<"${PARLEY_NODES}"
    for node in "${node_names[@]}"; do
        node=${node//[[:space:]]/}
        [[ -n ${node} ]] && seeds+=("${node}:${cluster_port}")
    done
    PARLEY_CLUSTER_SEEDS=$(IFS=','; echo "${seeds[*]}")
    export PARLEY_CLUSTER_SEEDS
fi
exec /usr/local/bin/parley "$@"
