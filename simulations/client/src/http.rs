//! A typed client of Parley's HTTP API: sign-up, sign-in and the messenger calls, with
//! [`ParleyHttp::request`] for anything else (tests send hostile input through it).

use protocol::auth::{SignUpRequest, TokenPair, UserIdResponse};
use protocol::messenger::{
    ChatMembersResponse, ChatsResponse, CreateChatResponse, MembershipChangeResponse, MessagesPage,
};
pub use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::ClientError;

/// One answer: status, JSON body (Null when not JSON) and the node that served it.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The body parsed as JSON; `Value::Null` when empty or not JSON.
    pub body: Value,
    /// The `x-parley-node` header.
    pub node: Option<String>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The `Retry-After` header, in seconds.
    pub retry_after_seconds: Option<u64>,
}

impl ApiResponse {
    /// The body's `message` field (every error has one).
    pub fn message(&self) -> &str {
        self.body.get("message").and_then(Value::as_str).unwrap_or_default()
    }

    /// The body parsed as `T`, when the status is `expected`.
    fn expect<T: DeserializeOwned>(self, expected: u16, what: &'static str) -> Result<T, ClientError> {
        if self.status != expected {
            return Err(ClientError::UnexpectedStatus {
                what,
                expected,
                status: self.status,
                body: self.body,
            });
        }
        serde_json::from_value(self.body).map_err(|source| ClientError::UnexpectedBody { what, source })
    }
}

/// Longer than any answer Parley gives while healthy or failing over (its database
/// calls time out within seconds), so reaching it means a hang.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long sign-ups and sign-ins of the typed helpers keep honouring 429s.
pub const BUSY_RETRY_WINDOW: std::time::Duration = std::time::Duration::from_secs(120);

/// Talks to one base URL (nginx, or one node directly).
#[derive(Debug, Clone)]
pub struct ParleyHttp {
    base_url: String,
    client: reqwest::Client,
}

impl ParleyHttp {
    /// A client of `base_url` (`http://host:port`, a trailing slash is ignored).
    pub fn new(base_url: impl Into<String>) -> ParleyHttp {
        ParleyHttp {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            // No answer within this is a failure to report, never a reason to wait on.
            client: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .expect("a reqwest client with a timeout"),
        }
    }

    /// A client of `base_url` sending through `client`: e.g. one that trusts a private
    /// CA for an `https://` base URL (`reqwest::Certificate::from_pem` and
    /// `add_root_certificate`). Give it a timeout: requests here have none of their own.
    pub fn with_client(base_url: impl Into<String>, client: reqwest::Client) -> ParleyHttp {
        ParleyHttp {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            client,
        }
    }

    /// The base URL every path is appended to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Any request; `path` includes the query string. The token goes in the
    /// `Authorization` header raw, as the seed's curl commands send it.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Result<ApiResponse, ClientError> {
        let mut request = self.client.request(method.clone(), format!("{}{path}", self.base_url));
        if let Some(token) = token {
            request = request.header("Authorization", token);
        }
        if let Some(body) = body {
            request = request.header("Content-Type", "application/json").body(body.to_owned());
        }
        let transport = |source: reqwest::Error| ClientError::Transport {
            request: format!("{method} {path}"),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let node = header("x-parley-node");
        let content_type = header("content-type");
        let retry_after_seconds = header("retry-after").and_then(|seconds| seconds.trim().parse().ok());
        let text = response.text().await.map_err(transport)?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(ApiResponse {
            status,
            body,
            node,
            content_type,
            retry_after_seconds,
        })
    }

    /// [`ParleyHttp::request`], asked again after the server's `Retry-After` while it
    /// answers 429 (a rate limit or a full hashing queue: nothing was done), for at most
    /// [`BUSY_RETRY_WINDOW`]. What a well-behaved client does; tools that create many
    /// accounts from one address rely on it.
    pub async fn request_honouring_retry_after(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Result<ApiResponse, ClientError> {
        let deadline = tokio::time::Instant::now() + BUSY_RETRY_WINDOW;
        loop {
            let answer = self.request(method.clone(), path, token, body).await?;
            let pause = std::time::Duration::from_secs(answer.retry_after_seconds.unwrap_or(1).clamp(1, 10));
            if answer.status != 429 || tokio::time::Instant::now() + pause > deadline {
                return Ok(answer);
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// `POST /auth/sign-up`, whatever the answer.
    pub async fn sign_up(&self, request: &SignUpRequest) -> Result<ApiResponse, ClientError> {
        self.request(Method::POST, "/auth/sign-up", None, Some(&json_text(request)))
            .await
    }

    /// Signs up and returns the new user id (expects 201; a 429 is retried after its
    /// `Retry-After`).
    pub async fn sign_up_ok(&self, request: &SignUpRequest) -> Result<String, ClientError> {
        let answer = self
            .request_honouring_retry_after(Method::POST, "/auth/sign-up", None, Some(&json_text(request)))
            .await?;
        Ok(answer.expect::<protocol::auth::SignUpResponse>(201, "sign-up")?.user_id)
    }

    /// Signs in (a 429 is retried after its `Retry-After`).
    pub async fn sign_in(&self, email: &str, password: &str) -> Result<TokenPair, ClientError> {
        let body = serde_json::json!({ "email": email, "password": password }).to_string();
        let answer = self
            .request_honouring_retry_after(Method::POST, "/auth/sign-in", None, Some(&body))
            .await?;
        answer.expect(200, "sign-in")
    }

    /// `GET /auth/user/get-by-email`: the user id of `email`.
    pub async fn user_id_by_email(&self, token: &str, email: &str) -> Result<String, ClientError> {
        let path = format!("/auth/user/get-by-email?email={}", urlencode(email));
        let answer = self.request(Method::GET, &path, Some(token), None).await?;
        Ok(answer.expect::<UserIdResponse>(200, "get-by-email")?.user_id)
    }

    /// `POST /messenger/create-chat`: the one-to-one chat with `companion_id`.
    pub async fn create_chat(&self, token: &str, companion_id: &str) -> Result<String, ClientError> {
        let body = serde_json::json!({ "companion_id": companion_id }).to_string();
        let answer = self
            .request(Method::POST, "/messenger/create-chat", Some(token), Some(&body))
            .await?;
        Ok(answer.expect::<CreateChatResponse>(200, "create-chat")?.chat_id)
    }

    /// `POST /messenger/create-group`: a group chat of the caller (its creator) and
    /// `member_ids` (the caller's own id and duplicates are ignored); its chat id.
    pub async fn create_group(&self, token: &str, title: &str, member_ids: &[String]) -> Result<String, ClientError> {
        let body = serde_json::json!({ "title": title, "member_ids": member_ids }).to_string();
        let answer = self
            .request(Method::POST, "/messenger/create-group", Some(token), Some(&body))
            .await?;
        Ok(answer.expect::<CreateChatResponse>(200, "create-group")?.chat_id)
    }

    /// `POST /messenger/chats/{chat_id}/members`: adds `user_id` to a group the caller is
    /// a member of (`changed` is false when already a member).
    pub async fn add_member(
        &self,
        token: &str,
        chat_id: &str,
        user_id: &str,
    ) -> Result<MembershipChangeResponse, ClientError> {
        let body = serde_json::json!({ "user_id": user_id }).to_string();
        let path = format!("/messenger/chats/{chat_id}/members");
        let answer = self.request(Method::POST, &path, Some(token), Some(&body)).await?;
        answer.expect(200, "add-member")
    }

    /// `DELETE /messenger/chats/{chat_id}/members/{user_id}`: the caller leaves (his own
    /// id) or, as the group's creator, removes a member.
    pub async fn remove_member(
        &self,
        token: &str,
        chat_id: &str,
        user_id: &str,
    ) -> Result<MembershipChangeResponse, ClientError> {
        let path = format!("/messenger/chats/{chat_id}/members/{user_id}");
        let answer = self.request(Method::DELETE, &path, Some(token), None).await?;
        answer.expect(200, "remove-member")
    }

    /// `GET /messenger/chats/{chat_id}/members`: a chat's kind, title, creator and members.
    pub async fn group_members(&self, token: &str, chat_id: &str) -> Result<ChatMembersResponse, ClientError> {
        let path = format!("/messenger/chats/{chat_id}/members");
        let answer = self.request(Method::GET, &path, Some(token), None).await?;
        answer.expect(200, "chat-members")
    }

    /// `GET /messenger/chats`.
    pub async fn chats(&self, token: &str) -> Result<ChatsResponse, ClientError> {
        let answer = self.request(Method::GET, "/messenger/chats", Some(token), None).await?;
        answer.expect(200, "chats")
    }

    /// `GET /messenger/messages`: one page of a chat's history.
    pub async fn messages(
        &self,
        token: &str,
        chat_id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<MessagesPage, ClientError> {
        let path = format!("/messenger/messages?chat_id={chat_id}&offset={offset}&limit={limit}");
        let answer = self.request(Method::GET, &path, Some(token), None).await?;
        answer.expect(200, "messages")
    }
}

/// The seed's sign-up body for a person, with an email made unique by `tag`.
pub fn seed_person(name: &str, tag: &str) -> SignUpRequest {
    let lower = name.to_lowercase();
    SignUpRequest {
        email: format!("{lower}.{tag}@email.com"),
        password: "1234567890".to_owned(),
        name: name.to_owned(),
        surname: "Tallor".to_owned(),
        birthday: "1994-04-10T20:21:25+00:00".to_owned(),
        sex: "male".to_owned(),
        city: "New Yourk".to_owned(),
        interests: "programming".to_owned(),
    }
}

fn json_text(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("a request body serialises")
}

fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}
