//! `diego domains`: domains whose desired state is fresh.

use super::Ctx;
use crate::output::{self, emit, emit_json, Table};

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let mut domains = ctx.client.domains().await?;
    if ctx.json() {
        return emit_json(&domains);
    }
    if domains.is_empty() {
        emit("no fresh domains");
        return Ok(());
    }
    domains.sort_by(|a, b| a.domain.cmp(&b.domain));
    let now = output::now();
    let mut t = Table::new(["DOMAIN", "EXPIRES"]);
    for d in &domains {
        t.row([d.domain.clone(), output::expiry(d.expires_at, now)]);
    }
    emit(&t.render());
    Ok(())
}
