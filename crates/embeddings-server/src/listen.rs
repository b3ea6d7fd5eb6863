//! Accepting connections, with the limits `axum::serve` has no settings
//! for: a cap on open connections, and hyper's header-read timeout. Built
//! from hyper's HTTP/1.1 connection builder with the Tokio timer and
//! hyper-util's graceful shutdown (the pieces `axum::serve` is made of).
//!
//! HTTP/1.1 only: every client we serve speaks it, and the auto HTTP/1 +
//! HTTP/2 builder first reads the HTTP/2 preface with no timer running, so a
//! client that sends one byte and stops would hold its connection forever.
//! With HTTP/1.1 alone hyper's header timer runs from the connection's first
//! read: a client must send a request's headers within the timeout, and a
//! keep-alive connection left idle that long is closed.

use std::future::Future;
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use crate::app::AppState;

/// The connection limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    /// Connections open at once; more are closed as soon as accepted.
    pub(crate) max_connections: usize,
    /// Longest wait for a request's headers, and the longest a keep-alive
    /// connection may stay idle.
    pub(crate) header_read_timeout: Duration,
}

/// Serves `app` on `listener` until `signal`, then stops accepting and lets
/// open connections finish their requests for at most `grace` (idle ones
/// are closed at once).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    state: Arc<AppState>,
    limits: ConnectionLimits,
    signal: impl Future<Output = ()>,
    grace: Duration,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut signal = std::pin::pin!(signal);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // The peer gave up before we took the connection: nothing to do.
                Err(e) if matches!(
                    e.kind(),
                    ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
                ) => continue,
                Err(e) => {
                    // Out of file descriptors (raise `ulimit -n` above
                    // --max-connections), or worse: wait rather than spin.
                    tracing::error!(error = %e, "accepting connections failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            state.http.connection_refused();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(|r: Request<hyper::body::Incoming>| r.map(axum::body::Body::new)),
        );
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _open = state.http.connection_opened();
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests did not finish within the grace period; exiting anyway");
        }
    }
}
