//! Group commit: events accepted under their rooms' locks queue here and are
//! written in batches, one transaction (one fsync) per batch. A caller hears
//! back only after its batch committed, so a 200 still means durable.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio::sync::{mpsc, oneshot};

use crate::storage::{Storage, rooms::EventWrite};

/// The most events committed in one transaction.
const MAX_BATCH: usize = 256;

pub struct WriteJob {
    write: EventWrite,
    /// The room head's flag: once a write of the room failed, later events
    /// of that room (built on top of it) are refused too.
    poisoned: Arc<AtomicBool>,
    done: Option<oneshot::Sender<Result<i64, ()>>>,
}

impl WriteJob {
    pub fn new(write: EventWrite, poisoned: Arc<AtomicBool>) -> Self {
        Self {
            write,
            poisoned,
            done: None,
        }
    }
}

/// Called with each committed batch and its stream orderings.
pub type OnCommit = Box<dyn Fn(&[EventWrite], &[i64]) + Send + Sync>;

pub struct EventWriter {
    queue: mpsc::UnboundedSender<WriteJob>,
}

impl EventWriter {
    pub fn spawn(storage: Storage, on_commit: OnCommit) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(run(storage, jobs, on_commit));
        Self { queue }
    }

    /// Queues a write; the receiver yields its stream ordering once durable.
    pub fn submit(&self, mut job: WriteJob) -> oneshot::Receiver<Result<i64, ()>> {
        let (done, receiver) = oneshot::channel();
        job.done = Some(done);
        // If the writer is gone the receiver reports the failure.
        let _ = self.queue.send(job);
        receiver
    }
}

async fn run(storage: Storage, mut jobs: mpsc::UnboundedReceiver<WriteJob>, on_commit: OnCommit) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (refused, accepted): (Vec<_>, Vec<_>) = batch
            .drain(..)
            .partition(|job: &WriteJob| job.poisoned.load(Ordering::Acquire));
        for job in refused {
            reply(job, Err(()));
        }
        let writes: Vec<EventWrite> = accepted.iter().map(|job| job.write.clone()).collect();
        match storage.persist_events(&writes).await {
            Ok(orderings) => {
                on_commit(&writes, &orderings);
                for (job, ordering) in accepted.into_iter().zip(orderings) {
                    reply(job, Ok(ordering));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, events = writes.len(), "could not write events");
                for job in accepted {
                    job.poisoned.store(true, Ordering::Release);
                    reply(job, Err(()));
                }
            }
        }
    }
}

fn reply(mut job: WriteJob, result: Result<i64, ()>) {
    if let Some(done) = job.done.take() {
        let _ = done.send(result);
    }
}
