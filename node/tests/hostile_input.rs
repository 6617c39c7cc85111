//! The hostile-input table over HTTP: SQL injection strings in every field and query
//! parameter, unicode, NUL and control characters, huge and negative numbers, wrong JSON
//! types, duplicate keys, invalid UTF-8, and forged, expired, misused, signed-out or
//! orphaned tokens.
//! Every row asserts its status, a JSON error with a message, and that no table changed.
//! Free-text fields are the exception the table also checks: hostile text there is
//! stored and returned verbatim, and nothing else changes.

#[path = "support/data_snapshot.rs"]
mod data_snapshot;
#[path = "support/test_app.rs"]
mod test_app;

use data_snapshot::{count_on_master, execute_on_master, DataSnapshot};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use parley_client::http::seed_person;
use parley_node::tokens::Claims;
use reqwest::Method;
use test_app::{shared_servers, Pair, TestApp};

const BINARY: &str = "hostile_input";
/// The secret `TestApp` gives its nodes.
const TEST_JWT_SECRET: &str = "parley-test-secret-0123456789abcdef0123456789";

const SQL_INJECTIONS: &[&str] = &[
    "' OR '1'='1",
    "'; DROP TABLE users; --",
    "\" OR \"\"=\"",
    "1; SELECT SLEEP(5)",
    "' UNION SELECT password_hash FROM users --",
    "\\'; DELETE FROM messages; --",
];

/// One row: what is sent and the status it must get.
struct Row {
    what: String,
    method: Method,
    path: String,
    token: Option<String>,
    body: Option<String>,
    status: u16,
}

fn row(
    what: impl Into<String>,
    method: Method,
    path: impl Into<String>,
    token: Option<&str>,
    body: Option<String>,
    status: u16,
) -> Row {
    Row {
        what: what.into(),
        method,
        path: path.into(),
        token: token.map(str::to_owned),
        body,
        status,
    }
}

fn url_encoded(value: &str) -> String {
    serde_urlencoded::to_string([("v", value)]).unwrap()[2..].to_owned()
}

/// Sends every row and checks status, JSON error body and unchanged data.
async fn run_rows(pair: &Pair, snapshot: &DataSnapshot, rows: Vec<Row>) {
    let servers = shared_servers(BINARY).await;
    for row in rows {
        let answer = pair
            .app
            .http
            .request(row.method.clone(), &row.path, row.token.as_deref(), row.body.as_deref())
            .await
            .unwrap();
        assert_eq!(answer.status, row.status, "{}: {}", row.what, answer.body);
        assert!(
            answer
                .content_type
                .as_deref()
                .unwrap_or_default()
                .starts_with("application/json"),
            "{}: a JSON error, got {:?}",
            row.what,
            answer.content_type
        );
        assert!(!answer.message().is_empty(), "{}: the error has a message", row.what);
        snapshot.assert_unchanged(servers, &pair.app.database, &row.what).await;
    }
}

fn sign_up_with(field: &str, value: serde_json::Value, tag: &str) -> String {
    let mut body = serde_json::to_value(seed_person("Mallory", tag)).unwrap();
    body[field] = value;
    body.to_string()
}

async fn hostile_pair(tag: &str) -> Pair {
    // No sign-in limits: the table sends many sign-ins for the same email on purpose.
    let app = TestApp::spawn_with_args(
        shared_servers(BINARY).await,
        1,
        &[
            "--sign-in-per-email-per-minute",
            "0",
            "--sign-in-per-address-per-minute",
            "0",
        ],
    )
    .await;
    Pair::in_app(app, tag).await
}

#[tokio::test]
async fn hostile_fields_and_parameters_get_4xx_and_change_nothing() {
    let pair = hostile_pair("hostile").await;
    let servers = shared_servers(BINARY).await;
    let snapshot = DataSnapshot::take(servers, &pair.app.database).await;
    let (bob, chat) = (pair.bob.as_str(), pair.chat_id.as_str());
    let mut rows = Vec::new();
    for (index, injection) in SQL_INJECTIONS.iter().enumerate() {
        let text = serde_json::Value::from(*injection);
        let tag = format!("inj{index}");
        rows.extend([
            row(
                format!("sign-up email {injection}"),
                Method::POST,
                "/auth/sign-up",
                None,
                Some(sign_up_with("email", text.clone(), &tag)),
                400,
            ),
            row(
                format!("sign-up birthday {injection}"),
                Method::POST,
                "/auth/sign-up",
                None,
                Some(sign_up_with("birthday", text.clone(), &tag)),
                400,
            ),
            row(
                format!("sign-up sex {injection}"),
                Method::POST,
                "/auth/sign-up",
                None,
                Some(sign_up_with("sex", text.clone(), &tag)),
                400,
            ),
            row(
                format!("sign-in email {injection}"),
                Method::POST,
                "/auth/sign-in",
                None,
                Some(serde_json::json!({"email": injection, "password": "1234567890"}).to_string()),
                401,
            ),
            row(
                format!("sign-in password {injection}"),
                Method::POST,
                "/auth/sign-in",
                None,
                Some(serde_json::json!({"email": "bob.hostile@email.com", "password": injection}).to_string()),
                401,
            ),
            row(
                format!("refresh token {injection}"),
                Method::PUT,
                "/auth/token",
                None,
                Some(serde_json::json!({"refresh_token": injection}).to_string()),
                401,
            ),
            row(
                format!("sign-out token {injection}"),
                Method::POST,
                "/auth/sign-out",
                None,
                Some(serde_json::json!({"refresh_token": injection}).to_string()),
                401,
            ),
            row(
                format!("access token {injection}"),
                Method::GET,
                "/auth/user/get-by-token",
                Some(injection),
                None,
                401,
            ),
            row(
                format!("get-by-email email {injection}"),
                Method::GET,
                format!("/auth/user/get-by-email?email={}", url_encoded(injection)),
                Some(bob),
                None,
                400,
            ),
            row(
                format!("create-chat companion {injection}"),
                Method::POST,
                "/messenger/create-chat",
                Some(bob),
                Some(serde_json::json!({"companion_id": injection}).to_string()),
                400,
            ),
            row(
                format!("messages chat_id {injection}"),
                Method::GET,
                format!("/messenger/messages?chat_id={}", url_encoded(injection)),
                Some(bob),
                None,
                400,
            ),
            row(
                format!("messages offset {injection}"),
                Method::GET,
                format!("/messenger/messages?chat_id={chat}&offset={}", url_encoded(injection)),
                Some(bob),
                None,
                400,
            ),
            row(
                format!("messages limit {injection}"),
                Method::GET,
                format!("/messenger/messages?chat_id={chat}&limit={}", url_encoded(injection)),
                Some(bob),
                None,
                400,
            ),
            row(
                format!("websocket token {injection}"),
                Method::GET,
                format!("/messenger/ws?token={}", url_encoded(injection)),
                None,
                None,
                401,
            ),
        ]);
    }
    rows.extend([
        // Unicode, NUL and control characters.
        row(
            "NUL in a name",
            Method::POST,
            "/auth/sign-up",
            None,
            Some(sign_up_with("name", "Bob\u{0}by".into(), "nul")),
            400,
        ),
        row(
            "escape sequence in a city",
            Method::POST,
            "/auth/sign-up",
            None,
            Some(sign_up_with("city", "\u{1b}[31mMoscow".into(), "esc")),
            400,
        ),
        row(
            "NUL in an email",
            Method::POST,
            "/auth/sign-up",
            None,
            Some(sign_up_with("email", "a\u{0}@b.c".into(), "nulmail")),
            400,
        ),
        row(
            "lone surrogate in a name",
            Method::POST,
            "/auth/sign-up",
            None,
            Some(sign_up_with("email", "x".into(), "s").replace("\"x\"", "\"\\ud800\"")),
            400,
        ),
        row(
            "NUL in a query email",
            Method::GET,
            "/auth/user/get-by-email?email=a%00@b.c",
            Some(bob),
            None,
            400,
        ),
        row(
            "emoji as an email",
            Method::GET,
            format!("/auth/user/get-by-email?email={}", url_encoded("👋@💥")),
            Some(bob),
            None,
            400,
        ),
        row(
            "leap-second birthday",
            Method::POST,
            "/auth/sign-up",
            None,
            Some(sign_up_with("birthday", "1994-04-10T23:59:60+00:00".into(), "leap")),
            400,
        ),
        // Huge, negative and absurd numbers.
        row(
            "offset past i64",
            Method::GET,
            format!("/messenger/messages?chat_id={chat}&offset=9223372036854775808"),
            Some(bob),
            None,
            400,
        ),
        row(
            "offset of 30 digits",
            Method::GET,
            format!("/messenger/messages?chat_id={chat}&offset={}", "9".repeat(30)),
            Some(bob),
            None,
            400,
        ),
        row(
            "negative limit",
            Method::GET,
            format!("/messenger/messages?chat_id={chat}&limit=-5"),
            Some(bob),
            None,
            400,
        ),
        row(
            "limit in exponent form",
            Method::GET,
            format!("/messenger/messages?chat_id={chat}&limit=1e3"),
            Some(bob),
            None,
            400,
        ),
        row(
            "limit above the page size",
            Method::GET,
            format!("/messenger/messages?chat_id={chat}&limit=1000000"),
            Some(bob),
            None,
            400,
        ),
        row(
            "fractional offset",
            Method::GET,
            format!("/messenger/messages?chat_id={chat}&offset=1.5"),
            Some(bob),
            None,
            400,
        ),
        row(
            "a 400-digit number for a name",
            Method::POST,
            "/auth/sign-up",
            None,
            Some(sign_up_with("name", "x".into(), "big").replace("\"x\"", &"9".repeat(400))),
            400,
        ),
        // Wrong JSON types.
        row(
            "email as an array",
            Method::POST,
            "/auth/sign-in",
            None,
            Some(r#"{"email":["bob.hostile@email.com"],"password":"1234567890"}"#.into()),
            400,
        ),
        row(
            "password as an object",
            Method::POST,
            "/auth/sign-in",
            None,
            Some(r#"{"email":"bob.hostile@email.com","password":{"$ne":null}}"#.into()),
            400,
        ),
        row(
            "birthday as a number",
            Method::POST,
            "/auth/sign-up",
            None,
            Some(sign_up_with("birthday", 19940410.into(), "num")),
            400,
        ),
        row(
            "companion as null",
            Method::POST,
            "/messenger/create-chat",
            Some(bob),
            Some(r#"{"companion_id":null}"#.into()),
            400,
        ),
        row(
            "body null",
            Method::POST,
            "/auth/sign-up",
            None,
            Some("null".into()),
            400,
        ),
        row(
            "body a string",
            Method::POST,
            "/messenger/create-chat",
            Some(bob),
            Some(r#""companion""#.into()),
            400,
        ),
        row("body true", Method::PUT, "/auth/token", None, Some("true".into()), 400),
        // Duplicate keys: refused rather than one of them silently winning.
        row(
            "duplicate email in sign-in",
            Method::POST,
            "/auth/sign-in",
            None,
            Some(r#"{"email":"x@y.z","email":"bob.hostile@email.com","password":"1234567890"}"#.into()),
            400,
        ),
        row(
            "duplicate companion",
            Method::POST,
            "/messenger/create-chat",
            Some(bob),
            Some(format!(
                r#"{{"companion_id":"{}","companion_id":"{}"}}"#,
                pair.alice_id, pair.bob_id
            )),
            400,
        ),
        row(
            "duplicate name in sign-up",
            Method::POST,
            "/auth/sign-up",
            None,
            Some(sign_up_with("name", "A".into(), "dup").replacen(
                "\"name\":\"A\"",
                "\"name\":\"A\",\"name\":\"B\"",
                1,
            )),
            400,
        ),
    ]);
    run_rows(&pair, &snapshot, rows).await;

    // Bytes that are not UTF-8 at all.
    let invalid_utf8 = reqwest::Client::new()
        .post(format!("{}/auth/sign-up", pair.app.http.base_url()))
        .header("content-type", "application/json")
        .body(b"{\"email\":\"\xff\xfe@b.c\"}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(invalid_utf8.status(), 400);
    snapshot
        .assert_unchanged(servers, &pair.app.database, "invalid UTF-8 body")
        .await;
}

#[tokio::test]
async fn hostile_text_in_free_text_fields_is_stored_verbatim_and_nothing_else_changes() {
    let pair = hostile_pair("verbatim").await;
    let mut person = seed_person("Eve", "verbatim");
    person.name = SQL_INJECTIONS[1].to_owned();
    person.surname = SQL_INJECTIONS[4].to_owned();
    person.city = "Zürich 🏔️ 東京".to_owned();
    person.interests = "line one\nline two, ' \" \\ %_".to_owned();
    let eve_id = pair.app.http.sign_up_ok(&person).await.unwrap();
    let eve = pair
        .app
        .http
        .sign_in(&person.email, &person.password)
        .await
        .unwrap()
        .access_token;
    let profile = pair
        .app
        .http
        .request(Method::GET, "/auth/user/get-by-token", Some(&eve), None)
        .await
        .unwrap();
    assert_eq!(profile.status, 200);
    assert_eq!(profile.body["user_id"], eve_id.as_str());
    for field in ["name", "surname", "city", "interests"] {
        let sent = serde_json::to_value(&person).unwrap()[field].clone();
        assert_eq!(profile.body[field], sent, "{field} round-trips verbatim");
    }
    // The injection did not reach SQL: Bob is still there and still finds Alice.
    let alice = pair
        .app
        .http
        .user_id_by_email(&pair.bob, "alice.verbatim@email.com")
        .await
        .unwrap();
    assert_eq!(alice, pair.alice_id);
}

fn forged(secret: &str, algorithm: Algorithm, claims: &Claims) -> String {
    encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn claims_for(user_id: &str, kind: &str, issued_seconds_ago: i64, lifetime_seconds: i64) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        sub: user_id.to_owned(),
        typ: kind.to_owned(),
        jti: uuid::Uuid::new_v4().to_string(),
        fam: None,
        iat: now - issued_seconds_ago,
        nbf: now - issued_seconds_ago,
        exp: now - issued_seconds_ago + lifetime_seconds,
    }
}

/// `alg: none`: a header and claims with an empty signature.
fn unsigned(claims: &Claims) -> String {
    use base64::Engine;
    let encode_part = |value: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&value).unwrap())
    };
    format!(
        "{}.{}.",
        encode_part(serde_json::json!({"alg": "none", "typ": "JWT"})),
        encode_part(serde_json::to_value(claims).unwrap())
    )
}

/// Every endpoint that takes an access token, as (what, method, path, body).
fn token_endpoints(pair: &Pair) -> Vec<(&'static str, Method, String, Option<String>)> {
    vec![
        ("get-by-token", Method::GET, "/auth/user/get-by-token".into(), None),
        (
            "get-by-email",
            Method::GET,
            "/auth/user/get-by-email?email=alice.tokens@email.com".into(),
            None,
        ),
        (
            "create-chat",
            Method::POST,
            "/messenger/create-chat".into(),
            Some(serde_json::json!({"companion_id": pair.alice_id}).to_string()),
        ),
        ("chats", Method::GET, "/messenger/chats".into(), None),
        (
            "messages",
            Method::GET,
            format!("/messenger/messages?chat_id={}", pair.chat_id),
            None,
        ),
        ("websocket", Method::GET, "/messenger/ws".into(), None),
    ]
}

#[tokio::test]
async fn forged_expired_misused_and_orphaned_tokens_get_401_and_change_nothing() {
    let pair = hostile_pair("tokens").await;
    let servers = shared_servers(BINARY).await;
    let refresh = pair
        .app
        .http
        .sign_in("bob.tokens@email.com", "1234567890")
        .await
        .unwrap()
        .refresh_token;
    let bob_id = pair.bob_id.as_str();
    // A sign-in that signed out: its access token is still unexpired and well signed.
    let signed_out = pair
        .app
        .http
        .sign_in("bob.tokens@email.com", "1234567890")
        .await
        .unwrap();
    let sign_out_body = serde_json::json!({"refresh_token": signed_out.refresh_token}).to_string();
    let answer = pair
        .app
        .http
        .request(Method::POST, "/auth/sign-out", None, Some(&sign_out_body))
        .await
        .unwrap();
    assert_eq!(answer.status, 204, "{}", answer.body);
    let bad_access_tokens = [
        ("of a signed-out sign-in", signed_out.access_token.clone()),
        (
            "expired",
            forged(
                TEST_JWT_SECRET,
                Algorithm::HS256,
                &claims_for(bob_id, "access", 7200, 600),
            ),
        ),
        (
            "not yet valid",
            forged(
                TEST_JWT_SECRET,
                Algorithm::HS256,
                &claims_for(bob_id, "access", -3600, 7200),
            ),
        ),
        (
            "signed with another secret",
            forged(
                "another-secret-0123456789abcdef0123456789",
                Algorithm::HS256,
                &claims_for(bob_id, "access", 0, 600),
            ),
        ),
        (
            "signed with HS512",
            forged(TEST_JWT_SECRET, Algorithm::HS512, &claims_for(bob_id, "access", 0, 600)),
        ),
        ("alg none", unsigned(&claims_for(bob_id, "access", 0, 600))),
        ("a refresh token", refresh.clone()),
        (
            "for a user that never existed",
            forged(
                TEST_JWT_SECRET,
                Algorithm::HS256,
                &claims_for(&uuid::Uuid::new_v4().to_string(), "access", 0, 600),
            ),
        ),
    ];
    let snapshot = DataSnapshot::take(servers, &pair.app.database).await;
    let mut rows = Vec::new();
    for (kind, token) in &bad_access_tokens {
        for (endpoint, method, path, body) in token_endpoints(&pair) {
            rows.push(row(
                format!("{kind} token at {endpoint}"),
                method,
                path,
                Some(token.as_str()),
                body,
                401,
            ));
        }
    }
    // The other way round: an access token where a refresh token belongs.
    let access_as_refresh = serde_json::json!({"refresh_token": pair.bob}).to_string();
    rows.push(row(
        "access token as refresh",
        Method::PUT,
        "/auth/token",
        None,
        Some(access_as_refresh.clone()),
        401,
    ));
    rows.push(row(
        "access token to sign out",
        Method::POST,
        "/auth/sign-out",
        None,
        Some(access_as_refresh),
        401,
    ));
    run_rows(&pair, &snapshot, rows).await;

    // A deleted user's tokens, still unexpired.
    let dave = seed_person("Dave", "tokens");
    let dave_id = pair.app.http.sign_up_ok(&dave).await.unwrap();
    let dave_tokens = pair.app.http.sign_in(&dave.email, &dave.password).await.unwrap();
    pair.app
        .http
        .create_chat(&dave_tokens.access_token, &pair.bob_id)
        .await
        .unwrap();
    execute_on_master(
        servers,
        &pair.app.database,
        "DELETE FROM users WHERE id = ?",
        vec![dave_id.clone()],
    )
    .await;
    let dave_refresh_rows = || {
        count_on_master(
            servers,
            &pair.app.database,
            "SELECT COUNT(*) FROM refresh_tokens WHERE user_id = ?",
            vec![dave_id.clone()],
        )
    };
    let dave_refresh_rows_before = dave_refresh_rows().await;
    let snapshot = DataSnapshot::take(servers, &pair.app.database).await;
    let rows = token_endpoints(&pair)
        .into_iter()
        .map(|(endpoint, method, path, body)| {
            row(
                format!("deleted user's token at {endpoint}"),
                method,
                path,
                Some(&dave_tokens.access_token),
                body,
                401,
            )
        })
        .collect();
    run_rows(&pair, &snapshot, rows).await;
    // Their refresh token gets no new pair, the first time or again.
    let dave_refresh_body = serde_json::json!({"refresh_token": dave_tokens.refresh_token}).to_string();
    for attempt in ["first", "second"] {
        let refreshed = pair
            .app
            .http
            .request(Method::PUT, "/auth/token", None, Some(&dave_refresh_body))
            .await
            .unwrap();
        assert_eq!(refreshed.status, 401, "{attempt}: {}", refreshed.body);
    }
    assert_eq!(
        dave_refresh_rows().await,
        dave_refresh_rows_before,
        "no new refresh token for a deleted user"
    );
    let live_family = count_on_master(
        servers,
        &pair.app.database,
        "SELECT COUNT(*) FROM refresh_tokens WHERE user_id = ? AND revoked = 0",
        vec![dave_id.clone()],
    )
    .await;
    assert_eq!(live_family, 0, "the deleted user's sign-in is revoked");
    snapshot
        .assert_unchanged_except(
            servers,
            &pair.app.database,
            "deleted user's refresh",
            &["refresh_tokens"],
        )
        .await;
}
