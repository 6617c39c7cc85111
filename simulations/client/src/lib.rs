//! parley-client: a Rust client of Parley.
//!
//! * [`ParleyHttp`]: the HTTP API (sign-up, sign-in, chats, history), typed.
//! * [`MessengerSocket`]: one messenger websocket, driven frame by frame.
//! * [`ChatClient`]: one user's connection that survives node crashes and outages. It
//!   reconnects through the load balancer, resumes from what it holds, resends what was
//!   not acked with the same client ids (the server stores each once), hands every
//!   message to the application once and in order, and renews its access token over
//!   the open socket.
//!
//! It depends on the wire types of `parley-protocol` and on tokio, tokio-tungstenite and
//! reqwest; nothing of the server. Errors are one [`ClientError`].
//!
//! ```no_run
//! # async fn example() -> Result<(), parley_client::ClientError> {
//! use parley_client::{ChatClient, ChatClientConfig, ChatClientEvent, ParleyHttp};
//!
//! let http = ParleyHttp::new("http://localhost:10000");
//! let tokens = http.sign_in("bob@email.com", "1234567890").await?;
//! let mut config = ChatClientConfig::new("http://localhost:10000", tokens.access_token);
//! config.refresh_token = Some(tokens.refresh_token);
//! let (client, mut events) = ChatClient::start(config);
//! client.send("a-chat-id", "hello")?;
//! while let Some(event) = events.recv().await {
//!     if let ChatClientEvent::Message(message) = event {
//!         println!("{}: {}", message.sender_user_id, message.text);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub mod chat_client;
mod error;
pub mod http;
pub mod socket;

pub use chat_client::{ChatClient, ChatClientConfig, ChatClientEvent, ChatClientStats};
pub use error::ClientError;
pub use http::{ApiResponse, ParleyHttp};
pub use socket::{MessengerSocket, SocketEvent};
