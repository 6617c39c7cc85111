//! Groups over HTTP: create one, add and remove members, list them. The membership event
//! each change stores is delivered at once to the sessions of those it concerns, on every
//! node, as any message is.

use std::sync::Arc;

use actors::chats::MembershipChange;
use protocol::errors::ErrorBody;
use protocol::messenger::{
    AddMemberRequest, ChatMembersResponse, CreateChatResponse, CreateGroupRequest, MembershipChangeResponse,
};
use protocol::websocket::{DeliveredMessage, DeliveryPayload};
use warp::http::StatusCode;
use warp::hyper::body::Bytes;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::errors::ApiError;
use super::extract::{authenticated_existing_user, json_body, uuid_field};
use super::{authorization, body_bytes, json_response, respond, with_state};
use crate::app_state::AppState;

pub fn routes(state: AppState) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let create_group = warp::path!("messenger" / "create-group")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(authorization())
        .and(body_bytes(&state))
        .then(|state, authorization, body| async move { respond(create_group(state, authorization, body).await) });
    let add_member = warp::path!("messenger" / "chats" / String / "members")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(authorization())
        .and(body_bytes(&state))
        .then(|chat_id, state, authorization, body| async move {
            respond(add_member(state, authorization, chat_id, body).await)
        });
    let list_members = warp::path!("messenger" / "chats" / String / "members")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(authorization())
        .then(|chat_id, state, authorization| async move { respond(members(state, authorization, chat_id).await) });
    let remove_member = warp::path!("messenger" / "chats" / String / "members" / String)
        .and(warp::delete())
        .and(with_state(state))
        .and(authorization())
        .then(|chat_id, user_id, state, authorization| async move {
            respond(remove_member(state, authorization, chat_id, user_id).await)
        });
    create_group
        .or(add_member)
        .unify()
        .or(list_members)
        .unify()
        .or(remove_member)
        .unify()
}

/// Hands a membership event to the sessions of `recipients`, here and on every peer
/// hosting any of them.
fn deliver_event(state: &AppState, event: DeliveredMessage, recipients: &[String]) {
    let delivery = Arc::new(DeliveryPayload {
        chat_id: event.chat_id.clone(),
        messages: vec![event],
    });
    let span = tracing::info_span!("group.deliver_event", chat_id = %delivery.chat_id);
    state.messaging.deliver(recipients, delivery, None, &span);
}

fn change_response(change: MembershipChange, state: &AppState) -> Response {
    let changed = change.delivery.is_some();
    if let Some((event, recipients)) = change.delivery {
        deliver_event(state, event, &recipients);
    }
    json_response(
        StatusCode::OK,
        &MembershipChangeResponse {
            chat_id: change.chat_id,
            user_id: change.user_id,
            changed,
            seq: change.seq,
        },
    )
}

/// Counts `additions` members added by `caller` against the per-minute limit.
fn check_additions(state: &AppState, caller: &str, additions: usize) -> Result<(), ApiError> {
    let additions = u32::try_from(additions).unwrap_or(u32::MAX);
    state
        .member_additions_limit
        .check_many(caller, additions)
        .map_err(|wait| {
            ApiError::too_many_requests(
                "too many members added in the last minute; try again later",
                wait.as_secs_f64().ceil() as u64,
            )
        })
}

#[utoipa::path(post, path = "/messenger/create-group", tag = "messenger", security(("access_token" = [])),
    request_body = CreateGroupRequest,
    responses((status = 200, description = "the new group; the caller is its creator and a member", body = CreateChatResponse), (status = 400, description = "bad title or member id", body = ErrorBody), (status = 401, description = "missing, invalid or expired access token", body = ErrorBody), (status = 403, description = "too many members, or someone is in the most groups allowed (limit_reached)", body = ErrorBody), (status = 404, description = "no such user", body = ErrorBody), (status = 429, description = "too many members added in the last minute (rate_limited)", body = ErrorBody), (status = 503, description = "the database is unavailable; retry", body = ErrorBody)))]
pub(crate) async fn create_group(
    state: AppState,
    authorization: Option<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authenticated_existing_user(&state, authorization.as_deref()).await?;
    let request: CreateGroupRequest = json_body(&body)?;
    let member_ids = request
        .member_ids
        .iter()
        .map(|member| uuid_field("member_ids", member))
        .collect::<Result<Vec<_>, _>>()?;
    // Bad titles and oversized groups are refused before they count against the
    // caller's additions.
    let group = state.chats.check_new_group(&caller, &request.title, &member_ids)?;
    check_additions(&state, &caller, group.members.len() - 1)?;
    let created = state.chats.create_group(group).await?;
    deliver_event(&state, created.event, &created.members);
    Ok(json_response(
        StatusCode::OK,
        &CreateChatResponse {
            chat_id: created.chat_id,
        },
    ))
}

#[utoipa::path(post, path = "/messenger/chats/{chat_id}/members", tag = "messenger", security(("access_token" = [])),
    params(("chat_id" = String, Path, description = "the group (UUID)")),
    request_body = AddMemberRequest,
    responses((status = 200, description = "added (or already a member: changed is false)", body = MembershipChangeResponse), (status = 400, description = "bad id, or a one-to-one chat", body = ErrorBody), (status = 401, description = "missing, invalid or expired access token", body = ErrorBody), (status = 403, description = "the group is full, or the user is in the most groups allowed (limit_reached)", body = ErrorBody), (status = 404, description = "no such group or user, or the caller is not a member", body = ErrorBody), (status = 429, description = "too many members added in the last minute (rate_limited)", body = ErrorBody), (status = 503, description = "the database is unavailable; retry", body = ErrorBody)))]
pub(crate) async fn add_member(
    state: AppState,
    authorization: Option<String>,
    chat_id: String,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authenticated_existing_user(&state, authorization.as_deref()).await?;
    let chat_id = uuid_field("chat_id", &chat_id)?;
    let request: AddMemberRequest = json_body(&body)?;
    let user = uuid_field("user_id", &request.user_id)?;
    check_additions(&state, &caller, 1)?;
    let change = state.chats.add_member(&caller, &chat_id, &user).await?;
    Ok(change_response(change, &state))
}

#[utoipa::path(delete, path = "/messenger/chats/{chat_id}/members/{user_id}", tag = "messenger", security(("access_token" = [])),
    params(("chat_id" = String, Path, description = "the group (UUID)"), ("user_id" = String, Path, description = "the member to remove; the caller's own id to leave")),
    responses((status = 200, description = "removed, or left", body = MembershipChangeResponse), (status = 400, description = "bad id, or a one-to-one chat", body = ErrorBody), (status = 401, description = "missing, invalid or expired access token", body = ErrorBody), (status = 403, description = "only the group's creator removes others (forbidden)", body = ErrorBody), (status = 404, description = "no such group, the caller is not a member, or the user is not", body = ErrorBody), (status = 503, description = "the database is unavailable; retry", body = ErrorBody)))]
pub(crate) async fn remove_member(
    state: AppState,
    authorization: Option<String>,
    chat_id: String,
    user_id: String,
) -> Result<Response, ApiError> {
    let caller = authenticated_existing_user(&state, authorization.as_deref()).await?;
    let chat_id = uuid_field("chat_id", &chat_id)?;
    let user = uuid_field("user_id", &user_id)?;
    let change = state.chats.remove_member(&caller, &chat_id, &user).await?;
    Ok(change_response(change, &state))
}

#[utoipa::path(get, path = "/messenger/chats/{chat_id}/members", tag = "messenger", security(("access_token" = [])),
    params(("chat_id" = String, Path, description = "the chat (UUID)")),
    responses((status = 200, description = "the members, longest-standing first, with presence", body = ChatMembersResponse), (status = 400, description = "bad chat_id", body = ErrorBody), (status = 401, description = "missing, invalid or expired access token", body = ErrorBody), (status = 404, description = "no such chat, or the caller is not a member", body = ErrorBody), (status = 503, description = "the database is unavailable; retry", body = ErrorBody)))]
pub(crate) async fn members(
    state: AppState,
    authorization: Option<String>,
    chat_id: String,
) -> Result<Response, ApiError> {
    let caller = authenticated_existing_user(&state, authorization.as_deref()).await?;
    let chat_id = uuid_field("chat_id", &chat_id)?;
    let mut found: ChatMembersResponse = state.chats.members(&caller, &chat_id).await?;
    for member in &mut found.members {
        member.online = state.messaging.online_anywhere(&member.user_id);
    }
    Ok(json_response(StatusCode::OK, &found))
}
