//! The seed's wrk load, written out: N connections, each a loop of
//! `GET /auth/user/get-by-email?email=…` through nginx with a token, one request at a
//! time on a keep-alive connection, every request timed. Optionally more connections
//! looping `POST /messenger/create-chat` (a write through the master that nginx must
//! not retry, so a node going away must not drop it).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::latency_samples::LatencySamples;

/// Kinds of failure kept for the report; the counters keep counting past it.
const DISTINCT_PROBLEMS_KEPT: usize = 50;
/// After a failed connect, so a dead nginx does not turn each loop into a busy loop
/// that starves the websocket clients of CPU (wrk has the same problem; we count the
/// errors either way).
const PAUSE_AFTER_CONNECTION_ERROR: Duration = Duration::from_millis(10);

/// How the HTTP load runs.
#[derive(Debug, Clone)]
pub struct HttpLoadSettings {
    /// nginx.
    pub base_url: String,
    /// Concurrent `get-by-email` loops (wrk's connections).
    pub connections: usize,
    /// The raw access token, as the seed's wrk script sends it.
    pub token: String,
    /// The email every `get-by-email` asks for.
    pub looked_up_email: String,
    /// Loops of `POST /messenger/create-chat` with this companion (the looked-up user:
    /// the same chat every time, so the writes are idempotent).
    pub post_connections: usize,
    /// The user id every `create-chat` names.
    pub companion_id: String,
    /// A request without an answer in this time counts as an error.
    pub request_timeout: Duration,
}

/// The request a connection repeats.
#[derive(Debug, Clone)]
enum RepeatedRequest {
    GetByEmail { url: String },
    CreateChat { url: String, body: String },
}

impl RepeatedRequest {
    fn label(&self) -> &'static str {
        match self {
            RepeatedRequest::GetByEmail { .. } => "get-by-email",
            RepeatedRequest::CreateChat { .. } => "create-chat",
        }
    }

    fn method(&self) -> &'static str {
        match self {
            RepeatedRequest::GetByEmail { .. } => "GET",
            RepeatedRequest::CreateChat { .. } => "POST",
        }
    }
}

/// Running totals the progress line reads while the load runs.
#[derive(Debug, Default)]
pub struct HttpLiveCounters {
    /// Responses of any status so far.
    pub responses: AtomicU64,
    /// Responses with a status other than 2xx so far.
    pub non_2xx: AtomicU64,
    /// Requests without a response so far.
    pub errors: AtomicU64,
}

/// Requests that failed the same way (same status, node and answer or error), for the
/// report: a dead nginx makes thousands of identical errors.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HttpProblem {
    /// None: no response at all (connection refused or reset, timeout).
    pub status: Option<u16>,
    /// The `x-parley-node` header, when a node answered.
    pub node: Option<String>,
    /// The start of the answer's body, or the error.
    pub detail: String,
    /// How many requests failed this way.
    pub count: u64,
    /// The first one, in seconds from the start of the load.
    pub first_at_s: f64,
    /// The last one, in seconds from the start of the load.
    pub last_at_s: f64,
}

impl HttpProblem {
    fn same_kind(&self, other: &HttpProblem) -> bool {
        self.status == other.status && self.node == other.node && self.detail == other.detail
    }

    fn absorb(&mut self, other: &HttpProblem) {
        self.count += other.count;
        self.first_at_s = self.first_at_s.min(other.first_at_s);
        self.last_at_s = self.last_at_s.max(other.last_at_s);
    }
}

/// Adds a problem to its kind, or as a new kind while there is room; past that, only the
/// counters of the load see it.
fn record_problem(problems: &mut Vec<HttpProblem>, problem: HttpProblem) {
    if let Some(known) = problems.iter_mut().find(|known| known.same_kind(&problem)) {
        known.absorb(&problem);
    } else if problems.len() < DISTINCT_PROBLEMS_KEPT {
        problems.push(problem);
    }
}

/// One second of one connection (or, merged, of all of them).
#[derive(Debug, Default, Clone)]
pub struct HttpSecond {
    /// Responses of any status.
    pub responses: u64,
    /// Responses with a status other than 2xx.
    pub non_2xx: u64,
    /// Requests without a response.
    pub errors: u64,
    /// Latencies of the responses.
    pub latencies: LatencySamples,
}

impl HttpSecond {
    fn merge(&mut self, other: HttpSecond) {
        self.responses += other.responses;
        self.non_2xx += other.non_2xx;
        self.errors += other.errors;
        self.latencies.merge(other.latencies);
    }
}

/// Everything the connections measured.
#[derive(Debug, Default)]
pub struct HttpLoadOutcome {
    /// Indexed by the second (from the start of the load) in which a request completed.
    pub seconds: Vec<HttpSecond>,
    /// Responses per serving node (by the `x-parley-node` header, when the answer had one).
    pub responses_by_node: BTreeMap<String, u64>,
    /// `get-by-email`, `create-chat`: what each kind of loop got answered.
    pub responses_by_request: BTreeMap<String, u64>,
    /// Non-2xx responses by the request's method (`GET`, `POST`).
    pub non_2xx_by_method: BTreeMap<String, u64>,
    /// The failed requests, grouped.
    pub problems: Vec<HttpProblem>,
    /// From the start of the load until the last connection stopped.
    pub elapsed: Duration,
}

impl HttpLoadOutcome {
    fn merge(&mut self, other: HttpLoadOutcome) {
        if self.seconds.len() < other.seconds.len() {
            self.seconds.resize_with(other.seconds.len(), HttpSecond::default);
        }
        for (index, second) in other.seconds.into_iter().enumerate() {
            self.seconds[index].merge(second);
        }
        for (node, count) in other.responses_by_node {
            *self.responses_by_node.entry(node).or_default() += count;
        }
        for (request, count) in other.responses_by_request {
            *self.responses_by_request.entry(request).or_default() += count;
        }
        for (method, count) in other.non_2xx_by_method {
            *self.non_2xx_by_method.entry(method).or_default() += count;
        }
        for problem in other.problems {
            record_problem(&mut self.problems, problem);
        }
        self.elapsed = self.elapsed.max(other.elapsed);
    }

    fn second_mut(&mut self, index: usize) -> &mut HttpSecond {
        if self.seconds.len() <= index {
            self.seconds.resize_with(index + 1, HttpSecond::default);
        }
        &mut self.seconds[index]
    }
}

/// The connections, running until `load_ends_at`.
pub struct RunningHttpLoad {
    connections: Vec<JoinHandle<HttpLoadOutcome>>,
    /// Running totals, for the progress line.
    pub live: Arc<HttpLiveCounters>,
}

impl RunningHttpLoad {
    /// Starts the loops; each repeats its request until `load_ends_at`. Fails when the HTTP
    /// client cannot be built.
    pub fn start(settings: &HttpLoadSettings, load_started_at: Instant, load_ends_at: Instant) -> anyhow::Result<Self> {
        let live = Arc::new(HttpLiveCounters::default());
        let base_url = settings.base_url.trim_end_matches('/');
        let get_by_email = RepeatedRequest::GetByEmail {
            url: format!("{base_url}/auth/user/get-by-email?email={}", settings.looked_up_email),
        };
        let create_chat = RepeatedRequest::CreateChat {
            url: format!("{base_url}/messenger/create-chat"),
            body: serde_json::json!({ "companion_id": settings.companion_id }).to_string(),
        };
        let requests = std::iter::repeat_n(get_by_email, settings.connections)
            .chain(std::iter::repeat_n(create_chat, settings.post_connections));
        let mut connections = Vec::with_capacity(settings.connections + settings.post_connections);
        for request in requests {
            // One client per connection, each holding one keep-alive connection, as wrk does.
            let client = reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(1)
                .timeout(settings.request_timeout)
                .build()
                .context("building an http client")?;
            connections.push(tokio::spawn(run_connection(
                client,
                request,
                settings.token.clone(),
                load_started_at,
                load_ends_at,
                live.clone(),
            )));
        }
        Ok(RunningHttpLoad { connections, live })
    }

    /// Waits for every connection's last request and merges what they measured.
    pub async fn finish(self) -> anyhow::Result<HttpLoadOutcome> {
        let mut merged = HttpLoadOutcome::default();
        for connection in self.connections {
            merged.merge(connection.await.context("an http load connection panicked")?);
        }
        merged
            .problems
            .sort_by(|left, right| left.first_at_s.total_cmp(&right.first_at_s));
        Ok(merged)
    }
}

async fn run_connection(
    client: reqwest::Client,
    request: RepeatedRequest,
    token: String,
    load_started_at: Instant,
    load_ends_at: Instant,
    live: Arc<HttpLiveCounters>,
) -> HttpLoadOutcome {
    let mut outcome = HttpLoadOutcome::default();
    while Instant::now() < load_ends_at {
        let sent_at = Instant::now();
        let answer = request_once(&client, &request, &token).await;
        let completed_at = Instant::now();
        let second = completed_at.duration_since(load_started_at).as_secs() as usize;
        let at_s = completed_at.duration_since(load_started_at).as_secs_f64();
        match answer {
            Ok(response) => {
                live.responses.fetch_add(1, Ordering::Relaxed);
                let bucket = outcome.second_mut(second);
                bucket.responses += 1;
                bucket.latencies.record(completed_at - sent_at);
                if let Some(node) = &response.node {
                    *outcome.responses_by_node.entry(node.clone()).or_default() += 1;
                }
                *outcome
                    .responses_by_request
                    .entry(request.label().to_owned())
                    .or_default() += 1;
                if !(200..300).contains(&response.status) {
                    live.non_2xx.fetch_add(1, Ordering::Relaxed);
                    outcome.second_mut(second).non_2xx += 1;
                    *outcome
                        .non_2xx_by_method
                        .entry(request.method().to_owned())
                        .or_default() += 1;
                    record_problem(
                        &mut outcome.problems,
                        HttpProblem {
                            status: Some(response.status),
                            node: response.node,
                            detail: response.body_start,
                            count: 1,
                            first_at_s: at_s,
                            last_at_s: at_s,
                        },
                    );
                }
            }
            Err(error) => {
                live.errors.fetch_add(1, Ordering::Relaxed);
                outcome.second_mut(second).errors += 1;
                record_problem(
                    &mut outcome.problems,
                    HttpProblem {
                        status: None,
                        node: None,
                        detail: format!("{error:#}"),
                        count: 1,
                        first_at_s: at_s,
                        last_at_s: at_s,
                    },
                );
                tokio::time::sleep(PAUSE_AFTER_CONNECTION_ERROR).await;
            }
        }
    }
    outcome.elapsed = load_started_at.elapsed();
    outcome
}

struct AnsweredRequest {
    status: u16,
    node: Option<String>,
    /// The start of the body, for the report of a non-2xx.
    body_start: String,
}

async fn request_once(
    client: &reqwest::Client,
    request: &RepeatedRequest,
    token: &str,
) -> anyhow::Result<AnsweredRequest> {
    let what = request.label();
    let builder = match request {
        RepeatedRequest::GetByEmail { url } => client.get(url),
        RepeatedRequest::CreateChat { url, body } => client
            .post(url)
            .header("Content-Type", "application/json")
            .body(body.clone()),
    };
    let response = builder
        .header("Authorization", token)
        .send()
        .await
        // The url is the same for every request; without it identical failures group.
        .map_err(reqwest::Error::without_url)
        .with_context(|| format!("sending {what}"))?;
    let status = response.status().as_u16();
    let node = response
        .headers()
        .get("x-parley-node")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    // The body is read whole, as wrk does: a response cut short is an error.
    let body = response
        .bytes()
        .await
        .map_err(reqwest::Error::without_url)
        .with_context(|| format!("reading the {what} body"))?;
    let body_start = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    Ok(AnsweredRequest {
        status,
        node,
        body_start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(status: Option<u16>, detail: &str, at_s: f64) -> HttpProblem {
        HttpProblem {
            status,
            node: None,
            detail: detail.to_owned(),
            count: 1,
            first_at_s: at_s,
            last_at_s: at_s,
        }
    }

    #[test]
    fn identical_failures_are_counted_under_one_kind_with_their_time_span() {
        let mut problems = Vec::new();
        record_problem(&mut problems, problem(None, "connection refused", 3.0));
        record_problem(&mut problems, problem(Some(503), "no node", 3.5));
        record_problem(&mut problems, problem(None, "connection refused", 4.5));
        record_problem(&mut problems, problem(None, "connection refused", 2.5));
        assert_eq!(problems.len(), 2);
        assert_eq!(
            (problems[0].count, problems[0].first_at_s, problems[0].last_at_s),
            (3, 2.5, 4.5)
        );
        assert_eq!((problems[1].status, problems[1].count), (Some(503), 1));
    }
}
