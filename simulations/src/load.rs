//! The load generators that the failover experiment, the benchmarks and the compose test
//! all run: users and chats made through the HTTP API, get-by-email and create-chat
//! loops, chat pairs on [`parley_client::ChatClient`]s that count every lost and
//! duplicated message, and the latency samples they all keep.

pub mod chat_load;
pub mod http_load;
pub mod latency_samples;
pub mod load_users;
