#!/bin/bash
# Entrypoint of Parley's node image. Fills in what a container knows about itself:
#   PARLEY_NODE_NAME and PARLEY_CLUSTER_ADVERTISE_HOST default to the container's host
#   name (set it to the service name: peers and nginx reach the node by that name);
#   PARLEY_CLUSTER_SEEDS defaults to every node of PARLEY_NODES on the cluster port (a
#   node skips itself), so all nodes share one list;
#   PARLEY_JWT_SECRET, PARLEY_CLUSTER_COOKIE, MARIADB_APP_PASSWORD and
#   MARIADB_ADMIN_PASSWORD, when empty, come from compose's generated secrets; the app
#   password replaces `{{app_password}}` in PARLEY_MASTER_URL and PARLEY_READ_URLS, the
#   admin password `{{admin_password}}` in PARLEY_DATABASE_SERVERS (compose cannot know
#   a generated one).
set -euo pipefail

# shellcheck source=../common/generated-secrets.sh
source /usr/local/lib/parley/generated-secrets.sh

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

use_generated_secret_when_empty PARLEY_JWT_SECRET
use_generated_secret_when_empty PARLEY_CLUSTER_COOKIE
# fill_in_password VARIABLE PLACEHOLDER SECRET: PLACEHOLDER in VARIABLE's URLs becomes
# the secret's value (taken from the generated ones when the environment has none).
fill_in_password() {
    local url_variable=$1 placeholder=$2 secret=$3
    local urls=${!url_variable:-}
    if [[ ${urls} == *"${placeholder}"* ]]; then
        use_generated_secret_when_empty "${secret}"
        export "${url_variable}=${urls//"${placeholder}"/"${!secret}"}"
    fi
}
fill_in_password PARLEY_MASTER_URL '{{app_password}}' MARIADB_APP_PASSWORD
fill_in_password PARLEY_READ_URLS '{{app_password}}' MARIADB_APP_PASSWORD
fill_in_password PARLEY_DATABASE_SERVERS '{{admin_password}}' MARIADB_ADMIN_PASSWORD
# The node reads the passwords from its URLs; no need to hand them on twice.
unset MARIADB_APP_PASSWORD MARIADB_ADMIN_PASSWORD
exec /usr/local/bin/parley "$@"
