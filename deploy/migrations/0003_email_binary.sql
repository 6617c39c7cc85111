-- One canonical email: the node stores and looks up emails trimmed, lowercase and in
-- Unicode NFC, and the column compares them byte for byte. Under the accent-insensitive
-- collation `bób@x.io` signed in as `bob@x.io`, with a rate-limit bucket of its own.
-- Existing rows keep their place: every stored email was already trimmed and lowercase,
-- and two rows equal under the old collation could not both exist, so none collide
-- under the binary one. After this statement the node rewrites the few stored emails
-- that are not in NFC (typed with combining accents); one whose NFC form is already
-- taken by another row is left as it is (and logged), so no account is lost or merged.
ALTER TABLE users MODIFY email VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL;
