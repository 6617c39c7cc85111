//! An OTLP/gRPC trace collector inside parley-sim: nodes started with
//! `--otlp-endpoint` set to [`TraceCollector::endpoint`] export their spans here, where a
//! test or a benchmark reads them ([`TraceCollector::spans`]) instead of asking Jaeger.
//!
//! It keeps every span it receives in memory, so it is for bounded runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::Context;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use tokio::task::JoinHandle;

/// One span as the collector received it.
#[derive(Debug, Clone)]
pub struct CollectedSpan {
    /// The trace id (16 bytes).
    pub trace_id: Vec<u8>,
    /// The span id (8 bytes).
    pub span_id: Vec<u8>,
    /// The parent span's id; empty for a root span.
    pub parent_span_id: Vec<u8>,
    /// The span's name.
    pub name: String,
    /// `service.instance.id` of the exporting node (its node name).
    pub instance: String,
    /// `service.name` of the exporting process.
    pub service: String,
    /// The span's attributes, each as text.
    pub attributes: BTreeMap<String, String>,
    /// Start time, nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    /// End time, nanoseconds since the Unix epoch.
    pub end_unix_ns: u64,
}

#[derive(Default, Clone)]
struct ReceivedSpans {
    spans: Arc<Mutex<Vec<CollectedSpan>>>,
}

impl ReceivedSpans {
    fn lock(&self) -> MutexGuard<'_, Vec<CollectedSpan>> {
        self.spans.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running collector; dropping it stops the server.
pub struct TraceCollector {
    received: ReceivedSpans,
    endpoint: String,
    server: JoinHandle<()>,
}

impl TraceCollector {
    /// Serves OTLP/gRPC on a free loopback port.
    pub async fn start() -> anyhow::Result<TraceCollector> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the trace collector's port")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let received = ReceivedSpans::default();
        let service = TraceServiceServer::new(received.clone());
        let server = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the trace collector stopped");
            }
        });
        Ok(TraceCollector {
            received,
            endpoint,
            server,
        })
    }

    /// The URL to give nodes as `--otlp-endpoint`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<CollectedSpan> {
        self.received.lock().clone()
    }

    /// Forgets the spans received so far (a benchmark's warm-up).
    pub fn clear(&self) {
        self.received.lock().clear();
    }
}

impl Drop for TraceCollector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn text_of(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .filter_map(|attribute| {
            let value = match attribute.value.as_ref()?.value.as_ref()? {
                Value::StringValue(text) => text.clone(),
                Value::IntValue(number) => number.to_string(),
                Value::BoolValue(flag) => flag.to_string(),
                Value::DoubleValue(number) => number.to_string(),
                other => format!("{other:?}"),
            };
            Some((attribute.key.clone(), value))
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for ReceivedSpans {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let resource = text_of(
                &resource_spans
                    .resource
                    .map(|resource| resource.attributes)
                    .unwrap_or_default(),
            );
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    received.push(CollectedSpan {
                        trace_id: span.trace_id,
                        span_id: span.span_id,
                        parent_span_id: span.parent_span_id,
                        name: span.name,
                        instance: resource.get("service.instance.id").cloned().unwrap_or_default(),
                        service: resource.get("service.name").cloned().unwrap_or_default(),
                        attributes: text_of(&span.attributes),
                        start_unix_ns: span.start_time_unix_nano,
                        end_unix_ns: span.end_time_unix_nano,
                    });
                }
            }
        }
        self.lock().extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}
