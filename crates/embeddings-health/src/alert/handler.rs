//! [`AlertHandler`] and the two built-in handlers.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use super::AlertEvent;
use crate::HandlerError;

/// Receives every alert state change.
///
/// A handler that returns an error or panics is counted by the
/// [`AlertEngine`](crate::AlertEngine) and stops neither the evaluation
/// nor the other handlers. Handlers run on the evaluating thread, in the
/// order added: keep them quick (hand slow work to a queue).
pub trait AlertHandler: Send {
    /// A short name for diagnostics.
    fn name(&self) -> &str;

    /// Handles one event.
    ///
    /// # Errors
    /// Whatever kept the handler from delivering the event.
    fn handle(&mut self, event: &AlertEvent) -> Result<(), HandlerError>;
}

/// Writes one human-readable line per event to a [`Write`] (stderr by
/// default). No logging framework needed: the server can point it at its
/// own log sink.
///
/// ```
/// use embeddings_health::LogHandler;
/// let handler = LogHandler::new(Vec::new());
/// assert!(handler.into_inner().is_empty());
/// ```
pub struct LogHandler<W: Write + Send> {
    out: W,
}

impl<W: Write + Send> fmt::Debug for LogHandler<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogHandler").finish_non_exhaustive()
    }
}

impl LogHandler<io::Stderr> {
    /// Writes to the process's stderr.
    #[must_use]
    pub fn stderr() -> Self {
        Self { out: io::stderr() }
    }
}

impl<W: Write + Send> LogHandler<W> {
    /// Writes to `out`.
    pub const fn new(out: W) -> Self {
        Self { out }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write + Send> AlertHandler for LogHandler<W> {
    fn name(&self) -> &str {
        "log"
    }

    fn handle(&mut self, event: &AlertEvent) -> Result<(), HandlerError> {
        writeln!(self.out, "{event}")?;
        self.out.flush()?;
        Ok(())
    }
}

/// Appends one JSON object per line per event (JSON Lines), each written
/// with a single `write_all` and flushed.
///
/// ```no_run
/// use embeddings_health::JsonLinesHandler;
/// let handler = JsonLinesHandler::append_to_file("/var/log/embeddings/alerts.jsonl")?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct JsonLinesHandler<W: Write + Send> {
    out: W,
    line: Vec<u8>,
}

impl<W: Write + Send> fmt::Debug for JsonLinesHandler<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesHandler").finish_non_exhaustive()
    }
}

impl JsonLinesHandler<File> {
    /// Appends to the file at `path`, creating it if needed.
    ///
    /// # Errors
    /// The file cannot be opened for appending (missing directory,
    /// permissions).
    pub fn append_to_file(path: impl AsRef<Path>) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self::new(file))
    }
}

impl<W: Write + Send> JsonLinesHandler<W> {
    /// Writes to `out`.
    pub const fn new(out: W) -> Self {
        Self {
            out,
            line: Vec::new(),
        }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write + Send> AlertHandler for JsonLinesHandler<W> {
    fn name(&self) -> &str {
        "json_lines"
    }

    fn handle(&mut self, event: &AlertEvent) -> Result<(), HandlerError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, event)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        self.out.flush()?;
        Ok(())
    }
}
