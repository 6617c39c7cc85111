-- Parley's initial schema. Applied by the first node that starts, on the master only,
-- under a named lock, and recorded in schema_migrations. Statements are separated by
-- a semicolon at the end of a line. SQL is kept portable to MySQL 8.

CREATE TABLE IF NOT EXISTS users (
    id CHAR(36) CHARACTER SET ascii NOT NULL,
    email VARCHAR(255) NOT NULL,
    password_hash VARCHAR(255) CHARACTER SET ascii NOT NULL,
    name VARCHAR(100) NOT NULL,
    surname VARCHAR(100) NOT NULL,
    birthday DATETIME(6) NOT NULL,
    sex VARCHAR(16) NOT NULL,
    city VARCHAR(100) NOT NULL,
    interests TEXT NOT NULL,
    create_time DATETIME(6) NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY users_email (email)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- One row per refresh token ever issued. A token is rotated once; presenting it again
-- means it leaked, and the whole family (every token descended from one sign-in) is revoked.
CREATE TABLE IF NOT EXISTS refresh_tokens (
    id CHAR(36) CHARACTER SET ascii NOT NULL,
    family_id CHAR(36) CHARACTER SET ascii NOT NULL,
    user_id CHAR(36) CHARACTER SET ascii NOT NULL,
    expires_at DATETIME(6) NOT NULL,
    rotated_at DATETIME(6) NULL,
    revoked TINYINT(1) NOT NULL DEFAULT 0,
    create_time DATETIME(6) NOT NULL,
    PRIMARY KEY (id),
    KEY refresh_tokens_family (family_id),
    KEY refresh_tokens_user (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- last_seq is the chat's message counter: a send row-locks it inside the master
-- transaction, so two nodes hosting the same chat can never hand out the same seq.
-- direct_key is "<smaller user id>:<larger user id>" for one-to-one chats, so the same
-- pair always gets the same chat.
CREATE TABLE IF NOT EXISTS chats (
    id CHAR(36) CHARACTER SET ascii NOT NULL,
    direct_key VARCHAR(73) CHARACTER SET ascii NULL,
    last_seq BIGINT UNSIGNED NOT NULL DEFAULT 0,
    create_time DATETIME(6) NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY chats_direct_key (direct_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Per (chat, user) delivery cursors: received_seq moves when the client reports
-- `received`, read_seq when it reports `read`. Resume replays everything above received_seq.
CREATE TABLE IF NOT EXISTS chat_members (
    chat_id CHAR(36) CHARACTER SET ascii NOT NULL,
    user_id CHAR(36) CHARACTER SET ascii NOT NULL,
    received_seq BIGINT UNSIGNED NOT NULL DEFAULT 0,
    read_seq BIGINT UNSIGNED NOT NULL DEFAULT 0,
    joined_at DATETIME(6) NOT NULL,
    PRIMARY KEY (chat_id, user_id),
    KEY chat_members_user (user_id, chat_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- (chat_id, seq) is gap-free and unique per chat; (user_id, client_id) makes a
-- retried send idempotent: stored once, acked with the same id and seq.
CREATE TABLE IF NOT EXISTS messages (
    id CHAR(36) CHARACTER SET ascii NOT NULL,
    chat_id CHAR(36) CHARACTER SET ascii NOT NULL,
    seq BIGINT UNSIGNED NOT NULL,
    user_id CHAR(36) CHARACTER SET ascii NOT NULL,
    client_id VARCHAR(64) CHARACTER SET ascii NULL,
    text TEXT NOT NULL,
    create_time DATETIME(6) NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY messages_chat_seq (chat_id, seq),
    UNIQUE KEY messages_sender_client (user_id, client_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
