//! [`EmbedTicket`]: the answer to a submission, as a `Future` and as a
//! blocking [`wait`](EmbedTicket::wait).
//!
//! A one-shot channel in ~80 lines of std (`Mutex` + `Condvar` + `Waker`)
//! rather than `futures-channel`: the ticket must also block a plain thread
//! (`wait`), which `futures-channel`'s receiver can only do through an
//! executor (one more crate), and the runtime-agnostic `Future` half needs
//! nothing beyond `std::task`. One lock per request is noise next to a
//! forward pass.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::error::PipelineError;
use crate::options::EmbedResponse;

type Answer = Result<EmbedResponse, PipelineError>;

#[derive(Debug, Default)]
struct State {
    answer: Option<Answer>,
    waker: Option<Waker>,
    /// The sender is gone (answered or dropped).
    closed: bool,
    /// The ticket is gone: nobody will read the answer.
    abandoned: bool,
    /// The pipeline has decided this ticket's answer (and counted it as
    /// such): a caller whose own timer fires now should take the answer
    /// rather than report a timeout the pipeline did not count.
    committed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves the state consistent (every
        // critical section is a few field writes), so poisoning is ignored.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending half, held by the job in the queue.
#[derive(Debug)]
pub(crate) struct Reply {
    shared: Arc<Shared>,
}

impl Reply {
    /// Delivers the answer and wakes the ticket.
    pub(crate) fn send(self, answer: Answer) {
        let mut state = self.shared.lock();
        state.answer = Some(answer);
        state.committed = true;
        // `Drop` does the rest (closing and waking).
    }

    /// `true` when the ticket was dropped: the work can be skipped.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.shared.lock().abandoned
    }

    /// Commits to answering: `false` when the ticket is already gone, else
    /// marks it committed (see [`EmbedTicket::is_committed`]) and `true`.
    pub(crate) fn commit(&self) -> bool {
        let mut state = self.shared.lock();
        if state.abandoned {
            return false;
        }
        state.committed = true;
        true
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.shared.lock();
            state.closed = true;
            // Answered, or gone without answering (`WorkerLost`): decided.
            state.committed = true;
            state.waker.take()
        };
        self.shared.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The pending answer to [`submit`](crate::EmbeddingPipeline::submit).
///
/// `.await` it under any executor (it is a plain [`Future`] woken from the
/// worker thread), or block the current thread with [`wait`](Self::wait).
/// Dropping it abandons the request: a worker that has not started it yet
/// skips it.
#[derive(Debug)]
#[must_use = "a ticket does nothing unless awaited or waited on"]
pub struct EmbedTicket {
    shared: Arc<Shared>,
}

impl EmbedTicket {
    pub(crate) fn channel() -> (Reply, Self) {
        let shared = Arc::new(Shared::default());
        (
            Reply {
                shared: Arc::clone(&shared),
            },
            Self { shared },
        )
    }

    /// An already answered ticket.
    pub(crate) fn ready(answer: Answer) -> Self {
        let (reply, ticket) = Self::channel();
        reply.send(answer);
        ticket
    }

    /// Blocks the current thread until the answer is ready.
    ///
    /// # Errors
    /// The request's error; [`PipelineError::WorkerLost`] when its worker
    /// stopped without answering.
    pub fn wait(self) -> Answer {
        let mut state = self.shared.lock();
        loop {
            if let Some(answer) = state.answer.take() {
                return answer;
            }
            if state.closed {
                return Err(PipelineError::WorkerLost);
            }
            state = self
                .shared
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// `true` once the answer is ready (`wait` will not block).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.shared.lock().closed
    }

    /// `true` once the pipeline has decided the answer and counted it (it
    /// arrives as soon as the worker has cached it and sent it, without
    /// further computation). A caller with its own timer should,
    /// when the timer fires on a committed ticket, await the answer instead
    /// of reporting a timeout: otherwise it would report a timeout for a
    /// request the pipeline counted as served.
    #[must_use]
    pub fn is_committed(&self) -> bool {
        self.shared.lock().committed
    }
}

impl Future for EmbedTicket {
    type Output = Answer;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let mut state = self.shared.lock();
        if let Some(answer) = state.answer.take() {
            return Poll::Ready(answer);
        }
        if state.closed {
            return Poll::Ready(Err(PipelineError::WorkerLost));
        }
        match &mut state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for EmbedTicket {
    fn drop(&mut self) {
        self.shared.lock().abandoned = true;
    }
}
