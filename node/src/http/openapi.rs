//! The OpenAPI 3 document, generated from the handlers' annotations, and Swagger UI
//! (vendored: works with no internet) at the seed's URL `/swagger/index.html`.

use std::sync::Arc;

use protocol::websocket::{
    AckPayload, CursorPayload, DeliveredMessage, DeliveryPayload, Envelope, ErrorPayload, HeartbeatAnswerPayload,
    HeartbeatPayload, MembershipEvent, MessageAck, OutgoingMessage, PresencePayload, RenewPayload, RenewedPayload,
    ReplayCompletePayload, SendMessagePayload, StatusPayload,
};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::Config;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use super::{auth_routes, group_routes, health_routes, messenger_routes};
use crate::websocket;

/// Where the JSON document is served (the seed's convention, and the usual name).
pub const DOCUMENT_PATHS: [&str; 2] = ["/swagger/doc.json", "/openapi.json"];

/// The OpenAPI document of the HTTP API, served next to the Swagger UI.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Parley",
        description = "A fault-tolerant clustered chat backend. Every error is JSON {message, code}. \
                       The access token goes in the Authorization header, raw as in the seed or as `Bearer <token>`."
    ),
    paths(
        auth_routes::sign_up,
        auth_routes::sign_in,
        auth_routes::refresh,
        auth_routes::sign_out,
        auth_routes::get_by_email,
        auth_routes::get_by_token,
        messenger_routes::create_chat,
        messenger_routes::list_chats,
        messenger_routes::messages,
        group_routes::create_group,
        group_routes::add_member,
        group_routes::remove_member,
        group_routes::members,
        websocket::upgrade_to_session,
        health_routes::live,
        health_routes::ready,
        health_routes::cluster,
        health_routes::metrics,
    ),
    components(schemas(
        Envelope,
        SendMessagePayload,
        OutgoingMessage,
        CursorPayload,
        DeliveryPayload,
        DeliveredMessage,
        MembershipEvent,
        AckPayload,
        MessageAck,
        StatusPayload,
        PresencePayload,
        ReplayCompletePayload,
        HeartbeatPayload,
        HeartbeatAnswerPayload,
        RenewPayload,
        RenewedPayload,
        ErrorPayload,
    )),
    modifiers(&AccessTokenScheme),
    tags(
        (name = "auth", description = "accounts and tokens (the seed's endpoints)"),
        (name = "messenger", description = "chats, history and the websocket"),
        (name = "operations", description = "health and cluster membership"),
    )
)]
pub struct ApiDoc;

struct AccessTokenScheme;

impl Modify for AccessTokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "access_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("Authorization"))),
        );
    }
}

/// The document as JSON.
pub fn document() -> String {
    ApiDoc::openapi().to_json().expect("the OpenAPI document serialises")
}

/// `GET /swagger/doc.json`, `GET /openapi.json`, `GET /swagger/...` (the UI).
pub fn routes() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let document = Arc::new(document());
    let json = {
        let document = Arc::clone(&document);
        warp::get()
            .and(
                warp::path!("swagger" / "doc.json")
                    .or(warp::path!("openapi.json"))
                    .unify(),
            )
            .map(move || {
                let mut response = Response::new(document.as_str().to_owned().into());
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            })
    };
    let config = Arc::new(Config::from(DOCUMENT_PATHS[0]));
    let bare = warp::get()
        .and(warp::path!("swagger"))
        .map(|| warp::redirect::found(warp::http::Uri::from_static("/swagger/index.html")).into_response());
    let ui = warp::get()
        .and(warp::path("swagger"))
        .and(warp::path::tail())
        .map(move |tail: warp::path::Tail| swagger_file(tail.as_str(), Arc::clone(&config)));
    json.or(bare).unify().or(ui).unify()
}

fn swagger_file(path: &str, config: Arc<Config<'static>>) -> Response {
    match utoipa_swagger_ui::serve(path, config) {
        Ok(Some(file)) => {
            let mut response = Response::new(file.bytes.to_vec().into());
            if let Ok(content_type) = HeaderValue::from_str(&file.content_type) {
                response.headers_mut().insert(header::CONTENT_TYPE, content_type);
            }
            response
        }
        Ok(None) => super::errors::ApiError::not_found("no such Swagger UI file").into_response(),
        Err(error) => {
            tracing::error!(%error, "swagger ui failed");
            super::errors::ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                protocol::errors::codes::INTERNAL,
                "swagger ui failed",
            )
            .into_response()
        }
    }
}
