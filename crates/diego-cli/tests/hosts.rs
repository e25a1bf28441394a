//! A real `diego bbs` on one host of the multi-host harness (`diego_testkit::hosts`,
//! docs/140-multihost-tests.md): another host reaches it across the bridge, the test through a
//! forwarder; a partition cuts the other host off (not the test), healing restores it, and
//! killing the host ends the BBS. Root only (skipped, saying why, elsewhere; never under CI).

use std::time::Duration;

use anyhow::{ensure, Result};
use diego_client::BbsClient;
use diego_testkit::eventually;
use diego_testkit::hosts::{Host, Net};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);
const PORT: u16 = 8889;

/// `GET /v1/ping` from inside `from` to the BBS on `to`: the status line.
async fn ping_from(from: &Host, to: &Host) -> Result<String> {
    let mut s = from.connect(to.socket(PORT)).await?;
    s.write_all(b"GET /v1/ping HTTP/1.0\r\nHost: bbs\r\n\r\n").await?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).await?;
    Ok(reply.lines().next().unwrap_or_default().to_string())
}

#[tokio::test]
async fn a_bbs_on_one_host_serves_the_others_until_partitioned_or_killed() -> Result<()> {
    let test = "a_bbs_on_one_host_serves_the_others_until_partitioned_or_killed";
    let Some(mut net) = Net::new(test)? else {
        return Ok(());
    };
    let control = net.add_host("control")?;
    let cell = net.add_host("cell-z1")?;
    let data = tempfile::Builder::new().prefix("diego-hosts-bbs-").tempdir()?;
    let bbs = control.spawn_diego(
        env!("CARGO_BIN_EXE_diego"),
        "bbs",
        &[
            "bbs",
            "--listen",
            &control.socket(PORT).to_string(),
            "--data-dir",
            &data.path().display().to_string(),
        ],
    )?;
    let fwd = control.forward(control.socket(PORT)).await?;
    let client = BbsClient::new(format!("http://{}", fwd.local_addr()));
    eventually(WAIT, || async {
        ensure!(bbs.is_running(), "diego bbs exited: {}", bbs.stderr());
        ensure!(client.ping().await?.available, "not available yet");
        Ok(())
    })
    .await;
    let status = eventually(WAIT, || ping_from(&cell, &control)).await;
    assert!(status.contains(" 200 "), "{status}");
    assert!(bbs.stderr().contains("INFO"), "RUST_LOG=info: {}", bbs.stderr());

    control.partition()?;
    let cut = tokio::time::timeout(Duration::from_secs(2), ping_from(&cell, &control)).await;
    assert!(
        !matches!(cut, Ok(Ok(_))),
        "the cell reached the partitioned BBS: {cut:?}"
    );
    assert!(client.ping().await?.available, "the test's forwarder is not cut");
    control.heal()?;
    let status = eventually(WAIT, || ping_from(&cell, &control)).await;
    assert!(status.contains(" 200 "), "{status}");

    let pid = bbs.pid();
    control.kill()?;
    assert!(
        bbs.try_exit().is_some(),
        "diego bbs (pid {pid}) outlived its host"
    );
    assert!(control.processes()?.is_empty());
    assert!(
        client.ping().await.is_err(),
        "a BBS still answers on the killed host"
    );
    drop(fwd);
    Ok(())
}
