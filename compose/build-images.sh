#!/usr/bin/env bash
# Builds the images of Parley's docker compose deployment:
#   parley-mariadb, parley-haproxy, parley-nginx  Debian's packages + deploy/'s configs
#   parley-node                                   the `parley` binary built on this host
# all FROM one Debian bookworm base image (build argument BASE_IMAGE).
#
# Works without any container registry: when the base image is neither present nor
# pullable, it is made from Debian's own packages with debootstrap and `docker import`
# (about a minute, once; later runs reuse it). The node image copies a host-built
# binary, so no Rust image is needed either.
#
# usage: compose/build-images.sh [--parley-binary PATH] [--tag TAG] [--base-image IMAGE]
#   --parley-binary  the `parley` executable to ship (default: target/release/parley,
#                    built with `cargo build --release -p parley-node` when missing).
#                    It runs in a bookworm image, so build it on Debian 12 (or older).
#   --tag            tag of the four images (default: $PARLEY_IMAGE_TAG, else `local`)
#   --base-image     the bookworm base (default: $PARLEY_BASE_IMAGE, else debian:bookworm)
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian) for debootstrap.
set -euo pipefail

compose_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(dirname "${compose_dir}")

parley_binary=""
tag=${PARLEY_IMAGE_TAG:-local}
base_image=${PARLEY_BASE_IMAGE:-debian:bookworm}
# What this script names a base it makes itself: not `debian:bookworm`, which would pass
# a home-made root file system off as Docker's official image.
bootstrapped_base_image=parley-debian:bookworm
debian_mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

while [[ $# -gt 0 ]]; do
    case $1 in
        --parley-binary) parley_binary=$2; shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        --base-image) base_image=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-images: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [[ ${EUID} -ne 0 ]]; then
    sudo_prefix=(sudo)
else
    sudo_prefix=()
fi

# The legacy builder takes a local image as FROM without asking a registry, and it is
# there on every engine (a BuildKit without its buildx client refuses to start).
export DOCKER_BUILDKIT=0

started_at=$(date +%s)
elapsed() {
    echo "$(( $(date +%s) - started_at )) s"
}

image_exists() {
    docker image inspect "$1" >/dev/null 2>&1
}

# debootstrap's minimal bookworm, tuned as Docker's official image is: services never
# start inside a build (policy-rc.d), apt knows the updates and security suites, and no
# package lists or downloaded packages are left in the image.
bootstrap_base_image() {
    if ! command -v debootstrap >/dev/null 2>&1; then
        echo "build-images: debootstrap is missing; run deploy/install.sh (or apt-get install debootstrap)" >&2
        exit 1
    fi
    local root
    root=$(mktemp -d /var/tmp/parley-debootstrap.XXXXXX)
    # The root file system belongs to root; remove it even when something fails.
    trap '"${sudo_prefix[@]}" rm -rf "${root}"' EXIT
    echo "build-images: debootstrap bookworm from ${debian_mirror} (about a minute)"
    "${sudo_prefix[@]}" debootstrap --variant=minbase bookworm "${root}/rootfs" "${debian_mirror}" \
        >"${root}/debootstrap.log" 2>&1 || {
        tail -n 30 "${root}/debootstrap.log" >&2
        exit 1
    }
    "${sudo_prefix[@]}" bash -euo pipefail -c '
        rootfs=$1 mirror=$2
        printf "#!/bin/sh\nexit 101\n" >"${rootfs}/usr/sbin/policy-rc.d"
        chmod 755 "${rootfs}/usr/sbin/policy-rc.d"
        rm -f "${rootfs}/etc/apt/sources.list"
        cat >"${rootfs}/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: ${mirror}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
        rm -rf "${rootfs}"/var/lib/apt/lists/* "${rootfs}"/var/cache/apt/archives/*.deb
    ' bash "${root}/rootfs" "${debian_mirror}"
    "${sudo_prefix[@]}" tar --numeric-owner -C "${root}/rootfs" -c . |
        docker import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' - "${bootstrapped_base_image}" >/dev/null
    "${sudo_prefix[@]}" rm -rf "${root}"
    trap - EXIT
    echo "build-images: imported ${bootstrapped_base_image} (at $(elapsed))"
}

choose_base_image() {
    if image_exists "${base_image}"; then
        echo "build-images: base image ${base_image} (present)"
        return
    fi
    if docker pull --quiet "${base_image}" >/dev/null 2>&1; then
        echo "build-images: base image ${base_image} (pulled)"
        return
    fi
    echo "build-images: ${base_image} is neither present nor pullable; using ${bootstrapped_base_image}"
    base_image=${bootstrapped_base_image}
    if image_exists "${base_image}"; then
        echo "build-images: base image ${base_image} (made earlier)"
    else
        bootstrap_base_image
    fi
}

resolve_parley_binary() {
    if [[ -z ${parley_binary} ]]; then
        parley_binary=${CARGO_TARGET_DIR:-${repo_dir}/target}/release/parley
        if [[ ! -x ${parley_binary} ]]; then
            echo "build-images: building ${parley_binary}"
            (cd "${repo_dir}" && cargo build --release -p parley-node)
        fi
    fi
    if [[ ! -x ${parley_binary} ]]; then
        echo "build-images: ${parley_binary} is not an executable" >&2
        exit 1
    fi
}

# Each image gets a small build context of its own: its directory, the shared template
# renderer and generated-secrets reader, and the files it needs from elsewhere (`SOURCE`
# or `SOURCE:NAME_IN_CONTEXT`).
# Nothing else of the repository (a target/ of several GB, say) is sent to the engine.
build_image() {
    local name=$1
    shift
    local context
    context=$(mktemp -d /var/tmp/parley-image-context.XXXXXX)
    cp -a "${compose_dir}/images/${name}/." "${context}/"
    cp "${compose_dir}/images/common/render-template.sh" "${compose_dir}/images/common/generated-secrets.sh" \
        "${context}/"
    local extra source name_in_context
    for extra in "$@"; do
        source=${extra%%:*}
        name_in_context=${extra#*:}
        [[ ${extra} == *:* ]] || name_in_context=$(basename "${source}")
        cp "${source}" "${context}/${name_in_context}"
    done
    local previous_id
    previous_id=$(docker image inspect --format '{{.Id}}' "parley-${name}:${tag}" 2>/dev/null || true)
    if ! docker build --build-arg "BASE_IMAGE=${base_image}" -t "parley-${name}:${tag}" "${context}" \
        >"${context}.log" 2>&1; then
        tail -n 40 "${context}.log" >&2
        echo "build-images: building parley-${name}:${tag} failed (log above)" >&2
        rm -rf "${context}" "${context}.log"
        exit 1
    fi
    rm -rf "${context}" "${context}.log"
    # A rebuilt image (a new binary, say) leaves its predecessor untagged: remove it
    # unless something still uses it, so repeated builds do not fill the disk.
    local current_id
    current_id=$(docker image inspect --format '{{.Id}}' "parley-${name}:${tag}")
    if [[ -n ${previous_id} && ${previous_id} != "${current_id}" ]]; then
        docker rmi "${previous_id}" >/dev/null 2>&1 || true
    fi
    echo "build-images: parley-${name}:${tag} (at $(elapsed))"
}

resolve_parley_binary
choose_base_image
build_image mariadb "${repo_dir}/deploy/mariadb/master.cnf" "${repo_dir}/deploy/mariadb/replica.cnf" \
    "${repo_dir}/deploy/mariadb/bootstrap-master.sql" "${repo_dir}/deploy/mariadb/replica-setup.sql"
build_image haproxy "${repo_dir}/deploy/haproxy/haproxy.cfg" "${repo_dir}/deploy/haproxy/writable-check.sh"
build_image nginx "${repo_dir}/deploy/nginx/nginx.conf"
build_image node "${parley_binary}:parley"
echo "build-images: done in $(elapsed): parley-{mariadb,haproxy,nginx,node}:${tag} on ${base_image}"
