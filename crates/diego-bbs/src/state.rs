//! What every handler and controller shares.

use std::sync::Arc;

use diego_model::Clock;
use diego_store::DynStore;

use crate::config::BbsConfig;
use crate::metrics::BbsMetrics;
use crate::rep_notify::RepNotifier;

pub struct Bbs {
    pub store: DynStore,
    pub clock: Arc<dyn Clock>,
    pub config: BbsConfig,
    pub reps: RepNotifier,
    pub metrics: BbsMetrics,
    pub callbacks: crate::callbacks::Callbacks,
    /// Whether this BBS holds the BBS lock; fences its workers' writes.
    pub role: Arc<crate::active::ActiveRole>,
    /// The last convergence pass, and a way to ask for the next one.
    pub converger: Arc<crate::converger::ConvergerState>,
    /// Cancelled when the BBS shuts down; long-lived responses (event streams) end on it.
    pub shutdown: tokio_util::sync::CancellationToken,
}

pub type AppState = Arc<Bbs>;

impl Bbs {
    pub fn now(&self) -> diego_model::Timestamp {
        self.clock.now()
    }
}

/// A fresh guid for modification-tag epochs and instance guids.
pub fn new_guid() -> String {
    uuid::Uuid::new_v4().to_string()
}
