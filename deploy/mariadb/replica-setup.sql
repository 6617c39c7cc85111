-- Runs as root on a freshly initialised replica. An empty gtid_slave_pos replays the
-- master's whole binlog (users included), so no seeding is needed.
-- MASTER_CONNECT_RETRY=1: after the master restarts the replica reconnects within a second.
CHANGE MASTER TO
  MASTER_HOST = '{{master_host}}',
  MASTER_PORT = {{master_port}},
  MASTER_USER = 'repl',
  MASTER_PASSWORD = '{{replication_password}}',
  MASTER_CONNECT_RETRY = 1,
  MASTER_USE_GTID = slave_pos;
START SLAVE;
