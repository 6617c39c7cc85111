//! Logs and traces: `tracing` to stderr always, and spans over OTLP (gRPC) when an
//! endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`, as every OpenTelemetry SDK
//! reads it).
//!
//! Export must never hold up a request: spans go into a bounded queue that a background
//! worker drains in batches; when the collector is absent, slow or dying the queue fills
//! and further spans are dropped, and each export attempt gives up after a timeout.

mod export_queue;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actors::metrics::Metrics;
use actors::trace_context::{NoTracePropagation, TracePropagation};
use anyhow::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter as _};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Spans waiting for export at most; past it new spans are dropped.
const EXPORT_QUEUE_SPANS: usize = 8192;
/// Spans per export request.
const EXPORT_BATCH_SPANS: usize = 512;
/// How often the queue is drained.
const EXPORT_INTERVAL: Duration = Duration::from_millis(500);
/// One export attempt gives up after this.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// At exit, the last spans get this long to leave.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(2);

/// warp's request tracing logs two lines per request at `info` (a log file's worth of
/// CPU per second under load); the request spans stay, and `http.rs` logs failures.
const DEFAULT_LOG_FILTER: &str = "info,warp::filters::trace=off";

/// Keeps the exporter alive; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber. With `otlp_endpoint`, spans of the node's own
    /// crates are exported with `service.name=parley`, `service.instance.id=<node_name>`;
    /// `metrics` counts the spans dropped and the exports that failed.
    pub fn install(node_name: &str, otlp_endpoint: Option<&str>, metrics: &Metrics) -> anyhow::Result<Telemetry> {
        // Colours only on a terminal: nodes usually log to files.
        let log_layer = tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER)));
        let Some(endpoint) = otlp_endpoint.filter(|endpoint| !endpoint.trim().is_empty()) else {
            tracing_subscriber::registry().with(log_layer).init();
            return Ok(Telemetry { provider: None });
        };
        let mut exporter = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .with_context(|| format!("building the OTLP exporter for {endpoint}"))?;
        let resource = Resource::builder()
            .with_service_name("parley")
            .with_attribute(KeyValue::new("service.instance.id", node_name.to_owned()))
            .build();
        exporter.set_resource(&resource);
        let queue = export_queue::BoundedExportQueue::start(
            exporter,
            export_queue::ExportQueueSettings {
                capacity: EXPORT_QUEUE_SPANS,
                batch_spans: EXPORT_BATCH_SPANS,
                interval: EXPORT_INTERVAL,
                export_timeout: EXPORT_TIMEOUT,
            },
            metrics,
        );
        let provider = SdkTracerProvider::builder()
            .with_span_processor(queue)
            .with_resource(resource)
            .build();
        // Only the node's own spans: the actor framework's and the drivers' would drown
        // the message's path in noise.
        let own_spans = Targets::new()
            .with_target("parley_node", tracing::Level::INFO)
            .with_target("parley_actors", tracing::Level::INFO);
        let trace_layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("parley"))
            .with_filter(own_spans);
        tracing_subscriber::registry().with(log_layer).with(trace_layer).init();
        tracing::info!(%endpoint, "exporting traces over otlp");
        Ok(Telemetry {
            provider: Some(provider),
        })
    }

    /// How the actors carry traces over the cluster hop.
    pub fn propagation(&self) -> Arc<dyn TracePropagation> {
        match self.provider {
            Some(_) => Arc::new(W3cTracePropagation::default()),
            None => Arc::new(NoTracePropagation),
        }
    }

    /// Sends the spans still queued, waiting at most a moment: an absent collector must
    /// not delay the exit.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let flushing = tokio::task::spawn_blocking(move || provider.shutdown());
        if tokio::time::timeout(FLUSH_AT_EXIT, flushing).await.is_err() {
            tracing::warn!("traces still queued at exit were dropped");
        }
    }
}

/// W3C `traceparent` in and out of `tracing` spans.
#[derive(Default)]
pub struct W3cTracePropagation {
    propagator: TraceContextPropagator,
}

impl TracePropagation for W3cTracePropagation {
    fn traceparent_of(&self, span: &tracing::Span) -> Option<String> {
        let mut carrier: HashMap<String, String> = HashMap::new();
        self.propagator.inject_context(&span.context(), &mut carrier);
        carrier.remove("traceparent")
    }

    fn continue_trace(&self, span: &tracing::Span, traceparent: &str) {
        let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
        let _ = span.set_parent(self.propagator.extract(&carrier));
    }
}
