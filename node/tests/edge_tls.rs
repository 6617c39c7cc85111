//! TLS at the edge: nginx serves HTTPS and WSS on the public port with a certificate
//! made here, by a CA made here. Sign-up, sign-in, a chat and a message between two users
//! over a websocket all go through TLS; plain HTTP sent to the same port is redirected
//! (GET) or refused (anything else), never served.

#[path = "support/test_app.rs"]
mod test_app;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use parley_client::http::{seed_person, ParleyHttp};
use parley_launcher::EdgeTlsFiles;
use protocol::websocket::{actions, AckPayload, DeliveryPayload, Envelope, SendMessagePayload};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use test_app::{shared_servers, text_message, TestApp, TEST_NODE_ARGS};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const BINARY: &str = "edge_tls";
const WAIT: Duration = Duration::from_secs(10);

/// A CA of the test's own and a server certificate it issued for `localhost` and
/// 127.0.0.1, written where nginx reads them.
struct EdgeCertificates {
    _directory: tempfile::TempDir,
    files: EdgeTlsFiles,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
}

fn make_edge_certificates() -> EdgeCertificates {
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "parley edge test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let mut server_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    server_params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    server_params.distinguished_name.push(DnType::CommonName, "localhost");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().unwrap();
    let server_certificate = server_params.signed_by(&server_key, &ca).unwrap();

    let directory = tempfile::tempdir().unwrap();
    let certificate_path = directory.path().join("edge.pem");
    let key_path = directory.path().join("edge.key");
    std::fs::write(&certificate_path, server_certificate.pem()).unwrap();
    std::fs::write(&key_path, server_key.serialize_pem()).unwrap();
    EdgeCertificates {
        files: EdgeTlsFiles::checked(&certificate_path, &key_path).unwrap(),
        _directory: directory,
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
    }
}

/// An HTTPS client that trusts the test CA only; redirects are not followed, so a test
/// sees them.
fn https_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(WAIT)
        .build()
        .unwrap()
}

type SecureSocket = WebSocketStream<TlsStream<TcpStream>>;

/// `wss://127.0.0.1:PORT/messenger/ws?token=…`, with a TLS connector that trusts the
/// test CA and checks the certificate names 127.0.0.1.
async fn open_secure_socket(port: u16, token: &str, ca: &CertificateDer<'static>) -> SecureSocket {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    // Named explicitly: reqwest's ring and tokio-rustls's aws-lc-rs are both linked in,
    // so rustls cannot pick a process-wide default.
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let server_name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .expect("the TLS handshake with nginx, trusting the test CA");
    let url = format!("wss://127.0.0.1:{port}/messenger/ws?token={token}");
    let (socket, response) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, tls))
        .await
        .expect("the websocket upgrade within the deadline")
        .expect("the websocket upgrade over TLS");
    assert_eq!(response.status().as_u16(), 101);
    socket
}

/// The next envelope with `action`, skipping others (presence, status, heartbeats).
async fn next_action(socket: &mut SecureSocket, action: &str) -> Envelope {
    let deadline = Instant::now() + WAIT;
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.next())
            .await
            .unwrap_or_else(|_| panic!("no {action} frame within {WAIT:?}"))
            .unwrap_or_else(|| panic!("the socket ended before a {action} frame"))
            .unwrap();
        if let Message::Text(text) = frame {
            let envelope: Envelope = serde_json::from_str(text.as_str()).unwrap();
            if envelope.action == action {
                return envelope;
            }
        }
    }
}

#[tokio::test]
async fn https_and_wss_carry_the_walkthrough_and_plain_http_is_not_served() {
    let certificates = make_edge_certificates();
    let app = TestApp::spawn_with_edge_tls(
        shared_servers(BINARY).await,
        2,
        TEST_NODE_ARGS,
        Some(certificates.files.clone()),
    )
    .await;
    let public_url = app.app.public_url();
    let port = app.app.public_port();
    assert_eq!(public_url, format!("https://127.0.0.1:{port}"));

    // A client that does not trust the test CA is refused the handshake: the port
    // really serves this certificate, not plain HTTP.
    let untrusting = reqwest::Client::builder().no_proxy().timeout(WAIT).build().unwrap();
    let refused = untrusting.get(format!("{public_url}/health/ready")).send().await;
    assert!(refused.is_err(), "a client without the test CA got {refused:?}");

    // The seed's walkthrough over HTTPS.
    let https = https_client(&certificates.ca_pem);
    let http = ParleyHttp::with_client(public_url.clone(), https.clone());
    let ready = https.get(format!("{public_url}/health/ready")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let _bob_id = http.sign_up_ok(&seed_person("Bob", "edge")).await.unwrap();
    let alice_id = http.sign_up_ok(&seed_person("Alice", "edge")).await.unwrap();
    let bob = http
        .sign_in("bob.edge@email.com", "1234567890")
        .await
        .unwrap()
        .access_token;
    let alice = http
        .sign_in("alice.edge@email.com", "1234567890")
        .await
        .unwrap()
        .access_token;
    let chat_id = http.create_chat(&bob, &alice_id).await.unwrap();

    // Two websockets over WSS; each is live once its replay is complete.
    let mut bob_socket = open_secure_socket(port, &bob, &certificates.ca_der).await;
    let mut alice_socket = open_secure_socket(port, &alice, &certificates.ca_der).await;
    next_action(&mut bob_socket, actions::REPLAY_COMPLETE).await;
    next_action(&mut alice_socket, actions::REPLAY_COMPLETE).await;
    let send = Envelope::messenger(
        actions::SEND_MESSAGE,
        &SendMessagePayload {
            chat_id: chat_id.clone(),
            messages: vec![text_message("over wss")],
        },
        None,
    );
    bob_socket.send(Message::text(send.to_text())).await.unwrap();
    let ack: AckPayload = next_action(&mut bob_socket, actions::ACK)
        .await
        .decode_payload()
        .unwrap();
    assert_eq!((ack.chat_id.as_str(), ack.acks.len()), (chat_id.as_str(), 1));
    let delivery: DeliveryPayload = next_action(&mut alice_socket, actions::SEND_MESSAGE)
        .await
        .decode_payload()
        .unwrap();
    assert_eq!(delivery.messages.len(), 1);
    assert_eq!(delivery.messages[0].text, "over wss");
    assert_eq!(delivery.messages[0].seq, ack.acks[0].seq);
    let history = http.messages(&alice, &chat_id, 0, 10).await.unwrap();
    let texts: Vec<&str> = history.messages.iter().map(|message| message.text.as_str()).collect();
    assert_eq!(texts, ["over wss"]);

    // Plain HTTP to the same port: a GET is sent to https:// (a browser typing the
    // address lands on the page), anything else is refused as JSON.
    let plain = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(WAIT)
        .build()
        .unwrap();
    let plain_url = format!("http://127.0.0.1:{port}");
    let redirected = plain.get(format!("{plain_url}/health/ready?x=1")).send().await.unwrap();
    assert_eq!(redirected.status().as_u16(), 301);
    assert_eq!(
        redirected.headers()["location"].to_str().unwrap(),
        format!("https://127.0.0.1:{port}/health/ready?x=1")
    );
    let refused = plain
        .post(format!("{plain_url}/auth/sign-in"))
        .header("content-type", "application/json")
        .body(r#"{"email":"bob.edge@email.com","password":"1234567890"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "https_required", "{body}");
}
