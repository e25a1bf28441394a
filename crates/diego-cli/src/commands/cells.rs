//! `diego cells`: live cell presences.

use diego_client::CellPresenceWithExpiry;

use super::Ctx;
use crate::output::{self, dash, emit, emit_json, Table};

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let mut cells = ctx.client.cells().await?;
    if ctx.json() {
        return emit_json(&cells);
    }
    if cells.is_empty() {
        emit("no cells");
        return Ok(());
    }
    cells.sort_by(|a, b| a.cell_presence.cell_id.cmp(&b.cell_presence.cell_id));
    emit(&cell_table(&cells, output::now()).render());
    Ok(())
}

pub fn cell_table(cells: &[CellPresenceWithExpiry], now: i64) -> Table {
    let mut t = Table::new([
        "CELL_ID",
        "REP_URL",
        "ZONE",
        "MEMORY_MB",
        "DISK_MB",
        "CONTAINERS",
        "ROOTFS",
        "TAGS",
        "EXPIRES",
    ]);
    for c in cells {
        let p = &c.cell_presence;
        let rootfs: Vec<String> = p
            .rootfs_providers
            .iter()
            .map(|r| {
                if r.properties.is_empty() {
                    r.name.clone()
                } else {
                    format!("{}:{}", r.name, r.properties.join("+"))
                }
            })
            .collect();
        let tags: Vec<String> = p
            .placement_tags
            .iter()
            .cloned()
            .chain(p.optional_placement_tags.iter().map(|t| format!("{t}?")))
            .collect();
        t.row([
            p.cell_id.clone(),
            p.rep_url.clone(),
            dash(&p.zone),
            p.capacity.memory_mb.to_string(),
            p.capacity.disk_mb.to_string(),
            p.capacity.containers.to_string(),
            dash(&rootfs.join(",")),
            dash(&tags.join(",")),
            output::expiry(c.expires_at, now),
        ]);
    }
    t
}
