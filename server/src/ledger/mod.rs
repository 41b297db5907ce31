//! Spend records, written off the response path in batches.
//!
//! The hot path hands each record to [`Ledger::record`] (a channel send, no I/O). One writer
//! task takes whatever has accumulated — up to [`BATCH`] records — and stores it in one
//! transaction; while the store fails it keeps the batch and retries with backoff, so a
//! database outage delays records rather than losing them. [`Ledger::close`] drains the
//! channel and returns once everything sent before it is stored (or the deadline passes).
//!
//! Not yet: the local spool file that makes records survive a killed process.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::store::{SpendRecord, Store};
use crate::tasks;

/// The most records stored in one transaction.
const BATCH: usize = 512;

#[expect(clippy::large_enum_variant, reason = "records are the common message; boxing would allocate per call")]
enum Message {
    Record(SpendRecord),
    Close(oneshot::Sender<()>),
}

/// The sending side, cloned into every request.
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::UnboundedSender<Message>,
}

impl Ledger {
    /// Starts the writer task.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tasks::spawn("ledger-writer", write_loop(store, rx));
        Self { tx }
    }

    /// Queues a record. Never blocks.
    pub fn record(&self, record: SpendRecord) {
        if self.tx.send(Message::Record(record)).is_err() {
            tracing::error!("ledger writer is gone; a spend record was not queued");
        }
    }

    /// Stores everything queued so far, then stops the writer. Waits at most `deadline`.
    pub async fn close(&self, deadline: Duration) -> bool {
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send(Message::Close(done_tx)).is_err() {
            return true;
        }
        matches!(tokio::time::timeout(deadline, done_rx).await, Ok(Ok(())))
    }
}

async fn write_loop(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Message>) {
    let mut inbox = Vec::with_capacity(BATCH);
    let mut batch: Vec<SpendRecord> = Vec::with_capacity(BATCH);
    loop {
        if rx.recv_many(&mut inbox, BATCH).await == 0 {
            return;
        }
        let mut close = None;
        for m in inbox.drain(..) {
            match m {
                Message::Record(r) => batch.push(r),
                Message::Close(done) => close = Some(done),
            }
        }
        flush(store.as_ref(), &mut batch).await;
        if let Some(done) = close {
            // Anything that raced in behind the close request is written too.
            while let Ok(m) = rx.try_recv() {
                if let Message::Record(r) = m {
                    batch.push(r);
                }
            }
            flush(store.as_ref(), &mut batch).await;
            let _ = done.send(());
            return;
        }
    }
}

/// Stores `batch`, retrying until it succeeds.
async fn flush(store: &dyn Store, batch: &mut Vec<SpendRecord>) {
    let mut backoff = Duration::from_millis(50);
    while !batch.is_empty() {
        for chunk_start in (0..batch.len()).step_by(BATCH) {
            let end = (chunk_start + BATCH).min(batch.len());
            match store.insert_spend(&batch[chunk_start..end]).await {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, pending = batch.len(), "storing spend records failed; retrying");
                    batch.drain(..chunk_start);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    break;
                }
            }
            if end == batch.len() {
                batch.clear();
            }
        }
    }
}
