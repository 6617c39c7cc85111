#!/bin/bash
# Entrypoint of Parley's HAProxy image: renders deploy/haproxy/haproxy.cfg for the
# compose networks and runs HAProxy in the foreground.
#
# Servers are addressed by service name and re-resolved through Docker's DNS at run
# time: a server that is down when HAProxy starts does not stop it from starting
# (init-addr none), and a container that comes back with another address is found.
set -euo pipefail

master_host=${PARLEY_MASTER_HOST:-master}
replica_1_host=${PARLEY_REPLICA_1_HOST:-replica-1}
replica_2_host=${PARLEY_REPLICA_2_HOST:-replica-2}
config=/etc/haproxy/parley.cfg

# Appended to each server's address: the options that make it resolve through Docker.
dns_options="resolvers docker_dns init-addr last,libc,none resolve-prefer ipv4"
render-template /etc/parley/templates/haproxy.cfg "${config}" \
    stats_socket=/run/haproxy/admin.sock writable_check=/usr/local/bin/parley-writable-check \
    write_bind=:3306 read_bind=:3307 stats_bind=:8404 \
    master_addr="${master_host}:3306 ${dns_options}" \
    replica_1_addr="${replica_1_host}:3306 ${dns_options}" \
    replica_2_addr="${replica_2_host}:3306 ${dns_options}"
cat >>"${config}" <<'RESOLVERS'

# Docker's embedded DNS. hold nx: a name that vanished (its container died) keeps its
# last address for a moment, the health checks decide; it is asked again every second.
resolvers docker_dns
    nameserver docker 127.0.0.11:53
    resolve_retries 3
    timeout resolve 1s
    timeout retry 1s
    hold valid 5s
    hold nx 5s
    hold obsolete 5s
    accepted_payload_size 8192
RESOLVERS

# Every database server on a port of its own (3311 master, 3312 replica-1, 3313
# replica-2): the nodes read each server there and promote a replica when the master
# dies, and after a promotion the servers replicate from each other there, since the
# replicas' network reaches nothing else. Plain forwarding: who is up is the nodes' call.
server_port=3311
for server in "${master_host}" "${replica_1_host}" "${replica_2_host}"; do
    cat >>"${config}" <<SERVER

listen server_${server//-/_}
    bind :${server_port}
    server ${server} ${server}:3306 ${dns_options}
SERVER
    server_port=$((server_port + 1))
done

haproxy -c -q -f "${config}"
# -db: in the foreground. -W: master-worker; as PID 1 HAProxy alone would ignore the
# SIGTERM of `docker stop` (no handler), the master acts on it at once.
exec haproxy -W -db -f "${config}"
