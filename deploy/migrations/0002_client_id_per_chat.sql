-- A client id is unique per (chat, sender), not per sender: clients that number their
-- messages per conversation (Matrix scopes transaction ids per room) reuse ids across
-- chats, and the same id in another chat is another message. Every existing row keeps
-- its place: the old key (user_id, client_id) was stricter than the new one, so no two
-- rows can collide on (chat_id, user_id, client_id). One ALTER, so the table never has
-- neither key.
ALTER TABLE messages
    ADD UNIQUE KEY messages_chat_sender_client (chat_id, user_id, client_id),
    DROP KEY messages_sender_client;
