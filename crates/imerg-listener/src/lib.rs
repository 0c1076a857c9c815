//! Where granules come from while the service runs: the SQS listener (new-granule notifications
//! on a [`Queue`]), the directory watcher (the embedded default's local granule directory) and
//! the reconciliation sweep (granules that exist but were never announced).
//! Both hand every granule to the one [`imerg_pipeline::Ingestor`] and stop when their
//! cancellation token fires, letting the granules in flight finish.
//!
//! The listener deletes a message only once every granule it names is durable in the store (or
//! already there); while a message is in flight its [`Lease`] extends its visibility, up to a cap,
//! and ends when dropped. A message that cannot be processed (malformed, unknown shape, bad
//! granule, object missing) is left alone so the queue's redrive policy moves it to the
//! dead-letter queue; the listener keeps going.

mod directory;
mod lease;
mod queue;
mod reconcile;
mod sqs;

pub use directory::{DirectoryConfig, watch_directory};
pub use lease::{Lease, LeaseSettings};
pub use queue::{MemoryQueue, Queue, QueueError, Received, SqsQueue};
pub use reconcile::{Inventory, ReconcileConfig, Reconciler, SweepReport, SweepState};
pub use sqs::{ListenerConfig, MessageOutcome, QueueHealth, SqsConfig, handle_body, run};
