//! Accepting connections, with the limits `axum::serve` has no settings
//! for: a cap on open connections, and hyper's header-read timeout (which
//! also closes a keep-alive connection that stays idle that long). Built
//! from hyper-util's pieces (the auto HTTP/1 + HTTP/2 connection builder,
//! the Tokio timer, graceful shutdown), as `axum::serve` itself is.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
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
    /// Longest wait for a request's headers, and for the first byte of a new
    /// connection or of the next request on an idle keep-alive connection.
    pub(crate) header_read_timeout: Duration,
}

/// Serves `app` on `listener` until `signal`, then stops accepting and lets
/// open connections finish their requests for at most `grace`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    state: Arc<AppState>,
    limits: ConnectionLimits,
    signal: impl Future<Output = ()>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut signal = std::pin::pin!(signal);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, or a connection reset before we took
                    // it: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
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
        let watcher = graceful.watcher();
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _open = state.http.connection_opened();
            // hyper's header timer starts with the first byte: a connection
            // that never sends one is closed here after the same time.
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first)).await,
                Ok(Ok(1))
            ) {
                return; // no byte in time, closed, or failed
            }
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            builder.http2().timer(TokioTimer::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection).await {
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
