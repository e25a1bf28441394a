//! The cell's presence in the BBS: registered at start, renewed every third of its TTL,
//! removed on shutdown.

use std::sync::Arc;

use diego_model::{CellCapacity, CellPresence, RegisterCellRequest, RootfsProvider};
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

pub(crate) async fn renew(rep: Arc<Rep>, shutdown: CancellationToken) {
    let period = (rep.config.presence_ttl / 3).max(std::time::Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(period) => {}
        }
        if let Err(e) = register(&rep).await {
            warn!(error = %e, "renewing the cell presence");
        }
    }
    match rep.bbs.remove_cell(&rep.config.cell_id).await {
        Ok(()) => info!(cell_id = %rep.config.cell_id, "removed the cell presence"),
        Err(e) => warn!(error = %e, "removing the cell presence"),
    }
}
