-- Sign-out ends the device: the time each refresh-token family was revoked, so that
-- every node can read the sign-outs of the last access-token lifetime. Nodes tell each
-- other at once; this is how a node that was down or cut off at the time learns them.
-- Families revoked before this migration keep NULL: their access tokens carry no
-- family, cannot be told apart, and expire on their own within the access-token TTL.
ALTER TABLE refresh_tokens
    ADD COLUMN revoked_at DATETIME(6) NULL,
    ADD KEY refresh_tokens_revoked_at (revoked_at);
