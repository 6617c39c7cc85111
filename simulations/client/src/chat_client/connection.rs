//! The background task of a `ChatClient`: connect, consume the replay like live traffic,
//! write unacked messages once the replay is complete, report `received`, and when the
//! socket dies start over through the same base URL after a backoff.

use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use protocol::websocket::{actions, CursorPayload, RenewPayload, SendMessagePayload};
use tokio::sync::{mpsc, watch};
use tokio::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::socket::{envelope_message, normal_close, open_messenger_socket};

use super::inbox::Inbox;
use super::outbox::Outbox;
use super::token_keeper::{RefreshFailure, TokenKeeper};
use super::{ChatClientConfig, ChatClientEvent, ChatClientStats, ClientCommand};

mod server_frames;

type Socket = crate::socket::WebSocket;

/// Why a connection ended.
enum ConnectionEnd {
    ShutdownRequested,
    /// The sign-in is over: the client stops.
    SignedOut(String),
    Lost {
        reason: String,
        reached_live: bool,
    },
}

enum ConnectAttempt {
    Open(Box<Socket>),
    Failed(String),
    ShutdownRequested,
}

/// The state of one open socket.
struct OpenConnection {
    sink: SplitSink<Socket, Message>,
    number: u64,
    opened_at: Instant,
    first_traffic_at: Option<Instant>,
    live: bool,
    last_frame_at: Instant,
    advanced_since_report: u64,
}

impl OpenConnection {
    fn note_traffic(&mut self, now: Instant) {
        self.first_traffic_at.get_or_insert(now);
    }
}

fn lost(reason: impl Into<String>, connection: &OpenConnection) -> ConnectionEnd {
    ConnectionEnd::Lost {
        reason: reason.into(),
        reached_live: connection.live,
    }
}

pub(super) async fn run_client(
    config: ChatClientConfig,
    commands: mpsc::UnboundedReceiver<ClientCommand>,
    events: mpsc::UnboundedSender<ChatClientEvent>,
    stats: watch::Sender<ChatClientStats>,
) {
    let tokens = TokenKeeper::new(&config.base_url, config.token.clone(), config.refresh_token.clone());
    let mut task = ClientTask {
        tokens,
        config,
        commands,
        events,
        stats,
        counters: ChatClientStats::default(),
        inbox: Inbox::default(),
        outbox: Outbox::default(),
        connections_opened: 0,
        disconnected_at: None,
    };
    task.run().await;
    task.counters.live = false;
    task.publish_stats();
    tracing::debug!("chat client stopped");
}

struct ClientTask {
    config: ChatClientConfig,
    tokens: TokenKeeper,
    commands: mpsc::UnboundedReceiver<ClientCommand>,
    events: mpsc::UnboundedSender<ChatClientEvent>,
    stats: watch::Sender<ChatClientStats>,
    /// The task's own copy, published after every step.
    counters: ChatClientStats,
    inbox: Inbox,
    outbox: Outbox,
    connections_opened: u64,
    /// Set when a connection is lost, cleared by the next `replay-complete`.
    disconnected_at: Option<Instant>,
}

impl ClientTask {
    async fn run(&mut self) {
        let mut consecutive_failures: u32 = 0;
        loop {
            let base_url = match (&self.config.first_connect_base_url, self.connections_opened) {
                (Some(first), 0) => first.clone(),
                _ => self.config.base_url.clone(),
            };
            if self.tokens.renewal_due() {
                if let Err(RefreshFailure::SignedOut(reason)) = self.tokens.refresh().await {
                    return self.stop_signed_out(reason);
                }
            }
            match self.connect(&base_url).await {
                ConnectAttempt::ShutdownRequested => return,
                ConnectAttempt::Failed(reason) => {
                    self.counters.connect_failures += 1;
                    self.publish_stats();
                    tracing::debug!(%base_url, %reason, "chat client could not connect");
                }
                ConnectAttempt::Open(socket) => match self.drive(*socket).await {
                    ConnectionEnd::ShutdownRequested => return,
                    ConnectionEnd::SignedOut(reason) => return self.stop_signed_out(reason),
                    ConnectionEnd::Lost { reached_live, .. } => {
                        // A connection that got through its replay was a success: the
                        // next outage starts again from the shortest delay.
                        if reached_live {
                            consecutive_failures = 0;
                        }
                    }
                },
            }
            let delay = self.config.reconnect_backoff.next_delay(consecutive_failures);
            consecutive_failures = consecutive_failures.saturating_add(1);
            if !self.wait_offline(delay).await {
                return;
            }
        }
    }

    fn stop_signed_out(&mut self, reason: String) {
        tracing::info!(%reason, "chat client signed out; stopping");
        self.emit(ChatClientEvent::SignedOut { reason });
    }

    /// Opens a socket, queueing sends meanwhile.
    async fn connect(&mut self, base_url: &str) -> ConnectAttempt {
        let token = self.tokens.access_token().to_owned();
        let attempt = open_messenger_socket(base_url, &token, self.config.connect_timeout);
        tokio::pin!(attempt);
        loop {
            tokio::select! {
                outcome = &mut attempt => {
                    return match outcome {
                        Ok(socket) => ConnectAttempt::Open(Box::new(socket)),
                        Err(error) => ConnectAttempt::Failed(error.to_string()),
                    };
                }
                command = self.commands.recv() => {
                    if !self.take_command_while_offline(command) {
                        return ConnectAttempt::ShutdownRequested;
                    }
                }
            }
        }
    }

    /// Sleeps out a backoff delay, queueing sends meanwhile. False: shut down.
    async fn wait_offline(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                command = self.commands.recv() => {
                    if !self.take_command_while_offline(command) {
                        return false;
                    }
                }
            }
        }
    }

    fn take_command_while_offline(&mut self, command: Option<ClientCommand>) -> bool {
        match command {
            Some(ClientCommand::Send {
                client_id,
                chat_id,
                text,
            }) => {
                self.queue_message(client_id, chat_id, text);
                self.publish_stats();
                true
            }
            Some(ClientCommand::Shutdown) | None => false,
        }
    }

    fn queue_message(&mut self, client_id: String, chat_id: String, text: String) {
        self.outbox.push(client_id, chat_id, text);
        self.counters.messages_queued += 1;
        self.counters.messages_unacked = self.outbox.unacked() as u64;
    }

    async fn drive(&mut self, socket: Socket) -> ConnectionEnd {
        self.connections_opened += 1;
        let now = Instant::now();
        let (sink, mut stream) = socket.split();
        let mut connection = OpenConnection {
            sink,
            number: self.connections_opened,
            opened_at: now,
            first_traffic_at: None,
            live: false,
            last_frame_at: now,
            advanced_since_report: 0,
        };
        self.outbox.begin_connection();
        self.inbox.begin_connection();
        self.counters.connections_opened += 1;
        if connection.number > 1 {
            self.counters.reconnects += 1;
        }
        self.counters.messages_in_flight = 0;
        self.publish_stats();
        tracing::debug!(connection = connection.number, "chat client connected; awaiting replay");

        let mut report_tick = tokio::time::interval(self.config.received_report_interval);
        report_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let keepalive_period = self.config.keepalive_interval;
        let mut keepalive_tick = tokio::time::interval_at(now + keepalive_period, keepalive_period);
        let end = loop {
            let retry_at = self.outbox.next_retry_at();
            let renew_at = self.tokens.renew_at();
            let step = tokio::select! {
                _ = sleep_until_if_some(renew_at) => self.renew_token(&mut connection).await,
                frame = stream.next() => self.on_frame(&mut connection, frame).await,
                command = self.commands.recv() => self.on_command_while_connected(&mut connection, command).await,
                _ = report_tick.tick() => self.send_received_reports(&mut connection).await,
                _ = keepalive_tick.tick() => self.keep_alive(&mut connection).await,
                _ = sleep_until_if_some(retry_at) => {
                    self.outbox.release_due_retries(Instant::now());
                    self.write_due_messages(&mut connection).await
                }
            };
            self.counters.messages_in_flight = self.outbox.in_flight() as u64;
            self.publish_stats();
            if let Err(end) = step {
                break end;
            }
        };
        if let ConnectionEnd::Lost { reason, .. } = &end {
            self.disconnected_at.get_or_insert_with(Instant::now);
            self.counters.live = false;
            self.publish_stats();
            tracing::info!(connection = connection.number, %reason, "chat client lost its connection; reconnecting");
            self.emit(ChatClientEvent::Disconnected {
                connection_number: connection.number,
                reason: reason.clone(),
            });
        }
        end
    }

    async fn on_command_while_connected(
        &mut self,
        connection: &mut OpenConnection,
        command: Option<ClientCommand>,
    ) -> Result<(), ConnectionEnd> {
        // Everything the application queued meanwhile goes out together, in fewer frames.
        let mut next = command;
        loop {
            match next {
                Some(ClientCommand::Send {
                    client_id,
                    chat_id,
                    text,
                }) => self.queue_message(client_id, chat_id, text),
                Some(ClientCommand::Shutdown) | None => return Err(self.close_for_shutdown(connection).await),
            }
            match self.commands.try_recv() {
                Ok(command) => next = Some(command),
                Err(_) => break,
            }
        }
        self.write_due_messages(connection).await
    }

    async fn close_for_shutdown(&mut self, connection: &mut OpenConnection) -> ConnectionEnd {
        // Reporting first spares the user's next connection a replay of what we hold.
        if self.send_received_reports(connection).await.is_ok() {
            let _ = connection.sink.send(Message::Close(Some(normal_close()))).await;
            let _ = connection.sink.close().await;
        }
        tracing::debug!(connection = connection.number, "chat client closed its connection");
        ConnectionEnd::ShutdownRequested
    }

    /// Writes queued messages, but only once the replay is complete: the resends must
    /// follow the replay so the server has everything committed in view.
    async fn write_due_messages(&mut self, connection: &mut OpenConnection) -> Result<(), ConnectionEnd> {
        if !connection.live {
            return Ok(());
        }
        let frames = self
            .outbox
            .take_frames(self.config.max_in_flight, self.config.max_messages_per_frame);
        if frames.is_empty() {
            return Ok(());
        }
        for frame in frames {
            let (written, rewritten) = (frame.messages.len() as u64, frame.rewritten_messages);
            let payload = SendMessagePayload {
                chat_id: frame.chat_id,
                messages: frame.messages,
            };
            if let Err(error) = connection
                .sink
                .feed(envelope_message(actions::SEND_MESSAGE, &payload, None))
                .await
            {
                return Err(lost(format!("writing failed: {error}"), connection));
            }
            self.counters.messages_written += written;
            self.counters.messages_resent += rewritten;
        }
        if let Err(error) = connection.sink.flush().await {
            return Err(lost(format!("writing failed: {error}"), connection));
        }
        Ok(())
    }

    async fn report_if_batch_full(&mut self, connection: &mut OpenConnection) -> Result<(), ConnectionEnd> {
        if connection.advanced_since_report >= self.config.received_report_every_messages {
            self.send_received_reports(connection).await?;
        }
        Ok(())
    }

    async fn send_received_reports(&mut self, connection: &mut OpenConnection) -> Result<(), ConnectionEnd> {
        connection.advanced_since_report = 0;
        let due = self.inbox.take_due_reports();
        if due.is_empty() {
            return Ok(());
        }
        for (chat_id, seq) in due {
            let report = envelope_message(actions::RECEIVED, &CursorPayload { chat_id, seq }, None);
            if let Err(error) = connection.sink.feed(report).await {
                return Err(lost(format!("writing failed: {error}"), connection));
            }
            self.counters.received_reports_sent += 1;
        }
        if let Err(error) = connection.sink.flush().await {
            return Err(lost(format!("writing failed: {error}"), connection));
        }
        Ok(())
    }

    /// Fetches a fresh token pair and sends the access token over the socket. A passing
    /// failure is tried again shortly; the socket lives on its old token meanwhile.
    async fn renew_token(&mut self, connection: &mut OpenConnection) -> Result<(), ConnectionEnd> {
        match self.tokens.refresh().await {
            Ok(()) => {}
            Err(RefreshFailure::SignedOut(reason)) => return Err(ConnectionEnd::SignedOut(reason)),
            Err(failure @ RefreshFailure::Passing(_)) => {
                tracing::debug!(%failure, "chat client could not renew its token yet");
                return Ok(());
            }
        }
        let renew = RenewPayload {
            access_token: self.tokens.access_token().to_owned(),
        };
        if let Err(error) = connection
            .sink
            .send(envelope_message(actions::RENEW, &renew, None))
            .await
        {
            return Err(lost(format!("writing failed: {error}"), connection));
        }
        Ok(())
    }

    async fn keep_alive(&mut self, connection: &mut OpenConnection) -> Result<(), ConnectionEnd> {
        let silent_for = connection.last_frame_at.elapsed();
        if silent_for > self.config.silence_timeout {
            return Err(lost(format!("nothing heard for {silent_for:?}"), connection));
        }
        // The server's websocket layer answers pings, so a healthy connection is never silent.
        if let Err(error) = connection.sink.send(Message::Ping(Default::default())).await {
            return Err(lost(format!("writing failed: {error}"), connection));
        }
        Ok(())
    }

    fn emit(&self, event: ChatClientEvent) {
        // The application may have dropped the receiver to rely on the counters alone.
        let _ = self.events.send(event);
    }

    fn publish_stats(&self) {
        self.stats.send_replace(self.counters.clone());
    }
}

async fn sleep_until_if_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
