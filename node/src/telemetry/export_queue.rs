//! The way out for spans: a bounded queue that one task drains in batches to the OTLP
//! exporter. Ending a span only tries to enqueue it, so a collector that is absent, slow
//! or dying costs a request nothing; when the queue is full the span is dropped and
//! counted (`parley_trace_spans_dropped_total`), and so is every batch the collector
//! does not take (`parley_trace_exports_failed_total`).

use std::sync::Mutex;
use std::time::Duration;

use actors::metrics::Metrics;
use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::mpsc;

/// What the queue needs to know.
pub struct ExportQueueSettings {
    /// Spans waiting at most.
    pub capacity: usize,
    /// Spans per export request at most.
    pub batch_spans: usize,
    /// A span waits at most this long for its batch to fill.
    pub interval: Duration,
    /// One export attempt gives up after this.
    pub export_timeout: Duration,
}

/// A [`SpanProcessor`] that never blocks the span's end.
#[derive(Debug)]
pub struct BoundedExportQueue {
    queue: Mutex<Option<mpsc::Sender<SpanData>>>,
    drained: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    dropped: prometheus::IntCounter,
}

impl BoundedExportQueue {
    /// Starts the draining task on the current tokio runtime.
    pub fn start<E>(exporter: E, settings: ExportQueueSettings, metrics: &Metrics) -> BoundedExportQueue
    where
        E: SpanExporter + 'static,
    {
        let (queue, spans) = mpsc::channel(settings.capacity.max(1));
        let (drained_sender, drained) = std::sync::mpsc::channel();
        let failed = metrics.trace_exports_failed.clone();
        tokio::spawn(async move {
            drain(exporter, spans, &settings, &failed).await;
            let _ = drained_sender.send(());
        });
        BoundedExportQueue {
            queue: Mutex::new(Some(queue)),
            drained: Mutex::new(Some(drained)),
            dropped: metrics.trace_spans_dropped.clone(),
        }
    }
}

/// Exports batches until the queue is closed and empty.
async fn drain<E: SpanExporter>(
    exporter: E,
    mut spans: mpsc::Receiver<SpanData>,
    settings: &ExportQueueSettings,
    failed: &prometheus::IntCounter,
) {
    let mut closed = false;
    while !closed {
        let Some(first) = spans.recv().await else {
            break;
        };
        let mut batch = vec![first];
        let batch_deadline = tokio::time::Instant::now() + settings.interval;
        while batch.len() < settings.batch_spans {
            match tokio::time::timeout_at(batch_deadline, spans.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        match tokio::time::timeout(settings.export_timeout, exporter.export(batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                failed.inc();
                tracing::debug!(%error, "span export failed");
            }
            Err(_) => {
                failed.inc();
                tracing::debug!(timeout = ?settings.export_timeout, "span export timed out");
            }
        }
    }
    let _ = exporter.shutdown();
}

impl SpanProcessor for BoundedExportQueue {
    fn on_start(&self, _span: &mut Span, _context: &Context) {}

    fn on_end(&self, span: SpanData) {
        let queue = self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let sent = queue.as_ref().is_some_and(|queue| queue.try_send(span).is_ok());
        if !sent {
            self.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    /// Closes the queue and waits (at most `timeout`) for the spans in it to go out.
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let drained = self
            .drained
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        match drained.map(|drained| drained.recv_timeout(timeout)) {
            Some(Ok(())) | None => Ok(()),
            Some(Err(_)) => Err(OTelSdkError::Timeout(timeout)),
        }
    }
}
