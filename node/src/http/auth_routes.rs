//! `/auth/...`: sign-up, sign-in, token refresh, user lookups.

use std::net::IpAddr;

use chrono::Utc;
use protocol::auth::{
    RefreshTokenRequest, SignInRequest, SignUpRequest, SignUpResponse, TokenPair, UserIdResponse, UserProfile,
};
use protocol::errors::ErrorBody;
use uuid::Uuid;
use warp::http::StatusCode;
use warp::hyper::body::Bytes;
use warp::reply::Response;
use warp::{Filter, Rejection};

use actors::accounts::validation::validate_sign_up;
use actors::accounts::{AccountError, EmailLookup, RefreshTokenRecord, RotationOutcome};

use super::errors::ApiError;
use super::extract::{authenticated_user, json_body, require_existing_user, QueryParameters, USER_GONE};
use super::rate_limits::client_address;
use super::{authorization, body_bytes, json_response, raw_query, respond, with_state};
use crate::app_state::AppState;
use crate::http_server::PeerAddress;

pub fn routes(state: AppState) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let sign_up = warp::path!("auth" / "sign-up")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(warp::ext::optional::<PeerAddress>())
        .and(warp::header::optional::<String>("x-real-ip"))
        .and(body_bytes(&state))
        .then(
            |state: AppState, peer: Option<PeerAddress>, real_ip: Option<String>, body| async move {
                let client = client_address(
                    peer.map(|PeerAddress(peer)| peer),
                    real_ip.as_deref(),
                    &state.trusted_proxies,
                );
                respond(sign_up(state, client, body).await)
            },
        );
    let sign_in = warp::path!("auth" / "sign-in")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(warp::ext::optional::<PeerAddress>())
        .and(warp::header::optional::<String>("x-real-ip"))
        .and(body_bytes(&state))
        .then(
            |state: AppState, peer: Option<PeerAddress>, real_ip: Option<String>, body| async move {
                let client = client_address(
                    peer.map(|PeerAddress(peer)| peer),
                    real_ip.as_deref(),
                    &state.trusted_proxies,
                );
                respond(sign_in(state, client, body).await)
            },
        );
    let refresh = warp::path!("auth" / "token")
        .and(warp::put())
        .and(with_state(state.clone()))
        .and(body_bytes(&state))
        .then(|state, body| async move { respond(refresh(state, body).await) });
    let sign_out = warp::path!("auth" / "sign-out")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(body_bytes(&state))
        .then(|state, body| async move { respond(sign_out(state, body).await) });
    let by_email = warp::path!("auth" / "user" / "get-by-email")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(authorization())
        .and(raw_query())
        .then(|state, authorization, query| async move { respond(get_by_email(state, authorization, query).await) });
    let by_token = warp::path!("auth" / "user" / "get-by-token")
        .and(warp::get())
        .and(with_state(state))
        .and(authorization())
        .then(|state, authorization| async move { respond(get_by_token(state, authorization).await) });
    sign_up
        .or(sign_in)
        .unify()
        .or(refresh)
        .unify()
        .or(sign_out)
        .unify()
        .or(by_email)
        .unify()
        .or(by_token)
        .unify()
}

#[utoipa::path(post, path = "/auth/sign-up", tag = "auth", request_body = SignUpRequest,
    responses((status = 201, description = "user created", body = SignUpResponse), (status = 400, description = "bad input, named in the message", body = ErrorBody), (status = 409, description = "the email is taken", body = ErrorBody), (status = 413, description = "body too large", body = ErrorBody), (status = 429, description = "too many sign-ups from this address, or too many password hashes waiting; see Retry-After", body = ErrorBody), (status = 503, description = "the database is unavailable; retry", body = ErrorBody)))]
pub(crate) async fn sign_up(state: AppState, client: IpAddr, body: Bytes) -> Result<Response, ApiError> {
    let request: SignUpRequest = json_body(&body)?;
    // Bad input is refused before the limit counts it: only requests that could create
    // an account (or find the email taken) spend the address's sign-ups.
    validate_sign_up(&request, Utc::now()).map_err(AccountError::from)?;
    if let Err(wait) = state.sign_up_limit.check(&client.to_string()) {
        return Err(ApiError::too_many_requests(
            "too many sign-ups from this address; try again later",
            wait.as_secs_f64().ceil() as u64,
        ));
    }
    let user_id = state.accounts.sign_up(&request, &client.to_string()).await?;
    tracing::info!(%user_id, "user signed up");
    Ok(json_response(StatusCode::CREATED, &SignUpResponse { user_id }))
}

#[utoipa::path(post, path = "/auth/sign-in", tag = "auth", request_body = SignInRequest,
    responses((status = 200, description = "access and refresh tokens", body = TokenPair), (status = 400, description = "bad input, named in the message", body = ErrorBody), (status = 401, description = "wrong email or password (one answer for both)", body = ErrorBody), (status = 429, description = "too many attempts for this email or from this address, or too many password checks waiting; see Retry-After", body = ErrorBody), (status = 503, description = "the database is unavailable; retry", body = ErrorBody)))]
pub(crate) async fn sign_in(state: AppState, client: IpAddr, body: Bytes) -> Result<Response, ApiError> {
    let request: SignInRequest = json_body(&body)?;
    if let Err(wait) = state.sign_in_limits.check(&request.email, client) {
        return Err(ApiError::too_many_requests(
            "too many sign-in attempts; try again later",
            wait.as_secs_f64().ceil() as u64,
        ));
    }
    let user_id = state
        .accounts
        .authenticate(&request.email, &request.password, &client.to_string())
        .await?;
    let now = Utc::now();
    let refresh = state.tokens.issue_refresh(&user_id, &Uuid::new_v4().to_string(), now);
    state
        .accounts
        .store_refresh_token(&RefreshTokenRecord {
            id: refresh.id.clone(),
            family_id: refresh.family_id.clone(),
            user_id: user_id.clone(),
            expires_at: refresh.expires_at.naive_utc(),
        })
        .await?;
    let pair = TokenPair {
        access_token: state.tokens.issue_access(&user_id, &refresh.family_id, now),
        refresh_token: refresh.token,
    };
    Ok(json_response(StatusCode::OK, &pair))
}

#[utoipa::path(put, path = "/auth/token", tag = "auth", request_body = RefreshTokenRequest,
    responses((status = 200, description = "a new pair; the presented refresh token stops working", body = TokenPair), (status = 400, description = "bad input, named in the message", body = ErrorBody), (status = 401, description = "invalid, expired, revoked or reused refresh token (reuse revokes its whole family)", body = ErrorBody), (status = 503, description = "the database is unavailable; retry", body = ErrorBody)))]
pub(crate) async fn refresh(state: AppState, body: Bytes) -> Result<Response, ApiError> {
    let request: RefreshTokenRequest = json_body(&body)?;
    let claims = state.tokens.verify_refresh(&request.refresh_token)?;
    let family_id = claims.fam.clone().unwrap_or_default();
    if let Err(gone) = require_existing_user(&state, claims.sub.clone()).await {
        // Nothing of a deleted user's sign-in may live on.
        state.accounts.revoke_refresh_family(&claims.jti, &claims.sub).await?;
        end_device(&state, &claims.sub, &family_id);
        return Err(gone);
    }
    let now = Utc::now();
    let next = state.tokens.issue_refresh(&claims.sub, &family_id, now);
    let record = RefreshTokenRecord {
        id: next.id.clone(),
        family_id: family_id.clone(),
        user_id: claims.sub.clone(),
        expires_at: next.expires_at.naive_utc(),
    };
    match state.accounts.rotate_refresh_token(&claims.jti, &record).await? {
        RotationOutcome::Rotated => Ok(json_response(
            StatusCode::OK,
            &TokenPair {
                access_token: state.tokens.issue_access(&claims.sub, &family_id, now),
                refresh_token: next.token,
            },
        )),
        RotationOutcome::ReuseDetected => {
            tracing::warn!(user_id = %claims.sub, "refresh token reused; family revoked");
            end_device(&state, &claims.sub, &family_id);
            Err(ApiError::unauthorized(
                "this refresh token was already used; every session of its sign-in is revoked, sign in again",
            ))
        }
        RotationOutcome::Rejected => Err(ApiError::unauthorized(
            "the refresh token is invalid, revoked or expired",
        )),
    }
}

#[utoipa::path(post, path = "/auth/sign-out", tag = "auth", request_body = RefreshTokenRequest,
    responses((status = 204, description = "the sign-in is ended: its refresh tokens are revoked, its access tokens are refused on every node, and its websockets close with 4403 within a second"), (status = 400, description = "bad input, named in the message", body = ErrorBody), (status = 401, description = "invalid, expired or already revoked refresh token", body = ErrorBody), (status = 503, description = "the database is unavailable; retry", body = ErrorBody)))]
pub(crate) async fn sign_out(state: AppState, body: Bytes) -> Result<Response, ApiError> {
    let request: RefreshTokenRequest = json_body(&body)?;
    let claims = state.tokens.verify_refresh(&request.refresh_token)?;
    if !state.accounts.revoke_refresh_family(&claims.jti, &claims.sub).await? {
        return Err(ApiError::unauthorized(
            "the refresh token is invalid or already revoked",
        ));
    }
    end_device(&state, &claims.sub, claims.fam.as_deref().unwrap_or_default());
    tracing::info!(user_id = %claims.sub, "signed out");
    Ok(warp::reply::Reply::into_response(warp::reply::with_status(
        warp::reply(),
        StatusCode::NO_CONTENT,
    )))
}

/// After its refresh family is revoked: the sign-in's access tokens are refused and its
/// sockets closed (4403), here and on every peer at once.
fn end_device(state: &AppState, user_id: &str, family_id: &str) {
    let until_ms = state.tokens.revoked_until_ms(Utc::now());
    state.messaging.sign_out_device(user_id, family_id, until_ms, true);
}

#[utoipa::path(get, path = "/auth/user/get-by-email", tag = "auth", security(("access_token" = [])),
    params(("email" = String, Query, description = "the user email")),
    responses((status = 200, description = "the user id", body = UserIdResponse), (status = 400, description = "bad input, named in the message", body = ErrorBody), (status = 401, description = "missing, invalid or expired access token", body = ErrorBody), (status = 404, description = "no user with this email", body = ErrorBody), (status = 503, description = "the database is unavailable; retry", body = ErrorBody)))]
pub(crate) async fn get_by_email(
    state: AppState,
    authorization: Option<String>,
    query: String,
) -> Result<Response, ApiError> {
    let caller = authenticated_user(&state.tokens, authorization.as_deref())?;
    let query = QueryParameters::parse(&query)?;
    let email = query.required("email")?;
    match state.accounts.find_user_id_by_email_for(&caller, email).await? {
        EmailLookup::Found(user_id) => Ok(json_response(StatusCode::OK, &UserIdResponse { user_id })),
        EmailLookup::NotFound => Err(ApiError::not_found("no user with this email")),
        EmailLookup::CallerGone => Err(ApiError::unauthorized(USER_GONE)),
    }
}

#[utoipa::path(get, path = "/auth/user/get-by-token", tag = "auth", security(("access_token" = [])),
    responses((status = 200, description = "the caller profile", body = UserProfile), (status = 401, description = "missing, invalid or expired access token", body = ErrorBody), (status = 503, description = "the database is unavailable; retry", body = ErrorBody)))]
pub(crate) async fn get_by_token(state: AppState, authorization: Option<String>) -> Result<Response, ApiError> {
    let user_id = authenticated_user(&state.tokens, authorization.as_deref())?;
    match state.accounts.profile(&user_id).await? {
        Some(profile) => Ok(json_response(StatusCode::OK, &profile)),
        None => Err(ApiError::unauthorized(USER_GONE)),
    }
}
