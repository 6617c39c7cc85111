//! `/health/live` (the process answers) and `/health/ready` (it can serve: migrations
//! applied and a database reachable).

use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::{json_response, with_state};
use crate::app_state::AppState;

#[derive(Serialize)]
struct Health<'a> {
    status: &'a str,
    node: &'a str,
    migrations_applied: bool,
    master_healthy: bool,
    healthy_read_endpoints: Vec<String>,
}

pub fn routes(state: AppState) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let live = warp::path!("health" / "live")
        .and(warp::get())
        .and(with_state(state.clone()))
        .map(|state: AppState| report(&state, true));
    let ready = warp::path!("health" / "ready")
        .and(warp::get())
        .and(with_state(state.clone()))
        .map(|state: AppState| report(&state, false));
    let cluster = warp::path!("cluster")
        .and(warp::get())
        .and(with_state(state.clone()))
        .map(|state: AppState| {
            let local_users = state.messaging.sessions.online_users().len() as u64;
            json_response(StatusCode::OK, &state.messaging.peers.view(local_users))
        });
    live.or(ready).unify().or(cluster).unify()
}

fn report(state: &AppState, liveness_only: bool) -> Response {
    let master_healthy = state.database.master().is_healthy();
    let healthy_read_endpoints: Vec<String> = state
        .database
        .endpoints()
        .skip(1)
        .filter(|endpoint| endpoint.is_healthy())
        .map(|endpoint| endpoint.name.clone())
        .collect();
    let migrations_applied = state.readiness.migrations_applied();
    let ready = migrations_applied && (master_healthy || !healthy_read_endpoints.is_empty());
    let (status, label) = match (liveness_only, ready) {
        (true, _) => (StatusCode::OK, "live"),
        (false, true) => (StatusCode::OK, "ready"),
        (false, false) => (StatusCode::SERVICE_UNAVAILABLE, "not ready"),
    };
    let body = Health {
        status: label,
        node: &state.node_name,
        migrations_applied,
        master_healthy,
        healthy_read_endpoints,
    };
    json_response(status, &body)
}
