-- Runs once as root on the freshly initialised master. Users are created here only:
-- these statements go into the master's binlog and reach the replicas through replication.

-- No replica can connect before the replication user below exists, so no commit of
-- this script could be acknowledged: semi-synchronous replication waits until the
-- replicas are attached. The configuration turns it on again at every start, and
-- parley-sim turns it on once its replicas have caught up.
SET GLOBAL rpl_semi_sync_master_enabled = OFF;

-- Replicas connect with this user to stream the binlog.
CREATE USER IF NOT EXISTS 'repl'@'{{replication_host}}' IDENTIFIED BY '{{replication_password}}';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'{{replication_host}}';

-- The application user. Deliberately without SUPER and READ ONLY ADMIN: the replicas'
-- read_only must bind it. SLAVE MONITOR lets the nodes measure replication lag.
-- `parley%` covers the production database and the per-test databases (parley_...).
CREATE USER IF NOT EXISTS 'parley'@'{{app_host}}' IDENTIFIED BY '{{app_password}}';
GRANT ALL ON `parley%`.* TO 'parley'@'{{app_host}}';
GRANT SLAVE MONITOR ON *.* TO 'parley'@'{{app_host}}';

-- HAProxy's mysql-check logs in and quits; it cannot send a password and needs no privilege.
CREATE USER IF NOT EXISTS 'haproxy_check'@'{{app_host}}';

-- Root-capable user over TCP, for tests and operators asserting on a specific server
-- (root itself only logs in over the unix socket).
CREATE USER IF NOT EXISTS 'parley_admin'@'{{admin_host}}' IDENTIFIED BY '{{admin_password}}';
GRANT ALL PRIVILEGES ON *.* TO 'parley_admin'@'{{admin_host}}' WITH GRANT OPTION;
