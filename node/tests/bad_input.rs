//! Bad input of every kind gets a 4xx JSON answer with a message; never a 500 or a panic.

#[path = "support/test_app.rs"]
mod test_app;

use parley_client::http::seed_person;
use reqwest::Method;
use test_app::{shared_servers, TestApp};

const BINARY: &str = "bad_input";

struct Case {
    what: &'static str,
    method: Method,
    path: String,
    token: Option<String>,
    body: Option<String>,
    status: u16,
}

fn case(what: &'static str, method: Method, path: &str, token: Option<&str>, body: Option<&str>, status: u16) -> Case {
    Case {
        what,
        method,
        path: path.to_owned(),
        token: token.map(str::to_owned),
        body: body.map(str::to_owned),
        status,
    }
}

#[tokio::test]
async fn every_bad_request_gets_a_json_4xx() {
    let app = TestApp::spawn(shared_servers(BINARY).await, 1).await;
    let http = &app.http;
    let bob_id = http.sign_up_ok(&seed_person("Bob", "bad")).await.unwrap();
    let token = http
        .sign_in("bob.bad@email.com", "1234567890")
        .await
        .unwrap()
        .access_token;
    let t = Some(token.as_str());
    let valid = serde_json::to_value(seed_person("Dave", "bad")).unwrap();
    let with = |field: &str, value: serde_json::Value| {
        let mut body = valid.clone();
        body[field] = value;
        body.to_string()
    };
    let without = |field: &str| {
        let mut body = valid.clone();
        body.as_object_mut().unwrap().remove(field);
        body.to_string()
    };
    let huge = format!(r#"{{"email":"{}"}}"#, "x".repeat(200_000));
    let cases = vec![
        case("malformed json", Method::POST, "/auth/sign-up", None, Some("{bad"), 400),
        case("empty body", Method::POST, "/auth/sign-up", None, Some(""), 400),
        case("json array", Method::POST, "/auth/sign-up", None, Some("[]"), 400),
        case(
            "missing field",
            Method::POST,
            "/auth/sign-up",
            None,
            Some(&without("password")),
            400,
        ),
        case(
            "number for a string",
            Method::POST,
            "/auth/sign-up",
            None,
            Some(&with("name", 42.into())),
            400,
        ),
        case(
            "bad email",
            Method::POST,
            "/auth/sign-up",
            None,
            Some(&with("email", "nope".into())),
            400,
        ),
        case(
            "bad date",
            Method::POST,
            "/auth/sign-up",
            None,
            Some(&with("birthday", "10/04/1994".into())),
            400,
        ),
        case(
            "short password",
            Method::POST,
            "/auth/sign-up",
            None,
            Some(&with("password", "123".into())),
            400,
        ),
        case(
            "unknown sex",
            Method::POST,
            "/auth/sign-up",
            None,
            Some(&with("sex", "robot".into())),
            400,
        ),
        case("oversized body", Method::POST, "/auth/sign-up", None, Some(&huge), 413),
        case(
            "sign-in without password",
            Method::POST,
            "/auth/sign-in",
            None,
            Some(r#"{"email":"a@b.c"}"#),
            400,
        ),
        case(
            "refresh with garbage",
            Method::PUT,
            "/auth/token",
            None,
            Some(r#"{"refresh_token":"x.y.z"}"#),
            401,
        ),
        case(
            "refresh with a number",
            Method::PUT,
            "/auth/token",
            None,
            Some(r#"{"refresh_token":7}"#),
            400,
        ),
        case(
            "no token",
            Method::GET,
            "/auth/user/get-by-email?email=a@b.c",
            None,
            None,
            401,
        ),
        case(
            "garbage token",
            Method::GET,
            "/auth/user/get-by-email?email=a@b.c",
            Some("garbage"),
            None,
            401,
        ),
        case(
            "no email parameter",
            Method::GET,
            "/auth/user/get-by-email",
            t,
            None,
            400,
        ),
        case(
            "malformed email parameter",
            Method::GET,
            "/auth/user/get-by-email?email=%27%20OR%201%3D1",
            t,
            None,
            400,
        ),
        case(
            "unknown email",
            Method::GET,
            "/auth/user/get-by-email?email=ghost@email.com",
            t,
            None,
            404,
        ),
        case(
            "create-chat without token",
            Method::POST,
            "/messenger/create-chat",
            None,
            Some("{}"),
            401,
        ),
        case(
            "create-chat without companion",
            Method::POST,
            "/messenger/create-chat",
            t,
            Some("{}"),
            400,
        ),
        case(
            "companion not a uuid",
            Method::POST,
            "/messenger/create-chat",
            t,
            Some(r#"{"companion_id":"x"}"#),
            400,
        ),
        case(
            "companion a number",
            Method::POST,
            "/messenger/create-chat",
            t,
            Some(r#"{"companion_id":1}"#),
            400,
        ),
        case(
            "messages without chat_id",
            Method::GET,
            "/messenger/messages",
            t,
            None,
            400,
        ),
        case(
            "chat_id not a uuid",
            Method::GET,
            "/messenger/messages?chat_id=1%27--",
            t,
            None,
            400,
        ),
        case(
            "negative offset",
            Method::GET,
            &format!("/messenger/messages?chat_id={bob_id}&offset=-1"),
            t,
            None,
            400,
        ),
        case(
            "zero limit",
            Method::GET,
            &format!("/messenger/messages?chat_id={bob_id}&limit=0"),
            t,
            None,
            400,
        ),
        case(
            "absurd limit",
            Method::GET,
            &format!("/messenger/messages?chat_id={bob_id}&limit=99999999999999999999"),
            t,
            None,
            400,
        ),
        case("unknown route", Method::GET, "/no/such/thing", None, None, 404),
        case("wrong method", Method::DELETE, "/auth/sign-up", None, None, 405),
    ];
    for case in cases {
        let answer = http
            .request(
                case.method.clone(),
                &case.path,
                case.token.as_deref(),
                case.body.as_deref(),
            )
            .await
            .unwrap();
        assert_eq!(answer.status, case.status, "{}: {:?}", case.what, answer.body);
        assert!(
            answer
                .content_type
                .as_deref()
                .unwrap_or_default()
                .starts_with("application/json"),
            "{}: JSON error expected, got {:?}",
            case.what,
            answer.content_type
        );
        assert!(!answer.message().is_empty(), "{}: the error has a message", case.what);
    }
    // Nothing above created a user.
    let stray = http
        .request(Method::GET, "/auth/user/get-by-email?email=dave.bad@email.com", t, None)
        .await
        .unwrap();
    assert_eq!(stray.status, 404);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_head_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = TestApp::spawn_with_args(
        shared_servers(BINARY).await,
        1,
        &["--http-header-read-timeout-ms", "500"],
    )
    .await;
    let address = app.app.node_url("node-1").trim_start_matches("http://").to_owned();
    // Slowloris: a request line and one header, then nothing.
    let mut connection = tokio::net::TcpStream::connect(&address).await.unwrap();
    connection
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: parley\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), connection.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the node kept a half-sent request open for 10 s");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(400),
        "closed before the timeout: {:?}",
        started.elapsed()
    );
    // The node still serves everyone else.
    let live = app
        .node("node-1")
        .request(Method::GET, "/health/live", None, None)
        .await
        .unwrap();
    assert_eq!(live.status, 200);
}
