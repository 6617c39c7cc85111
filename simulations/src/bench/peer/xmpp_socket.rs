//! The XMPP client `bench peer` drives ejabberd with: only what the benchmark needs, over
//! websocket (RFC 7395, one stanza per frame, subprotocol `xmpp`).
//!
//! Sign-in is SASL PLAIN, then resource binding, then stream management (XEP-0198) with
//! resumption requested, then the initial presence (which is what makes the server hand
//! over stored offline messages). Messages are `type='chat'` with a body; each is
//! followed by an `<r/>`, so the server acks every message as Parley does. Archive
//! (MAM, XEP-0313) queries page through the recipient's own archive after a given
//! archive id.
//!
//! Counting follows XEP-0198: after `<enabled/>`, each `message`, `presence` and `iq`
//! either way is one stanza; `<a h='n'/>` says the server has handled our first n.

use std::time::Duration;

use anyhow::{bail, Context};
use base64::prelude::{Engine as _, BASE64_STANDARD};
use futures::{SinkExt, StreamExt};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const FRAMING_NS: &str = "urn:ietf:params:xml:ns:xmpp-framing";
const STREAM_MANAGEMENT_NS: &str = "urn:xmpp:sm:3";

/// What a stream-management session left behind, for a resumption attempt.
#[derive(Debug, Clone)]
pub struct ResumableSession {
    /// The id the server gave in `<enabled/>`.
    pub id: String,
    /// Stanzas received on it.
    pub inbound_handled: u64,
}

/// One frame from the server, as far as the benchmark cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmppEvent {
    /// A message with a body: live, offline (delayed) or an archive result.
    Message {
        /// The body text.
        body: String,
        /// The archive id the server stamped (`<stanza-id/>`, or an archive result's id).
        archive_id: Option<String>,
    },
    /// `<a h='n'/>`: the server has handled our first n stanzas.
    Acked(u64),
    /// `<r/>`: the server asks how many stanzas we handled; answer with [`XmppSocket::answer_ack_request`].
    AckRequested,
    /// The end of an archive query: whether it reached the newest message, and the last id.
    ArchivePageEnd {
        /// `<fin complete='true'>`.
        complete: bool,
        /// The last result's id, for the next page.
        last: Option<String>,
    },
    /// Presence, other iqs, pings answered by the server itself.
    Other,
    /// The stream or the socket ended.
    Ended,
}

/// A signed-in XMPP session over one websocket.
pub struct XmppSocket {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    domain: String,
    /// Our stanzas since `<enabled/>` (or since the resumed session's start).
    outbound_stanzas: u64,
    /// The server's stanzas since `<enabled/>`.
    inbound_stanzas: u64,
    /// The stream-management id, for a later resumption.
    session_id: Option<String>,
}

/// How a sign-in ended when it asked to resume an earlier session.
pub struct SignedIn {
    pub socket: XmppSocket,
    /// `Some(h)` when the earlier session was resumed: the server had handled h of our
    /// stanzas on it. None: a new session.
    pub resumed_with_handled: Option<u64>,
}

/// Who signs in where: a websocket URL, the XMPP domain, the account, the resource.
pub struct XmppSignIn<'a> {
    pub url: &'a str,
    pub domain: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    pub resource: &'a str,
}

impl XmppSocket {
    /// Opens the websocket, signs the user in, binds the resource, enables stream
    /// management (or resumes `previous`), and sends the initial presence of a new
    /// session.
    pub async fn sign_in(
        sign_in: &XmppSignIn<'_>,
        previous: Option<&ResumableSession>,
        timeout: Duration,
    ) -> anyhow::Result<SignedIn> {
        let XmppSignIn { url, username, .. } = sign_in;
        tokio::time::timeout(timeout, Self::sign_in_now(sign_in, previous))
            .await
            .with_context(|| format!("no XMPP session for {username} at {url} within {timeout:?}"))?
    }

    async fn sign_in_now(sign_in: &XmppSignIn<'_>, previous: Option<&ResumableSession>) -> anyhow::Result<SignedIn> {
        let XmppSignIn {
            url,
            domain,
            username,
            password,
            resource,
        } = *sign_in;
        let mut request = url.into_client_request().context("an XMPP websocket url")?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("xmpp"));
        // Frames are small stanzas; tungstenite's default 128 KiB read buffer per socket
        // would cost the memory phase's thousands of sessions gigabytes here for nothing.
        // Each frame is flushed as it is written.
        let config = WebSocketConfig::default()
            .read_buffer_size(4 * 1024)
            .write_buffer_size(0);
        let (socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let mut session = XmppSocket {
            socket,
            domain: domain.to_owned(),
            outbound_stanzas: 0,
            inbound_stanzas: 0,
            session_id: None,
        };
        session.open_stream().await?;
        let credentials = BASE64_STANDARD.encode(format!("\0{username}\0{password}"));
        session
            .write(format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{credentials}</auth>"
            ))
            .await?;
        let answer = session.read_frame().await?;
        if !answer.starts_with("<success") {
            bail!("SASL PLAIN refused for {username}: {answer}");
        }
        session.open_stream().await?;

        if let Some(previous) = previous {
            session
                .write(format!(
                    "<resume xmlns='{STREAM_MANAGEMENT_NS}' h='{}' previd='{}'/>",
                    previous.inbound_handled,
                    escape(&previous.id)
                ))
                .await?;
            let answer = session.read_frame().await?;
            if answer.starts_with("<resumed") {
                let handled = attribute_of_root(&answer, "h")?
                    .and_then(|h| h.parse().ok())
                    .context("<resumed/> without h")?;
                session.session_id = Some(previous.id.clone());
                session.inbound_stanzas = previous.inbound_handled;
                return Ok(SignedIn {
                    socket: session,
                    resumed_with_handled: Some(handled),
                });
            }
            // `<failed/>`: the session is gone (its node died with it); start a new one.
        }

        session
            .write(format!(
                "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{}</resource></bind></iq>",
                escape(resource)
            ))
            .await?;
        let answer = session.read_frame().await?;
        if !(answer.starts_with("<iq") && answer.contains("type='result'")) {
            bail!("binding a resource for {username} failed: {answer}");
        }
        session
            .write(format!("<enable xmlns='{STREAM_MANAGEMENT_NS}' resume='true'/>"))
            .await?;
        let answer = session.read_frame().await?;
        if !answer.starts_with("<enabled") {
            bail!("stream management refused for {username}: {answer}");
        }
        session.session_id = attribute_of_root(&answer, "id")?;
        session.send_stanza("<presence/>".to_owned()).await?;
        Ok(SignedIn {
            socket: session,
            resumed_with_handled: None,
        })
    }

    async fn open_stream(&mut self) -> anyhow::Result<()> {
        self.write(format!(
            "<open xmlns='{FRAMING_NS}' to='{}' version='1.0'/>",
            escape(&self.domain)
        ))
        .await?;
        // `<open/>`, then `<stream:features/>`.
        loop {
            let frame = self.read_frame().await?;
            if frame.starts_with("<stream:features") || frame.starts_with("<features") {
                return Ok(());
            }
            if !frame.starts_with("<open") {
                bail!("expected the stream's features, got {frame}");
            }
        }
    }

    /// What a later sign-in needs to try resuming this session.
    pub fn resumable(&self) -> Option<ResumableSession> {
        self.session_id.as_ref().map(|id| ResumableSession {
            id: id.clone(),
            inbound_handled: self.inbound_stanzas,
        })
    }

    /// Sends a chat message and asks for an ack; returns the message's stanza number
    /// (`<a h='n'/>` with n at least this acks it).
    pub async fn send_chat(&mut self, to: &str, id: &str, body: &str) -> anyhow::Result<u64> {
        let stanza = format!(
            "<message to='{}@{}' type='chat' id='{}'><body>{}</body></message>",
            escape(to),
            escape(&self.domain),
            escape(id),
            escape(body)
        );
        let number = self.send_stanza(stanza).await?;
        self.write(format!("<r xmlns='{STREAM_MANAGEMENT_NS}'/>")).await?;
        Ok(number)
    }

    /// Sends the stanza numbered after the last one on a resumed stream.
    pub fn set_outbound_handled(&mut self, handled: u64) {
        self.outbound_stanzas = handled;
    }

    /// Asks the own archive for the messages after archive id `after` (None: from the
    /// start) with `with`, a page of `page_size`; results arrive as [`XmppEvent::Message`]s,
    /// then an [`XmppEvent::ArchivePageEnd`].
    pub async fn query_archive(&mut self, with: &str, after: Option<&str>, page_size: usize) -> anyhow::Result<()> {
        let after = after.map_or(String::new(), |id| format!("<after>{}</after>", escape(id)));
        let stanza = format!(
            "<iq type='set' id='mam'><query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
             <field var='with'><value>{}@{}</value></field></x>\
             <set xmlns='http://jabber.org/protocol/rsm'><max>{page_size}</max>{after}</set></query></iq>",
            escape(with),
            escape(&self.domain)
        );
        self.send_stanza(stanza).await?;
        Ok(())
    }

    /// Answers the server's `<r/>` with the stanzas received so far.
    pub async fn answer_ack_request(&mut self) -> anyhow::Result<()> {
        self.write(format!(
            "<a xmlns='{STREAM_MANAGEMENT_NS}' h='{}'/>",
            self.inbound_stanzas
        ))
        .await
    }

    /// The next frame, decoded (cancel-safe: nothing is written here).
    pub async fn next_event(&mut self) -> anyhow::Result<XmppEvent> {
        let frame = match self.socket.next().await {
            None | Some(Err(_) | Ok(Message::Close(_))) => return Ok(XmppEvent::Ended),
            Some(Ok(Message::Text(text))) => text.to_string(),
            Some(Ok(_)) => return Ok(XmppEvent::Other),
        };
        let event = decode_frame(&frame).with_context(|| format!("decoding {frame}"))?;
        if is_stanza(&frame) {
            self.inbound_stanzas += 1;
        }
        Ok(event)
    }

    /// Closes the stream and the socket.
    pub async fn close(mut self) {
        let _ = self.write(format!("<close xmlns='{FRAMING_NS}'/>")).await;
        let _ = self.socket.close(None).await;
    }

    async fn send_stanza(&mut self, stanza: String) -> anyhow::Result<u64> {
        self.write(stanza).await?;
        self.outbound_stanzas += 1;
        Ok(self.outbound_stanzas)
    }

    async fn write(&mut self, frame: String) -> anyhow::Result<()> {
        self.socket
            .send(Message::text(frame))
            .await
            .context("writing to the XMPP websocket")
    }

    /// The next text frame during sign-in (the server sends nothing else then).
    async fn read_frame(&mut self) -> anyhow::Result<String> {
        loop {
            match self.socket.next().await {
                None | Some(Ok(Message::Close(_))) => bail!("the server closed the stream during sign-in"),
                Some(Err(error)) => return Err(error).context("reading the XMPP websocket"),
                Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
                Some(Ok(_)) => {}
            }
        }
    }
}

/// Returns once `stopped` says stop (the watch's guard is not held past it, so the
/// caller's future stays `Send`).
pub async fn stop_requested(stopped: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

fn is_stanza(frame: &str) -> bool {
    ["<message", "<presence", "<iq"]
        .iter()
        .any(|start| frame.starts_with(start))
}

/// Decodes one server frame (one element, RFC 7395).
fn decode_frame(frame: &str) -> anyhow::Result<XmppEvent> {
    let mut reader = Reader::from_str(frame);
    let root = match reader.read_event()? {
        Event::Start(element) | Event::Empty(element) => local_name(&element),
        Event::Eof => return Ok(XmppEvent::Other),
        _ => return Ok(XmppEvent::Other),
    };
    match root.as_str() {
        "a" => {
            let h = attribute_of_root(frame, "h")?
                .and_then(|h| h.parse().ok())
                .context("<a/> without a numeric h")?;
            Ok(XmppEvent::Acked(h))
        }
        "r" => Ok(XmppEvent::AckRequested),
        "close" => Ok(XmppEvent::Ended),
        "message" => decode_message(reader),
        "iq" => decode_iq(reader),
        _ => Ok(XmppEvent::Other),
    }
}

/// A message's body and archive id, wherever they sit (an archive result wraps the
/// original message in `<result id=…><forwarded>`).
fn decode_message(mut reader: Reader<&[u8]>) -> anyhow::Result<XmppEvent> {
    let (mut body, mut archive_id, mut in_body) = (None::<String>, None::<String>, false);
    loop {
        match reader.read_event()? {
            Event::Start(element) if local_name(&element) == "body" && body.is_none() => {
                in_body = true;
                body = Some(String::new());
            }
            Event::Start(element) | Event::Empty(element) => {
                let name = local_name(&element);
                if (name == "result" || name == "stanza-id") && archive_id.is_none() {
                    archive_id = element_attribute(&element, "id")?;
                }
            }
            Event::Text(text) if in_body => {
                if let Some(body) = body.as_mut() {
                    body.push_str(&text.unescape()?);
                }
            }
            Event::End(element) if element.local_name().as_ref() == b"body" => in_body = false,
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(match body {
        Some(body) => XmppEvent::Message { body, archive_id },
        None => XmppEvent::Other,
    })
}

/// An archive query's end (`<fin>` with the page's last id), or any other iq.
fn decode_iq(mut reader: Reader<&[u8]>) -> anyhow::Result<XmppEvent> {
    let (mut fin, mut complete, mut last, mut in_last) = (false, false, None::<String>, false);
    loop {
        match reader.read_event()? {
            Event::Start(element) | Event::Empty(element) => match local_name(&element).as_str() {
                "fin" => {
                    fin = true;
                    complete = element_attribute(&element, "complete")?.as_deref() == Some("true");
                }
                "last" => in_last = true,
                _ => {}
            },
            Event::Text(text) if in_last => last = Some(text.unescape()?.into_owned()),
            Event::End(element) if element.local_name().as_ref() == b"last" => in_last = false,
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(match fin {
        true => XmppEvent::ArchivePageEnd { complete, last },
        false => XmppEvent::Other,
    })
}

fn local_name(element: &BytesStart) -> String {
    String::from_utf8_lossy(element.local_name().as_ref()).into_owned()
}

fn element_attribute(element: &BytesStart, name: &str) -> anyhow::Result<Option<String>> {
    for attribute in element.attributes() {
        let attribute = attribute?;
        if attribute.key.local_name().as_ref() == name.as_bytes() {
            return Ok(Some(attribute.unescape_value()?.into_owned()));
        }
    }
    Ok(None)
}

/// An attribute of a frame's root element.
fn attribute_of_root(frame: &str, name: &str) -> anyhow::Result<Option<String>> {
    let mut reader = Reader::from_str(frame);
    loop {
        match reader.read_event()? {
            Event::Start(element) | Event::Empty(element) => return element_attribute(&element, name),
            Event::Eof => return Ok(None),
            _ => {}
        }
    }
}

fn escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_ejabberd_sends() {
        assert_eq!(
            decode_frame("<a h='42' xmlns='urn:xmpp:sm:3'/>").unwrap(),
            XmppEvent::Acked(42)
        );
        assert_eq!(
            decode_frame("<r xmlns='urn:xmpp:sm:3'/>").unwrap(),
            XmppEvent::AckRequested
        );
        let live = "<message xmlns='jabber:client' from='s@d/r' to='r@d/r' type='chat' id='7'>\
                    <body>p1 &amp; m7</body><stanza-id xmlns='urn:xmpp:sid:0' by='r@d' id='1700'/></message>";
        assert_eq!(
            decode_frame(live).unwrap(),
            XmppEvent::Message {
                body: "p1 & m7".into(),
                archive_id: Some("1700".into())
            }
        );
        let archived = "<message xmlns='jabber:client' to='r@d/r'><result xmlns='urn:xmpp:mam:2' queryid='q' id='1701'>\
                        <forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='x'/>\
                        <message xmlns='jabber:client' type='chat'><body>m8</body></message></forwarded></result></message>";
        assert_eq!(
            decode_frame(archived).unwrap(),
            XmppEvent::Message {
                body: "m8".into(),
                archive_id: Some("1701".into())
            }
        );
        let fin = "<iq xmlns='jabber:client' type='result' id='mam'><fin xmlns='urn:xmpp:mam:2' complete='true'>\
                   <set xmlns='http://jabber.org/protocol/rsm'><first>1</first><last>1701</last></set></fin></iq>";
        assert_eq!(
            decode_frame(fin).unwrap(),
            XmppEvent::ArchivePageEnd {
                complete: true,
                last: Some("1701".into())
            }
        );
        assert_eq!(decode_frame("<presence from='a@d/r'/>").unwrap(), XmppEvent::Other);
    }
}
