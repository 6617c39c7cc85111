#!/usr/bin/env bash
# Installs what a local Parley cluster (parley-sim) and its tests need on Debian/Ubuntu
# (iptables: the partition test cuts a cluster link with a firewall rule on loopback;
# chromium, chromium-driver and a font: the browser test drives the web page headless;
# debootstrap: compose/build-images.sh makes the Debian base image with it when no
# registry is reachable; Docker and its compose tool, for the compose deployment and its
# test, only when missing).
# Idempotent: packages already present are not touched, and apt-get update runs only
# when something is missing. parley-sim runs its own MariaDB, HAProxy and nginx
# processes on its own ports, so the distribution's system services are kept stopped.
set -euo pipefail

# chromium, chromium-driver: the browser test of the web page. fonts-dejavu-core: the font
# `parley-sim failover --plot` lays out its labels with (PNG or SVG).
# debootstrap: the compose base image. mariadb-backup: `parley-sim backup` and `restore`
# (Debian's, the same release as mariadb-server, as mariadb-backup requires).
# ejabberd, erlang-p1-mysql (its MySQL driver, only suggested by the package):
# `parley-sim bench peer` runs two ejabberd nodes of its own beside Parley.
packages=(mariadb-server mariadb-client mariadb-backup haproxy nginx-light wrk jq curl iptables chromium chromium-driver fonts-dejavu-core debootstrap ejabberd erlang-p1-mysql)
system_services=(mariadb nginx haproxy ejabberd)

if [[ ${EUID} -ne 0 ]]; then
    sudo_prefix=(sudo)
else
    sudo_prefix=()
fi

package_is_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

# Docker from Debian's packages only where there is no docker at all: a machine with
# Docker's own packages (docker-ce, the compose plugin) keeps them.
if ! command -v docker >/dev/null 2>&1; then
    packages+=(docker.io)
fi
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
    packages+=(docker-compose)
fi

missing_packages=()
for package in "${packages[@]}"; do
    if ! package_is_installed "${package}"; then
        missing_packages+=("${package}")
    fi
done

policy_rc_installed_by_us=0
remove_policy_rc() {
    if [[ ${policy_rc_installed_by_us} -eq 1 ]]; then
        "${sudo_prefix[@]}" rm -f /usr/sbin/policy-rc.d
    fi
}
trap remove_policy_rc EXIT

if [[ ${#missing_packages[@]} -gt 0 ]]; then
    echo "installing: ${missing_packages[*]}"
    # policy-rc.d exiting 101 is Debian's documented way to keep maintainer scripts
    # from starting services (which would take ports 3306 and 80). Leave an existing
    # policy alone.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo_prefix[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${sudo_prefix[@]}" chmod 755 /usr/sbin/policy-rc.d
        policy_rc_installed_by_us=1
    fi
    "${sudo_prefix[@]}" apt-get update
    "${sudo_prefix[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing_packages[@]}"
    remove_policy_rc
    policy_rc_installed_by_us=0
else
    echo "all packages present: ${packages[*]}"
fi

# Ask the init system, not the process table: parley-sim's own mariadbd, nginx and
# haproxy processes must survive this script.
service_is_running() {
    local service=$1
    if [[ -d /run/systemd/system ]]; then
        systemctl is-active --quiet "${service}"
    elif [[ -x /etc/init.d/${service} ]]; then
        "${sudo_prefix[@]}" /etc/init.d/"${service}" status >/dev/null 2>&1
    else
        return 1
    fi
}

stop_service() {
    local service=$1
    if [[ -d /run/systemd/system ]]; then
        "${sudo_prefix[@]}" systemctl stop "${service}"
    else
        "${sudo_prefix[@]}" /etc/init.d/"${service}" stop
    fi
}

for service in "${system_services[@]}"; do
    if service_is_running "${service}"; then
        echo "stopping system service ${service} (parley-sim runs its own)"
        stop_service "${service}" || echo "warning: could not stop ${service}" >&2
    fi
done

for package in "${packages[@]}"; do
    if ! package_is_installed "${package}"; then
        echo "error: ${package} is still not installed" >&2
        exit 1
    fi
done
# The compose test needs a running Docker engine; start it if the init system can.
if ! docker info >/dev/null 2>&1; then
    echo "starting the docker engine"
    if [[ -d /run/systemd/system ]]; then
        "${sudo_prefix[@]}" systemctl start docker || true
    elif [[ -x /etc/init.d/docker ]]; then
        "${sudo_prefix[@]}" /etc/init.d/docker start || true
    fi
    for _ in $(seq 1 50); do
        docker info >/dev/null 2>&1 && break
        sleep 0.2
    done
    docker info >/dev/null 2>&1 || echo "warning: the docker engine is not running (the compose test needs it)" >&2
fi

# websocat, the seed's websocket client, is not packaged by Debian: build it from
# crates.io (about a minute) when cargo is here and it is missing.
websocat_version=1.14.1
if ! command -v websocat >/dev/null 2>&1 && [[ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/websocat" ]]; then
    if command -v cargo >/dev/null 2>&1; then
        echo "installing websocat ${websocat_version} with cargo"
        cargo install --locked --quiet websocat --version "${websocat_version}"
    else
        echo "note: no cargo, websocat not installed (the websocat test needs it)" >&2
    fi
fi

# cargo-fuzz runs the fuzz targets in fuzz/ (node/tests/fuzzing.rs runs each for a bounded
# time): built from crates.io (about a minute) when cargo is here and it is missing.
cargo_fuzz_version=0.13.2
if ! command -v cargo-fuzz >/dev/null 2>&1 && [[ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo-fuzz" ]]; then
    if command -v cargo >/dev/null 2>&1; then
        echo "installing cargo-fuzz ${cargo_fuzz_version} with cargo"
        cargo install --locked --quiet cargo-fuzz --version "${cargo_fuzz_version}"
    else
        echo "note: no cargo, cargo-fuzz not installed (the fuzzing test needs it)" >&2
    fi
fi

# schemathesis (PyPI) fuzzes a node against its own OpenAPI document in the tests.
schemathesis_version=4.32.5
if ! python3 -c "import importlib.metadata as m; assert m.version('schemathesis') == '${schemathesis_version}'" 2>/dev/null; then
    if python3 -m pip --version >/dev/null 2>&1; then
        echo "installing schemathesis ${schemathesis_version} with pip"
        python3 -m pip install --quiet --disable-pip-version-check "schemathesis==${schemathesis_version}"
    else
        echo "note: no pip, schemathesis not installed (the OpenAPI fuzz test needs it)" >&2
    fi
fi

echo "ready: mariadb $(mariadbd --version 2>/dev/null | awk '{print $3}'), $(haproxy -v | head -n1 | awk '{print "haproxy", $3}'), $(nginx -v 2>&1 | sed 's|.*/|nginx |')"
