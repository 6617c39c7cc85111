//! `/health/live` (the process answers) and `/health/ready` (it can serve: migrations
//! applied, recent sign-outs read, a database reachable).

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
    /// The sign-outs of the last access-token lifetime are read (their tokens refused).
    sign_outs_loaded: bool,
    /// Heard from a peer (or has no seeds, or none answered within the join grace).
    cluster_joined: bool,
    /// Stopping: answering its last requests, not taking new users.
    draining: bool,
    master_healthy: bool,
    healthy_read_endpoints: Vec<String>,
}

pub fn routes(state: AppState) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let live = warp::path!("health" / "live")
        .and(warp::get())
        .and(with_state(state.clone()))
        .map(|state: AppState| live(&state));
    let ready = warp::path!("health" / "ready")
        .and(warp::get())
        .and(with_state(state.clone()))
        .map(|state: AppState| ready(&state));
    let cluster = warp::path!("cluster")
        .and(warp::get())
        .and(with_state(state.clone()))
        .map(|state: AppState| cluster(&state));
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_state(state))
        .map(|state: AppState| metrics(&state));
    live.or(ready).unify().or(cluster).unify().or(metrics).unify()
}

/// The cluster as this node sees it.
#[utoipa::path(get, path = "/cluster", tag = "operations",
    responses((status = 200, description = "this node first, then every peer heard from", body = protocol::cluster::ClusterView)))]
pub(crate) fn cluster(state: &AppState) -> Response {
    let local_users = state.messaging.sessions.online_users().len() as u64;
    let mut view = state.messaging.peers.view(local_users);
    view.database = Some(state.database.view());
    json_response(StatusCode::OK, &view)
}

/// Prometheus metrics of this node (names prefixed `parley_`).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub(crate) fn metrics(state: &AppState) -> Response {
    let metrics = &state.metrics;
    // Gauges mirroring state kept elsewhere are read now rather than kept in step.
    metrics
        .websocket_sessions
        .set(state.messaging.sessions.session_count() as i64);
    metrics
        .cluster_members
        .set(state.messaging.peers.live_peer_names().len() as i64 + 1);
    for endpoint in state.database.endpoints() {
        let healthy = i64::from(endpoint.is_healthy());
        metrics
            .database_endpoint_healthy
            .with_label_values(&[endpoint.name.as_str()])
            .set(healthy);
    }
    let mut response = Response::new(metrics.render().into());
    response.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// The process answers.
#[utoipa::path(get, path = "/health/live", tag = "operations", responses((status = 200, description = "alive")))]
pub(crate) fn live(state: &AppState) -> Response {
    report(state, true)
}

/// Migrations applied, the cluster joined, a database reachable, and not stopping.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses((status = 200, description = "ready to serve"), (status = 503, description = "not ready")))]
pub(crate) fn ready(state: &AppState) -> Response {
    report(state, false)
}

fn report(state: &AppState, liveness_only: bool) -> Response {
    let master_healthy = state.database.master().is_healthy();
    let healthy_read_endpoints: Vec<String> = state
        .database
        .endpoints()
        .into_iter()
        .skip(1)
        .filter(|endpoint| endpoint.is_healthy())
        .map(|endpoint| endpoint.name.clone())
        .collect();
    let migrations_applied = state.readiness.migrations_applied();
    let draining = state.readiness.is_draining();
    let cluster_joined = state.readiness.cluster_joined();
    let sign_outs_loaded = state.readiness.sign_outs_loaded();
    let ready = !draining
        && migrations_applied
        && sign_outs_loaded
        && cluster_joined
        && (master_healthy || !healthy_read_endpoints.is_empty());
    let (status, label) = match (liveness_only, ready) {
        (true, _) => (StatusCode::OK, "live"),
        (false, true) => (StatusCode::OK, "ready"),
        (false, false) => (StatusCode::SERVICE_UNAVAILABLE, "not ready"),
    };
    let body = Health {
        status: label,
        node: &state.node_name,
        migrations_applied,
        sign_outs_loaded,
        cluster_joined,
        draining,
        master_healthy,
        healthy_read_endpoints,
    };
    json_response(status, &body)
}
