#!/bin/bash
# Compose's one-shot `secrets` service: on the first `up`, one random secret per name
# into the `generated-secrets` volume, one file each; later `up`s keep what is there
# (the MariaDB passwords were stored in the databases' volumes on their first start and
# must not change under them). `down -v` removes the volume with the data, and the next
# `up` generates new ones. Entrypoints read them through generated-secrets.sh, only for
# variables left empty.
#
# Runs as the node image's `parley` user, which owns the volume (the image's mount point
# is its, and Docker gives a new volume the mount point's owner): the files are readable
# by the nodes and by the database servers' root, and by nobody else.
set -euo pipefail

secrets_dir=${PARLEY_GENERATED_SECRETS_DIR:-/run/parley-secrets}
secret_names=(PARLEY_JWT_SECRET PARLEY_CLUSTER_COOKIE MARIADB_APP_PASSWORD MARIADB_REPLICATION_PASSWORD MARIADB_ADMIN_PASSWORD)

umask 077
for name in "${secret_names[@]}"; do
    file=${secrets_dir}/${name}
    if [[ -s ${file} ]]; then
        echo "parley-secrets: ${name} kept"
        continue
    fi
    # 32 random bytes as 64 hex digits: above the nodes' 32-byte minimum, and in the
    # alphabet MariaDB passwords and mysql:// URLs take without escaping. Written whole
    # under another name first, so no reader ever sees half a secret.
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"${file}.new"
    mv "${file}.new" "${file}"
    echo "parley-secrets: ${name} generated"
done
