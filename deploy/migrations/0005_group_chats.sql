-- Group chats. A chat is `direct` (two people, found by direct_key) or `group` (a title,
-- members added and leaving). creator_id is who may remove other members; when the
-- creator leaves, the longest-standing member takes the role. Existing chats are direct.
-- Each ADD COLUMN with a default is instant in MariaDB 10.3+: no table copy.
ALTER TABLE chats
    ADD COLUMN kind VARCHAR(8) CHARACTER SET ascii NOT NULL DEFAULT 'direct',
    ADD COLUMN title VARCHAR(200) NULL,
    ADD COLUMN creator_id CHAR(36) CHARACTER SET ascii NULL;
-- Membership changes are messages in the chat's own sequence, so replay and history
-- show them in place: kind is `text` for what people wrote, else the event (`created`,
-- `added`, `left`, `removed`) with subject_id the member it is about.
ALTER TABLE messages
    ADD COLUMN kind VARCHAR(16) CHARACTER SET ascii NOT NULL DEFAULT 'text',
    ADD COLUMN subject_id CHAR(36) CHARACTER SET ascii NULL;
-- Who left a group (or was removed) and the seq of that event: a former member reads the
-- history up to it and nothing after. chat_members keeps current members only, so every
-- query that delivers, replays or counts stays a query on members. A member who comes
-- back loses this row.
CREATE TABLE IF NOT EXISTS chat_former_members (
    chat_id CHAR(36) CHARACTER SET ascii NOT NULL,
    user_id CHAR(36) CHARACTER SET ascii NOT NULL,
    left_seq BIGINT UNSIGNED NOT NULL,
    left_at DATETIME(6) NOT NULL,
    PRIMARY KEY (chat_id, user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
