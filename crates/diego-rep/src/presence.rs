//! The cell's presence in the BBS: registered at start, kept renewed by a [`Lease`],
//! removed on shutdown.

use std::sync::Arc;

use diego_model::{CellCapacity, CellPresence, RegisterCellRequest, RootfsProvider};
use diego_runtime::{Lease, PassError, Renewal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Rep;

/// The root filesystems a cell offers: its preloaded names, and local images by path.
pub(crate) fn rootfs_providers(rep: &Rep) -> Vec<RootfsProvider> {
    let mut preloaded = rep.config.preloaded_rootfs.clone();
    if !preloaded.iter().any(|n| n == "busybox") {
        preloaded.push("busybox".into());
    }
    vec![
        RootfsProvider {
            name: "preloaded".into(),
            properties: preloaded,
        },
        RootfsProvider {
            name: "oci".into(),
            properties: Vec::new(),
        },
        RootfsProvider {
            name: "docker-archive".into(),
            properties: Vec::new(),
        },
    ]
}

fn request(rep: &Rep) -> RegisterCellRequest {
    let c = rep.config.capacity;
    RegisterCellRequest {
        cell_presence: CellPresence {
            cell_id: rep.config.cell_id.clone(),
            rep_url: rep.url.clone(),
            zone: rep.config.zone.clone(),
            capacity: CellCapacity {
                memory_mb: c.memory_mb as i32,
                disk_mb: c.disk_mb as i32,
                containers: c.containers as i32,
            },
            rootfs_providers: rootfs_providers(rep),
            placement_tags: rep.config.placement_tags.clone(),
            optional_placement_tags: rep.config.optional_placement_tags.clone(),
        },
        ttl_seconds: rep.config.presence_ttl.as_secs().max(1) as i64,
    }
}

pub(crate) async fn register(rep: &Rep) -> Result<(), diego_client::ClientError> {
    rep.bbs.register_cell(&request(rep)).await
}

/// The first registration, repeated for up to `bbs_wait` while the BBS is not serving yet.
pub(crate) async fn register_at_start(
    rep: &Rep,
    stop: &CancellationToken,
) -> Result<(), diego_client::ClientError> {
    diego_client::startup::while_starting("registering the cell", rep.config.bbs_wait, stop, || {
        register(rep)
    })
    .await
}

/// Keeps the presence renewed every third of its TTL until `stop`, then removes it (unless
/// `remove_presence_on_stop` is off). The BBS
/// refusing the registration (a 4xx answer: this is not a BBS that knows this cell's record)
/// is fatal: the supervisor stops the cell rather than let it serve on unseen. Transport
/// errors and 5xx answers are retried; the BBS forgets the cell once its TTL passes without
/// a renewal, and takes it back at the next one.
pub(crate) async fn keep(rep: Arc<Rep>, stop: CancellationToken) -> Result<(), PassError> {
    let lease = Lease::new("cell presence", rep.config.presence_ttl);
    let kept = lease
        .keep(&stop, || async {
            match register(&rep).await {
                Ok(()) => Ok(Renewal::Held),
                Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => Err(PassError::fatal(
                    format!("the BBS refused the cell presence: {e}"),
                )),
                Err(e) => Err(PassError::retry(e)),
            }
        })
        .await;
    if kept.is_ok() && rep.config.remove_presence_on_stop {
        match rep.bbs.remove_cell(&rep.config.cell_id).await {
            Ok(()) => info!(cell_id = %rep.config.cell_id, "removed the cell presence"),
            Err(e) => warn!(error = %e, "removing the cell presence"),
        }
    }
    kept
}
