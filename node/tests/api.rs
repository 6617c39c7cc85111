//! The seed's HTTP API against real replicated MariaDB, HAProxy, nginx and two nodes.

#[path = "support/test_app.rs"]
mod test_app;

use parley_client::http::seed_person;
use protocol::auth::SignUpRequest;
use reqwest::Method;
use test_app::{shared_servers, TestApp};

const BINARY: &str = "api";

fn bob() -> SignUpRequest {
    serde_json::from_str(
        r#"{"email": "bob@email.com", "password": "1234567890", "name": "Bob", "surname": "Tallor", "birthday": "1994-04-10T20:21:25+00:00", "sex": "male", "city": "New Yourk", "interests": "programming"}"#,
    )
    .unwrap()
}

fn alice() -> SignUpRequest {
    serde_json::from_str(
        r#"{"email": "alice@email.com", "password": "1234567890", "name": "Alice", "surname": "Swift", "birthday": "1995-10-10T20:21:25+00:00", "sex": "female", "city": "California", "interests": "running"}"#,
    )
    .unwrap()
}

#[tokio::test]
async fn both_users_creating_their_chat_at_the_same_moment_get_the_same_one() {
    let app = TestApp::spawn(shared_servers(BINARY).await, 2).await;
    let http = &app.http;
    let bob_id = http.sign_up_ok(&bob()).await.unwrap();
    let alice_id = http.sign_up_ok(&alice()).await.unwrap();
    let bob_token = http.sign_in("bob@email.com", "1234567890").await.unwrap().access_token;
    let alice_token = http
        .sign_in("alice@email.com", "1234567890")
        .await
        .unwrap()
        .access_token;
    // Both sides at once, through nginx onto both nodes: the losers of the race for the
    // unique pair must find the winner's chat, not a 404.
    let creations = (0..8).map(|attempt| {
        let (token, companion) = if attempt % 2 == 0 {
            (&bob_token, &alice_id)
        } else {
            (&alice_token, &bob_id)
        };
        http.create_chat(token, companion)
    });
    let chat_ids: Vec<String> = futures::future::try_join_all(creations).await.unwrap();
    assert!(chat_ids.iter().all(|chat_id| *chat_id == chat_ids[0]), "{chat_ids:?}");
    assert_eq!(http.chats(&bob_token).await.unwrap().chats.len(), 1);
}

#[tokio::test]
async fn the_seed_walkthrough_works_through_nginx() {
    let app = TestApp::spawn(shared_servers(BINARY).await, 2).await;
    let http = &app.http;
    let bob_id = http.sign_up_ok(&bob()).await.unwrap();
    let alice_id = http.sign_up_ok(&alice()).await.unwrap();
    assert_ne!(bob_id, alice_id);

    let bob_tokens = http.sign_in("bob@email.com", "1234567890").await.unwrap();
    assert!(!bob_tokens.refresh_token.is_empty());
    let found = http
        .user_id_by_email(&bob_tokens.access_token, "alice@email.com")
        .await
        .unwrap();
    assert_eq!(found, alice_id);

    let chat_id = http.create_chat(&bob_tokens.access_token, &alice_id).await.unwrap();
    assert!(uuid::Uuid::parse_str(&chat_id).is_ok(), "{chat_id}");
    // The same pair always gets the same chat, whoever asks.
    assert_eq!(
        http.create_chat(&bob_tokens.access_token, &alice_id).await.unwrap(),
        chat_id
    );
    let alice_tokens = http.sign_in("alice@email.com", "1234567890").await.unwrap();
    assert_eq!(
        http.create_chat(&alice_tokens.access_token, &bob_id).await.unwrap(),
        chat_id
    );

    let chats = http.chats(&alice_tokens.access_token).await.unwrap().chats;
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0].chat_id, chat_id);
    let mut participants: Vec<_> = chats[0].participants.iter().map(|p| p.name.as_str()).collect();
    participants.sort();
    assert_eq!(participants, ["Alice", "Bob"]);

    let page = http
        .messages(&alice_tokens.access_token, &chat_id, 0, 100)
        .await
        .unwrap();
    assert_eq!(
        (page.total, page.offset, page.limit, page.messages.len()),
        (0, 0, 100, 0)
    );

    // `Bearer <token>` works as well as the seed's raw token.
    let bearer = format!("Bearer {}", bob_tokens.access_token);
    let profile = http
        .request(Method::GET, "/auth/user/get-by-token", Some(&bearer), None)
        .await
        .unwrap();
    assert_eq!(profile.status, 200);
    assert_eq!(profile.body["user_id"], bob_id);
    assert_eq!(profile.body["email"], "bob@email.com");
}

#[tokio::test]
async fn a_user_signed_up_on_one_node_is_read_on_the_other_from_replicas() {
    let servers = shared_servers(BINARY).await;
    let app = TestApp::spawn(servers, 2).await;
    let node_1 = app.node("node-1");
    let node_2 = app.node("node-2");
    let bob_id = node_1.sign_up_ok(&bob()).await.unwrap();
    let tokens = node_2.sign_in("bob@email.com", "1234567890").await.unwrap();
    assert_eq!(
        node_2
            .user_id_by_email(&tokens.access_token, "bob@email.com")
            .await
            .unwrap(),
        bob_id
    );

    servers
        .wait_replicas_caught_up(std::time::Duration::from_secs(10))
        .await
        .unwrap();
    for replica in ["replica-1", "replica-2"] {
        let pool = mysql_async::Pool::new(servers.root_url(replica).as_str());
        let mut conn = pool.get_conn().await.unwrap();
        use mysql_async::prelude::Queryable;
        let row: mysql_async::Row = conn.query_first("SHOW SLAVE STATUS").await.unwrap().expect("a replica");
        let field = |name: &str| row.get::<String, _>(name).unwrap_or_default();
        assert_eq!(field("Slave_IO_Running"), "Yes", "{replica}");
        assert_eq!(field("Slave_SQL_Running"), "Yes", "{replica}");
        assert_eq!(field("Using_Gtid"), "Slave_Pos", "{replica}");
        let read_only: u8 = conn.query_first("SELECT @@read_only").await.unwrap().unwrap();
        assert_eq!(read_only, 1, "{replica} must be read-only");
        let stored: Option<String> = conn
            .exec_first(
                format!("SELECT id FROM `{}`.users WHERE email = ?", app.database),
                ("bob@email.com",),
            )
            .await
            .unwrap();
        assert_eq!(stored.as_deref(), Some(bob_id.as_str()), "{replica} has the user");
        drop(conn);
        pool.disconnect().await.unwrap();
    }
}

#[tokio::test]
async fn sign_up_and_sign_in_refuse_duplicates_and_wrong_credentials_alike() {
    let app = TestApp::spawn(shared_servers(BINARY).await, 1).await;
    let http = &app.http;
    http.sign_up_ok(&bob()).await.unwrap();
    let again = http.sign_up(&bob()).await.unwrap();
    assert_eq!(again.status, 409, "{:?}", again.body);
    assert!(!again.message().is_empty());

    let body = |email: &str, password: &str| serde_json::json!({"email": email, "password": password}).to_string();
    let wrong_password = http
        .request(
            Method::POST,
            "/auth/sign-in",
            None,
            Some(&body("bob@email.com", "wrong-password")),
        )
        .await
        .unwrap();
    let unknown_email = http
        .request(
            Method::POST,
            "/auth/sign-in",
            None,
            Some(&body("nobody@email.com", "1234567890")),
        )
        .await
        .unwrap();
    assert_eq!(wrong_password.status, 401);
    assert_eq!(unknown_email.status, 401);
    assert_eq!(wrong_password.body, unknown_email.body, "one answer for both");
}

#[tokio::test]
async fn an_accented_email_is_another_account_and_its_spellings_one() {
    let app = TestApp::spawn(shared_servers(BINARY).await, 1).await;
    let http = &app.http;
    let person = |email: &str| {
        let mut request = seed_person("Bob", "accents");
        request.email = email.to_owned();
        request
    };
    let plain = http.sign_up_ok(&person("bob.accents@x.io")).await.unwrap();
    // Under the old accent-insensitive column this signed in as the account above.
    let sign_in = |email: &str| {
        let body = serde_json::json!({"email": email, "password": "1234567890"}).to_string();
        let http = http.clone();
        async move {
            http.request(Method::POST, "/auth/sign-in", None, Some(&body))
                .await
                .unwrap()
        }
    };
    assert_eq!(
        sign_in("b\u{00f3}b.accents@x.io").await.status,
        401,
        "no such account yet"
    );
    let accented = http.sign_up_ok(&person("b\u{00f3}b.accents@x.io")).await.unwrap();
    assert_ne!(plain, accented, "an accent makes another email");
    // The same accent typed as a combining character (NFD), in capitals: the same email.
    let decomposed = sign_in(" BO\u{0301}B.accents@X.io").await;
    assert_eq!(decomposed.status, 200, "{}", decomposed.body);
    let again = http.sign_up(&person("bo\u{0301}b.accents@x.io")).await.unwrap();
    assert_eq!(again.status, 409, "one account per spelling of one email");
    let token = http
        .sign_in("bob.accents@x.io", "1234567890")
        .await
        .unwrap()
        .access_token;
    assert_eq!(
        http.user_id_by_email(&token, "B\u{00f3}b.accents@x.io").await.unwrap(),
        accented
    );
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_its_family() {
    let app = TestApp::spawn(shared_servers(BINARY).await, 2).await;
    let http = &app.http;
    http.sign_up_ok(&bob()).await.unwrap();
    let first = http.sign_in("bob@email.com", "1234567890").await.unwrap();
    let refresh = |token: &str| {
        let body = serde_json::json!({ "refresh_token": token }).to_string();
        async move {
            http.request(Method::PUT, "/auth/token", None, Some(&body))
                .await
                .unwrap()
        }
    };
    let rotated = refresh(&first.refresh_token).await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    let second_refresh = rotated.body["refresh_token"].as_str().unwrap().to_owned();
    let second_access = rotated.body["access_token"].as_str().unwrap().to_owned();
    assert!(http.user_id_by_email(&second_access, "bob@email.com").await.is_ok());

    // The first token was rotated: presenting it again is a leak, and revokes the family.
    let reused = refresh(&first.refresh_token).await;
    assert_eq!(reused.status, 401);
    let after_revocation = refresh(&second_refresh).await;
    assert_eq!(
        after_revocation.status, 401,
        "the newer token of the family is revoked too"
    );

    // An access token is not a refresh token.
    assert_eq!(refresh(&first.access_token).await.status, 401);
    // A fresh sign-in starts a new family that works.
    let fresh = http.sign_in("bob@email.com", "1234567890").await.unwrap();
    let rotated = refresh(&fresh.refresh_token).await;
    assert_eq!(rotated.status, 200);
    let current = rotated.body["refresh_token"].as_str().unwrap().to_owned();

    // Signing out with any token of the family ends it; a second sign-out is refused.
    let other_session = http.sign_in("bob@email.com", "1234567890").await.unwrap();
    let sign_out = |token: &str| {
        let body = serde_json::json!({ "refresh_token": token }).to_string();
        async move {
            http.request(Method::POST, "/auth/sign-out", None, Some(&body))
                .await
                .unwrap()
        }
    };
    assert_eq!(sign_out(&current).await.status, 204);
    assert_eq!(refresh(&current).await.status, 401, "signed out");
    assert_eq!(sign_out(&current).await.status, 401);
    assert_eq!(
        refresh(&other_session.refresh_token).await.status,
        200,
        "other sign-ins are untouched"
    );
}

#[tokio::test]
async fn only_participants_can_read_a_chat() {
    let app = TestApp::spawn(shared_servers(BINARY).await, 2).await;
    let http = &app.http;
    let bob_id = http.sign_up_ok(&bob()).await.unwrap();
    let alice_id = http.sign_up_ok(&alice()).await.unwrap();
    http.sign_up_ok(&seed_person("Carol", "outsider")).await.unwrap();
    let bob = http.sign_in("bob@email.com", "1234567890").await.unwrap().access_token;
    let carol = http
        .sign_in("carol.outsider@email.com", "1234567890")
        .await
        .unwrap()
        .access_token;
    let chat_id = http.create_chat(&bob, &alice_id).await.unwrap();

    let read = |token: String, chat: String| async move {
        http.request(
            Method::GET,
            &format!("/messenger/messages?chat_id={chat}"),
            Some(&token),
            None,
        )
        .await
        .unwrap()
    };
    let outsider = read(carol.clone(), chat_id.clone()).await;
    assert_eq!(outsider.status, 404, "{:?}", outsider.body);
    let unknown = read(carol.clone(), uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(
        outsider.body, unknown.body,
        "an outsider cannot tell an existing chat from a missing one"
    );
    assert!(http.chats(&carol).await.unwrap().chats.is_empty());

    let with_self = http
        .request(
            Method::POST,
            "/messenger/create-chat",
            Some(&bob),
            Some(&serde_json::json!({ "companion_id": bob_id }).to_string()),
        )
        .await
        .unwrap();
    assert_eq!(with_self.status, 400);
    let with_stranger = http
        .request(
            Method::POST,
            "/messenger/create-chat",
            Some(&bob),
            Some(&serde_json::json!({ "companion_id": uuid::Uuid::new_v4() }).to_string()),
        )
        .await
        .unwrap();
    assert_eq!(with_stranger.status, 404);
}

#[tokio::test]
async fn the_openapi_document_and_swagger_ui_are_served_at_the_seeds_urls() {
    let app = TestApp::spawn(shared_servers(BINARY).await, 1).await;
    let http = &app.http;
    let document = http
        .request(Method::GET, "/swagger/doc.json", None, None)
        .await
        .unwrap();
    assert_eq!(document.status, 200);
    assert!(document.body["openapi"].as_str().unwrap_or_default().starts_with("3."));
    let paths = document.body["paths"].as_object().expect("paths");
    for path in [
        "/auth/sign-up",
        "/auth/sign-in",
        "/auth/token",
        "/auth/user/get-by-email",
        "/auth/user/get-by-token",
        "/messenger/create-chat",
        "/messenger/chats",
        "/messenger/messages",
        "/messenger/ws",
        "/health/live",
        "/health/ready",
        "/cluster",
    ] {
        assert!(paths.contains_key(path), "{path} is documented");
    }
    let schemas = document.body["components"]["schemas"].as_object().expect("schemas");
    for schema in [
        "SignUpRequest",
        "ErrorBody",
        "MessagesPage",
        "Envelope",
        "DeliveryPayload",
        "AckPayload",
    ] {
        assert!(schemas.contains_key(schema), "{schema} is in the spec");
    }
    let same = http.request(Method::GET, "/openapi.json", None, None).await.unwrap();
    assert_eq!(same.body, document.body);

    let client = reqwest::Client::new();
    let page = client
        .get(format!("{}/swagger/index.html", http.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text().await.unwrap().contains("swagger-ui"),
        "the vendored Swagger UI page"
    );
    let initializer = client
        .get(format!("{}/swagger/swagger-initializer.js", http.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(initializer.status(), 200);
    assert!(
        initializer.text().await.unwrap().contains("/swagger/doc.json"),
        "the UI loads our document"
    );
}

#[tokio::test]
async fn the_web_page_is_served_through_nginx_from_the_binary() {
    let app = TestApp::spawn(shared_servers(BINARY).await, 1).await;
    let client = reqwest::Client::new();
    let get = |path: &'static str| {
        let url = format!("{}{path}", app.http.base_url());
        let client = client.clone();
        async move {
            let response = client.get(url).send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
            let (content_type, cache_control) = (header("content-type"), header("cache-control"));
            assert!(cache_control.contains("max-age="), "{path}: {cache_control}");
            assert!(
                header("content-security-policy").contains("default-src 'self'"),
                "{path}"
            );
            (content_type, response.text().await.unwrap())
        }
    };
    let (html_type, html) = get("/").await;
    assert!(html_type.starts_with("text/html"), "{html_type}");
    assert!(html.contains(r#"<script src="/web/app.js">"#), "{html}");
    assert!(html.contains(r#"href="/web/app.css""#), "{html}");
    let (script_type, script) = get("/web/app.js").await;
    assert!(script_type.starts_with("text/javascript"), "{script_type}");
    assert!(script.contains("/messenger/ws?token="));
    let (style_type, _) = get("/web/app.css").await;
    assert!(style_type.starts_with("text/css"), "{style_type}");
    // Works with no internet: nothing is loaded from another origin.
    for (name, text) in [("index.html", &html), ("app.js", &script)] {
        assert!(
            !text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"),
            "{name} refers to another origin"
        );
    }
    // Each file is its own route label in the metrics of the one node that served them
    // (read on its own port: nginx refuses /metrics).
    let metrics = client
        .get(format!("{}/metrics", app.app.node_url("node-1")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for route in ["/", "/web/app.js", "/web/app.css"] {
        let line = format!(r#"parley_http_requests_total{{method="GET",route="{route}",status="200"}} 1"#);
        assert!(metrics.lines().any(|sample| sample == line), "no {line} in\n{metrics}");
    }
}

/// The value of one sample line of a Prometheus text exposition.
fn sample(metrics: &str, line_prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(line_prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_queries_and_endpoint_health() {
    let app = TestApp::spawn(shared_servers(BINARY).await, 1).await;
    let node = app.node("node-1");
    node.sign_up_ok(&bob()).await.unwrap();
    let token = node.sign_in("bob@email.com", "1234567890").await.unwrap().access_token;
    node.user_id_by_email(&token, "bob@email.com").await.unwrap();
    let missing = node.request(Method::GET, "/no/such/route", None, None).await.unwrap();
    assert_eq!(missing.status, 404);

    let client = reqwest::Client::new();
    let response = client.get(format!("{}/metrics", node.base_url())).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let metrics = response.text().await.unwrap();
    let count = |prefix: &str| sample(&metrics, prefix).unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"));
    assert_eq!(
        count(r#"parley_http_requests_total{method="POST",route="/auth/sign-up",status="201"}"#),
        1.0
    );
    assert_eq!(
        count(r#"parley_http_requests_total{method="GET",route="/auth/user/get-by-email",status="200"}"#),
        1.0
    );
    assert_eq!(
        count(r#"parley_http_requests_total{method="GET",route="other",status="404"}"#),
        1.0
    );
    assert!(count(r#"parley_http_request_duration_seconds_count{route="/auth/sign-in"}"#) >= 1.0);
    assert!(count(r#"parley_database_queries_total{endpoint="master",kind="write",outcome="ok"}"#) >= 2.0);
    assert!(count(r#"parley_database_queries_total{endpoint="haproxy-read",kind="read",outcome="ok"}"#) >= 1.0);
    assert_eq!(count(r#"parley_database_endpoint_healthy{endpoint="master"}"#), 1.0);
    assert_eq!(
        count(r#"parley_database_endpoint_healthy{endpoint="haproxy-read"}"#),
        1.0
    );
    assert_eq!(count("parley_cluster_members"), 1.0);
    assert_eq!(count("parley_websocket_sessions"), 0.0);
}

/// One request with the exact target given (no client library normalises it) and
/// `Connection: close`; the status, the content type and the body.
async fn raw_get(address: &str, target: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut connection = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    connection.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    connection.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// Requests the nodes counted in `parley_http_requests_total`, scrapes of /metrics aside.
async fn requests_counted_besides_scrapes(client: &reqwest::Client, node_url: &str) -> f64 {
    let metrics = client
        .get(format!("{node_url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .filter(|line| line.starts_with("parley_http_requests_total{") && !line.contains(r#"route="/metrics""#))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_and_cluster_are_refused_on_the_public_port_and_served_by_each_node() {
    let app = TestApp::spawn(shared_servers(BINARY).await, 2).await;
    app.wait_cluster_formed().await;
    let client = reqwest::Client::new();
    let node_urls: Vec<String> = ["node-1", "node-2"].map(|node| app.app.node_url(node)).into();
    let counted_before = futures::future::join_all(
        node_urls
            .iter()
            .map(|node_url| requests_counted_besides_scrapes(&client, node_url)),
    )
    .await;

    let public_address = app.http.base_url().trim_start_matches("http://").to_owned();
    let spellings = [
        "/metrics",
        "/metrics/",
        "//metrics",
        "/%6detrics",
        "/%6Detrics",
        "/Metrics",
        "/metrics?name=parley_http_requests_total",
        "/./metrics",
        "/health/../metrics",
        "/metrics;jsessionid=1",
        "/metrics%3F",
        "/cluster",
        "/cluster/",
        "//cluster",
        "/%63luster",
        "/cluster?x",
        "/cluster#fragment",
        "/CLUSTER",
    ];
    for target in spellings {
        let (status, content_type, body) = raw_get(&public_address, target).await;
        assert_eq!(status, 404, "GET {target} through nginx: {body}");
        assert!(
            content_type.starts_with("application/json"),
            "GET {target}: {content_type}"
        );
        let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("GET {target}: {body}"));
        assert_eq!(body["code"], "not_found", "GET {target}: {body}");
        assert!(body["message"].is_string(), "GET {target}: {body}");
    }
    // nginx answered them itself: not one reached a node.
    let counted_after = futures::future::join_all(
        node_urls
            .iter()
            .map(|node_url| requests_counted_besides_scrapes(&client, node_url)),
    )
    .await;
    assert_eq!(counted_after, counted_before, "a refused request reached a node");

    // The rest of the API still goes through, and each node serves both on its own port.
    assert_eq!(raw_get(&public_address, "/health/ready").await.0, 200);
    for node_url in &node_urls {
        let node = parley_client::http::ParleyHttp::new(node_url.as_str());
        let view = node.request(Method::GET, "/cluster", None, None).await.unwrap();
        assert_eq!(view.status, 200, "{}", view.body);
        assert_eq!(view.body["members"].as_array().map(Vec::len), Some(2), "{}", view.body);
        let metrics = client.get(format!("{node_url}/metrics")).send().await.unwrap();
        assert_eq!(metrics.status(), 200);
        assert!(metrics.text().await.unwrap().contains("parley_http_requests_total"));
    }
}
