//! Spend records, written off the response path in batches.
//!
//! The hot path hands each record to [`Ledger::record`]: one append to the local [`Spool`]
//! (so a killed process loses nothing) and a channel send; no database I/O. One writer task
//! takes whatever has accumulated within [`LINGER`] of the first — up to [`BATCH`] records —
//! and stores it in one transaction;
//! while the store fails it keeps the batch and retries with backoff, so a database outage
//! delays records rather than losing them. Once stored, the spool forgets them.
//! [`Ledger::close`] drains the channel and returns once everything sent before it is stored
//! (or the deadline passes). At start, [`replay`] stores what a previous process left.

mod spool;

pub use spool::{Spool, SpoolError};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::error::GatewayError;
use crate::limits::SpendCounters;
use crate::store::{Charge, SpendRecord, Store, StoreError};
use crate::tasks;

/// The most records stored in one transaction.
const BATCH: usize = 512;
/// How long the writer lets records gather after the first arrives: one transaction (and one
/// database round of thread hand-offs) per interval under load instead of one per call. The
/// spool already holds every record, so waiting risks nothing.
const LINGER: Duration = Duration::from_millis(5);

#[expect(clippy::large_enum_variant, reason = "records are the common message; boxing would allocate per call")]
enum Message {
    /// A record, its spool sequence number, and per charge whether the counters counted it.
    Record(u64, SpendRecord, Vec<bool>),
    /// Load budget counters from the store (between flushes, so nothing is counted twice).
    Load(Vec<Charge>, oneshot::Sender<Result<(), StoreError>>),
    Close(oneshot::Sender<()>),
}

/// The sending side, cloned into every request.
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::UnboundedSender<Message>,
    spool: Arc<Spool>,
    counters: Arc<SpendCounters>,
    /// Every record with a sequence number up to this one is stored.
    stored: Arc<AtomicU64>,
}

/// Stores the records a previous process left in the spool, then deletes them from it.
pub async fn replay(
    store: &dyn Store,
    spool: &Spool,
    leftovers: spool::Leftovers,
) -> Result<u64, crate::store::StoreError> {
    let mut stored = 0;
    for chunk in leftovers.records.chunks(BATCH) {
        stored += store.insert_spend(chunk).await?;
    }
    spool.discard(&leftovers.files);
    Ok(stored)
}

impl Ledger {
    /// Starts the writer task.
    pub fn start(store: Arc<dyn Store>, spool: Arc<Spool>, counters: Arc<SpendCounters>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let stored = Arc::new(AtomicU64::new(0));
        tasks::spawn("ledger-writer", write_loop(store, spool.clone(), counters.clone(), stored.clone(), rx));
        Self { tx, spool, counters, stored }
    }

    /// The sequence number through which every record is stored (see [`Ledger::record`]).
    pub fn stored_through(&self) -> Arc<AtomicU64> {
        self.stored.clone()
    }

    pub fn counters(&self) -> &SpendCounters {
        &self.counters
    }

    /// Loads the counters of these charges from the store, in the writer's order.
    pub async fn load_counters(&self, charges: Vec<Charge>) -> Result<(), GatewayError> {
        let (done_tx, done_rx) = oneshot::channel();
        self.tx
            .send(Message::Load(charges, done_tx))
            .map_err(|_| GatewayError::unavailable("the spend ledger is shutting down"))?;
        match tokio::time::timeout(Duration::from_secs(5), done_rx).await {
            Ok(Ok(r)) => Ok(r?),
            Ok(Err(_)) => Err(GatewayError::unavailable("the spend ledger is shutting down")),
            Err(_) => {
                Err(GatewayError::unavailable("cannot read budget spend from the database right now; retry shortly"))
            }
        }
    }

    /// Spools and queues a record. Never waits on the database. `counted` says, per charge,
    /// whether the counters already hold its cost. Returns the record's sequence number: it is
    /// stored once [`Ledger::stored_through`] reaches it.
    pub fn record(&self, record: SpendRecord, counted: Vec<bool>) -> u64 {
        let tx = &self.tx;
        let result = self.spool.append(&record, |seq| {
            if tx.send(Message::Record(seq, record.clone(), counted.clone())).is_err() {
                tracing::error!("ledger writer is gone; a spend record stays in the spool for the next start");
            }
        });
        match result {
            Ok(seq) => seq,
            Err(e) => {
                // The database write still happens; only crash safety is lost for this record.
                tracing::error!(error = %e, request_id = %record.request_id, "cannot spool a spend record");
                let _ = self.tx.send(Message::Record(0, record, counted));
                0
            }
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

async fn write_loop(
    store: Arc<dyn Store>,
    spool: Arc<Spool>,
    counters: Arc<SpendCounters>,
    stored_through: Arc<AtomicU64>,
    mut rx: mpsc::UnboundedReceiver<Message>,
) {
    let mut inbox = Vec::with_capacity(BATCH);
    let mut batch: Vec<SpendRecord> = Vec::with_capacity(BATCH);
    let mut counted: Vec<Vec<bool>> = Vec::with_capacity(BATCH);
    let mut loads = Vec::new();
    let mut last_seq = 0;
    loop {
        if rx.recv_many(&mut inbox, BATCH).await == 0 {
            return;
        }
        // Loads and closes don't wait; records linger for company.
        if inbox.len() < BATCH && inbox.iter().all(|m| matches!(m, Message::Record(..))) {
            tokio::time::sleep(LINGER).await;
            while inbox.len() < BATCH {
                match rx.try_recv() {
                    Ok(m) => inbox.push(m),
                    Err(_) => break,
                }
            }
        }
        let mut close = None;
        for m in inbox.drain(..) {
            match m {
                Message::Record(seq, r, c) => {
                    last_seq = last_seq.max(seq);
                    batch.push(r);
                    counted.push(c);
                }
                Message::Load(charges, done) => loads.push((charges, done)),
                Message::Close(done) => close = Some(done),
            }
        }
        if let Some(done) = close {
            // Anything that raced in behind the close request is written too.
            while let Ok(m) = rx.try_recv() {
                if let Message::Record(seq, r, c) = m {
                    last_seq = last_seq.max(seq);
                    batch.push(r);
                    counted.push(c);
                }
            }
            flush(store.as_ref(), &spool, &mut batch).await;
            spool.stored_through(last_seq);
            let _ = done.send(());
            return;
        }
        let stored: Vec<(Vec<Charge>, Vec<bool>, crate::pricing::Nanos)> =
            batch.iter().zip(counted.drain(..)).map(|(r, c)| (r.charges.clone(), c, r.spend)).collect();
        flush(store.as_ref(), &spool, &mut batch).await;
        // Records arrive in sequence order, so everything through last_seq is stored.
        spool.stored_through(last_seq);
        stored_through.store(last_seq, Ordering::Release);
        for (charges, c, cost) in &stored {
            counters.stored(charges, c, *cost);
        }
        // Loads run between flushes: a counter is read either before a record is stored (and
        // the acknowledgement adds it) or after (and the read includes it), never both.
        for (charges, done) in loads.drain(..) {
            let result = store.period_spend(&charges).await.map(|values| counters.load(&charges, &values));
            let _ = done.send(result);
        }
    }
}

/// Whether a store error is the database refusing these records (retrying cannot help), as
/// opposed to the database being unreachable.
fn is_permanent(e: &StoreError) -> bool {
    matches!(e, StoreError::Database(sqlx::Error::Database(_)) | StoreError::Corrupt(_))
}

/// Stores `batch`, retrying while the database is unreachable. A chunk the database refuses
/// is retried record by record, and a record it still refuses is parked in the spool
/// directory's `parked.jsonl` (and logged) rather than holding every later record back.
async fn flush(store: &dyn Store, spool: &Spool, batch: &mut Vec<SpendRecord>) {
    let mut backoff = Duration::from_millis(50);
    while !batch.is_empty() {
        let end = BATCH.min(batch.len());
        match store.insert_spend(&batch[..end]).await {
            Ok(_) => {
                batch.drain(..end);
                backoff = Duration::from_millis(50);
            }
            Err(e) if is_permanent(&e) => {
                let chunk: Vec<SpendRecord> = batch.drain(..end).collect();
                let mut rest = chunk.into_iter();
                while let Some(r) = rest.next() {
                    match store.insert_spend(std::slice::from_ref(&r)).await {
                        Ok(_) => {}
                        Err(e) if is_permanent(&e) => {
                            tracing::error!(error = %e, request_id = %r.request_id, "the database refuses a spend record; parked in the spool directory");
                            spool.park(&r);
                        }
                        Err(e) => {
                            // Unreachable again: put this record and the rest back in front.
                            tracing::warn!(error = %e, "storing spend records failed; retrying");
                            let mut back: Vec<SpendRecord> = std::iter::once(r).chain(rest).collect();
                            back.append(batch);
                            *batch = back;
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, pending = batch.len(), "storing spend records failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
