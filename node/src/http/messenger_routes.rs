//! `/messenger/...` over HTTP: create a chat, list chats, read history.

use actors::chats::PageRequest;
use protocol::errors::ErrorBody;
use protocol::messenger::{ChatsResponse, CreateChatRequest, CreateChatResponse, MessagesPage};
use warp::http::StatusCode;
use warp::hyper::body::Bytes;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::errors::ApiError;
use super::extract::{authenticated_existing_user, json_body, uuid_field, QueryParameters};
use super::{authorization, body_bytes, json_response, raw_query, respond, with_state};
use crate::app_state::AppState;

/// Page size when `limit` is not given.
const DEFAULT_PAGE_SIZE: u64 = 100;

pub fn routes(state: AppState) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let create_chat = warp::path!("messenger" / "create-chat")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(authorization())
        .and(body_bytes(&state))
        .then(|state, authorization, body| async move { respond(create_chat(state, authorization, body).await) });
    let chats = warp::path!("messenger" / "chats")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(authorization())
        .then(|state, authorization| async move { respond(list_chats(state, authorization).await) });
    let messages = warp::path!("messenger" / "messages")
        .and(warp::get())
        .and(with_state(state))
        .and(authorization())
        .and(raw_query())
        .then(|state, authorization, query| async move { respond(messages(state, authorization, query).await) });
    create_chat.or(chats).unify().or(messages).unify()
}

#[utoipa::path(post, path = "/messenger/create-chat", tag = "messenger", security(("access_token" = [])),
    request_body = CreateChatRequest,
    responses((status = 200, description = "the chat of the pair (the same pair always gets the same chat)", body = CreateChatResponse), (status = 400, description = "bad companion_id, or the caller own id", body = ErrorBody), (status = 401, description = "missing, invalid or expired access token", body = ErrorBody), (status = 403, description = "the caller is in the most chats allowed (limit_reached)", body = ErrorBody), (status = 404, description = "no such user", body = ErrorBody), (status = 503, description = "the database is unavailable; retry", body = ErrorBody)))]
pub(crate) async fn create_chat(
    state: AppState,
    authorization: Option<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authenticated_existing_user(&state, authorization.as_deref()).await?;
    let request: CreateChatRequest = json_body(&body)?;
    let companion = uuid_field("companion_id", &request.companion_id)?;
    let chat_id = state.chats.create_direct_chat(&caller, &companion).await?;
    Ok(json_response(StatusCode::OK, &CreateChatResponse { chat_id }))
}

#[utoipa::path(get, path = "/messenger/chats", tag = "messenger", security(("access_token" = [])),
    responses((status = 200, description = "the caller chats with participants and unread counts", body = ChatsResponse), (status = 401, description = "missing, invalid or expired access token", body = ErrorBody), (status = 503, description = "the database is unavailable; retry", body = ErrorBody)))]
pub(crate) async fn list_chats(state: AppState, authorization: Option<String>) -> Result<Response, ApiError> {
    let caller = authenticated_existing_user(&state, authorization.as_deref()).await?;
    let mut chats = state.chats.list_chats(&caller).await?;
    for participant in chats.iter_mut().flat_map(|chat| chat.participants.iter_mut()) {
        participant.online = state.messaging.online_anywhere(&participant.user_id);
    }
    Ok(json_response(StatusCode::OK, &ChatsResponse { chats }))
}

#[utoipa::path(get, path = "/messenger/messages", tag = "messenger", security(("access_token" = [])),
    params(("chat_id" = String, Query, description = "the chat (UUID)"), ("offset" = Option<u64>, Query, description = "messages with seq above offset (default 0)"), ("limit" = Option<u64>, Query, description = "page size, 1 to 1000 (default 100)")),
    responses((status = 200, description = "one page of the history in seq order", body = MessagesPage), (status = 400, description = "bad input, named in the message", body = ErrorBody), (status = 401, description = "missing, invalid or expired access token", body = ErrorBody), (status = 404, description = "no such chat, or the caller is not in it", body = ErrorBody), (status = 503, description = "the database is unavailable; retry", body = ErrorBody)))]
pub(crate) async fn messages(
    state: AppState,
    authorization: Option<String>,
    query: String,
) -> Result<Response, ApiError> {
    let caller = authenticated_existing_user(&state, authorization.as_deref()).await?;
    let query = QueryParameters::parse(&query)?;
    let chat_id = uuid_field("chat_id", query.required("chat_id")?)?;
    let page = PageRequest {
        offset: query.bounded_integer("offset", 0, 0, i64::MAX as u64)?,
        limit: query.bounded_integer(
            "limit",
            DEFAULT_PAGE_SIZE.min(state.limits.max_page_size),
            1,
            state.limits.max_page_size,
        )?,
    };
    let page = state.chats.messages_page(&caller, &chat_id, page).await?;
    Ok(json_response(StatusCode::OK, &page))
}
