//! Accepting connections, with the limits `axum::serve` has no settings
//! for: a cap on open connections, and hyper's header-read timeout. Built
//! from hyper's HTTP/1.1 connection builder with the Tokio timer (the piece
//! `axum::serve` is made of).
//!
//! HTTP/1.1 only: every client we serve speaks it, and the auto HTTP/1 +
//! HTTP/2 builder first reads the HTTP/2 preface with no timer running, so a
//! client that sends one byte and stops would hold its connection forever.
//! With HTTP/1.1 alone hyper's header timer runs from the connection's first
//! read: a client must send a request's headers within the timeout, and a
//! keep-alive connection left idle that long is closed.
//!
//! **At the cap, the oldest connection makes room.** With
//! `--max-connections` open, a new connection asks the oldest open one to
//! close and waits up to [`ROOM_WAIT`] for its slot; only if none frees is
//! it closed unserved. A connection asked to close that has never sent a
//! byte is dropped at once (hyper's graceful shutdown would leave it open
//! until the header timeout); one that has goes through hyper's graceful
//! shutdown: closed at once between requests, after its response if a
//! request is in progress. So connections that only
//! sit there (a flood of idle sockets) cannot lock out new clients or the
//! probes, while requests in progress are never cut. Shutdown uses the same
//! signal on every connection, then waits for them up to the grace period.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::ErrorKind;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt as _;

use crate::app::AppState;

/// How long a new connection at the cap waits for the oldest to close.
pub(crate) const ROOM_WAIT: Duration = Duration::from_secs(2);

/// The connection limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    /// Connections open at once.
    pub(crate) max_connections: usize,
    /// Longest wait for a request's headers, and the longest a keep-alive
    /// connection may stay idle.
    pub(crate) header_read_timeout: Duration,
}

/// The open connections, oldest first, each with the signal that asks it
/// to close.
#[derive(Debug, Default)]
struct Open {
    next: u64,
    connections: BTreeMap<u64, Arc<Notify>>,
}

#[derive(Debug)]
struct Connections {
    slots: Arc<Semaphore>,
    max: usize,
    open: Mutex<Open>,
    /// New connections waiting for a slot. While any waits, newcomers queue
    /// behind them rather than take a slot that frees: each waiter made one
    /// connection close, and that slot is its own.
    waiting: AtomicUsize,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a connection; returns its id and its close signal.
    fn register(&self) -> (u64, Arc<Notify>) {
        let mut open = self.lock();
        let id = open.next;
        open.next += 1;
        let close = Arc::new(Notify::new());
        open.connections.insert(id, Arc::clone(&close));
        (id, close)
    }

    fn unregister(&self, id: u64) {
        self.lock().connections.remove(&id);
    }

    /// Asks the oldest open connection to close; `false` when none is open.
    fn evict_oldest(&self) -> bool {
        let oldest = self.lock().connections.pop_first();
        oldest.is_some_and(|(_, close)| {
            close.notify_one();
            true
        })
    }

    /// Asks every open connection to close.
    fn close_all(&self) {
        for close in std::mem::take(&mut self.lock().connections).into_values() {
            close.notify_one();
        }
    }
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
    let connections = Arc::new(Connections {
        slots: Arc::new(Semaphore::new(limits.max_connections)),
        max: limits.max_connections,
        open: Mutex::new(Open::default()),
        waiting: AtomicUsize::new(0),
    });
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
        let slot = if connections.waiting.load(Ordering::SeqCst) == 0 {
            Arc::clone(&connections.slots).try_acquire_owned().ok()
        } else {
            None
        };
        if slot.is_none() {
            connections.waiting.fetch_add(1, Ordering::SeqCst);
            if connections.evict_oldest() {
                state.http.connection_evicted();
            }
        }
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(|r: Request<hyper::body::Incoming>| r.map(axum::body::Body::new)),
        );
        let connection = ServeOne {
            builder: builder.clone(),
            connections: Arc::clone(&connections),
            state: Arc::clone(&state),
        };
        tokio::spawn(connection.run(stream, slot, service));
    }
    drop(listener);
    connections.close_all();
    let all = u32::try_from(connections.max).unwrap_or(u32::MAX);
    tokio::select! {
        _ = connections.slots.acquire_many(all) => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests did not finish within the grace period; exiting anyway");
        }
    }
}

/// What one connection's task needs.
struct ServeOne {
    builder: http1::Builder,
    connections: Arc<Connections>,
    state: Arc<AppState>,
}

impl ServeOne {
    /// Waits for a slot (when it has none yet), then serves the connection
    /// until it ends or is asked to close.
    async fn run<S>(self, stream: TcpStream, slot: Option<OwnedSemaphorePermit>, service: S)
    where
        S: hyper::service::Service<
                Request<hyper::body::Incoming>,
                Response = axum::response::Response,
            > + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let slot = match slot {
            Some(s) => s,
            None => {
                let waited = tokio::time::timeout(
                    ROOM_WAIT,
                    Arc::clone(&self.connections.slots).acquire_owned(),
                )
                .await;
                self.connections.waiting.fetch_sub(1, Ordering::SeqCst);
                let Ok(Ok(s)) = waited else {
                    self.state.http.connection_refused();
                    return;
                };
                s
            }
        };
        let _ = stream.set_nodelay(true);
        let (id, close) = self.connections.register();
        let _open = self.state.http.connection_opened();
        let read_any = Arc::new(AtomicBool::new(false));
        let stream = Watched {
            inner: stream,
            read_any: Arc::clone(&read_any),
        };
        let connection = self.builder.serve_connection(TokioIo::new(stream), service);
        let mut connection = std::pin::pin!(connection);
        let ended = tokio::select! {
            ended = connection.as_mut() => ended,
            () = close.notified() => {
                if read_any.load(Ordering::Relaxed) {
                    // Closes now if idle, after the request in progress if not.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                } else {
                    // Never sent a byte: nothing is in progress; drop it.
                    Ok(())
                }
            }
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "connection ended with an error");
        }
        self.connections.unregister(id);
        drop(slot);
    }
}

/// A TCP stream that remembers whether any byte was ever read from it.
#[derive(Debug)]
struct Watched {
    inner: TcpStream,
    read_any: Arc<AtomicBool>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.read_any.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
