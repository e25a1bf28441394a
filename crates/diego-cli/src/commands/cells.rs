//! `diego cells`: live cell presences, then the cells whose presence lapsed while instances
//! still name them (until the BBS forgets them).

use diego_client::CellPresenceWithExpiry;
use diego_model::LapsedCell;

use super::Ctx;
use crate::output::{self, dash, emit, emit_json, Table};

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let mut cells = ctx.client.cells().await?;
    if ctx.json() {
        return emit_json(&cells);
    }
    let lapsed = ctx.client.lapsed_cells().await?;
    if cells.is_empty() && lapsed.is_empty() {
        emit("no cells");
        return Ok(());
    }
    let now = output::now();
    if cells.is_empty() {
        emit("no live cells");
    } else {
        cells.sort_by(|a, b| a.cell_presence.cell_id.cmp(&b.cell_presence.cell_id));
        emit(&cell_table(&cells, now).render());
    }
    if !lapsed.is_empty() {
        emit("");
        emit("presence lapsed (their instances are SUSPECT or being replaced):");
        emit(&lapsed_table(&lapsed, now).render());
    }
    Ok(())
}

pub fn lapsed_table(cells: &[LapsedCell], now: i64) -> Table {
    let mut t = Table::new(["CELL_ID", "STATE", "ZONE", "LAPSED", "INSTANCES"]);
    for c in cells {
        let zone = c.last_presence.as_ref().map_or("", |p| p.zone.as_str());
        t.row([
            c.cell_id.clone(),
            "LAPSED".to_string(),
            dash(zone),
            format!("{} ago", output::age(c.lapsed_at, now)),
            c.instances.to_string(),
        ]);
    }
    t
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lapsed_cells_show_zone_age_and_instances() {
        let now = 100 * 1_000_000_000;
        let cells = [
            LapsedCell {
                cell_id: "cell-2".into(),
                lapsed_at: now - 12 * 1_000_000_000,
                instances: 6,
                last_presence: Some(diego_model::CellPresence {
                    cell_id: "cell-2".into(),
                    zone: "z2".into(),
                    ..Default::default()
                }),
            },
            LapsedCell {
                cell_id: "cell-9".into(),
                lapsed_at: now - 1_000_000_000,
                instances: 0,
                last_presence: None,
            },
        ];
        let out = lapsed_table(&cells, now).render();
        let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(lines[0], ["CELL_ID", "STATE", "ZONE", "LAPSED", "INSTANCES"]);
        assert_eq!(lines[1][..3], ["cell-2", "LAPSED", "z2"]);
        assert_eq!(lines[1].last(), Some(&"6"));
        assert!(out.contains("12s ago"), "{out}");
        assert_eq!(lines[2][..3], ["cell-9", "LAPSED", "-"]);
    }
}
