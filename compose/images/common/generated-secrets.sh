# Sourced by the entrypoints of Parley's compose images that need secrets (the database
# servers, the nodes). On the first `up`, compose's one-shot `secrets` service writes a
# random value for each secret into the `generated-secrets` volume (one file per
# variable name, see compose/images/node/generate-secrets.sh); an entrypoint takes a
# variable from there only when compose/.env and the shell left it empty, so a value set
# there still wins. `down -v` removes the volume with the data.

generated_secrets_dir=${PARLEY_GENERATED_SECRETS_DIR:-/run/parley-secrets}

# use_generated_secret_when_empty NAME: export NAME from the volume unless it is set.
use_generated_secret_when_empty() {
    local name=$1
    [[ -n ${!name:-} ]] && return 0
    local file=${generated_secrets_dir}/${name}
    if [[ ! -r ${file} || ! -s ${file} ]]; then
        echo "$(basename "$0"): ${name} is empty and ${file} is missing or unreadable: set ${name} in compose/.env," \
            "or let compose's secrets service generate it (docker compose up)" >&2
        exit 1
    fi
    export "${name}=$(<"${file}")"
}
