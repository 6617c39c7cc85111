//! Carrying a trace across the cluster hop without tying the actors to a telemetry
//! library.
//!
//! Within a node a trace follows a message as `tracing` spans handed along in actor
//! messages (a `Span` is a cheap handle). Between nodes the span must become text in the
//! `PeerMessage`: the node binary, which owns the OpenTelemetry setup, supplies the
//! [`TracePropagation`] that turns a span into a W3C `traceparent` and back.

/// Turns spans into W3C trace context and back.
pub trait TracePropagation: Send + Sync {
    /// The `traceparent` of `span`, or None when traces are not recorded.
    fn traceparent_of(&self, span: &tracing::Span) -> Option<String>;

    /// Makes `span` continue the trace `traceparent` names (a malformed one is ignored).
    fn continue_trace(&self, span: &tracing::Span, traceparent: &str);
}

/// No tracing backend: nothing crosses the hop, and every trace ends at the node.
pub struct NoTracePropagation;

impl TracePropagation for NoTracePropagation {
    fn traceparent_of(&self, _span: &tracing::Span) -> Option<String> {
        None
    }

    fn continue_trace(&self, _span: &tracing::Span, _traceparent: &str) {}
}
