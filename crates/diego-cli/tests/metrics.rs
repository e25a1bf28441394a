//! Every role's `/metrics` under `diego dev` with one LRP running (and one no cell can hold):
//! fetched over HTTP in both formats (Prometheus text without an `Accept` header, OpenMetrics
//! when asked), parsed strictly (`diego_testkit::exposition`: every line must parse), and
//! checked for the names docs/110-metrics.md lists, with their types and sane values.
//!
//! On runc when root and runc are there (the root test group), else on the process backend.
//! A new role's metrics are one more entry in the table of [`roles`].

mod common;

use std::time::Duration;

use common::cluster::{running_rows, start_dev};
use common::{diego, ProcessLeftovers, RuncLeftovers};
use diego_testkit::eventually;
use diego_testkit::exposition::{self, Exposition, Flavor, Kind};
use reqwest::header::{ACCEPT, CONTENT_TYPE};

const WAIT: Duration = Duration::from_secs(60);

/// The memory limit of the `web` LRP, which the rep reports as its quota.
const WEB_MEMORY_MB: u64 = 64;

/// What a sample's value must be. Samples matched by a check are summed first (a label
/// subset may match several series, say every status of a route).
#[derive(Debug, Clone, Copy)]
enum Expect {
    Equals(f64),
    AtLeast(f64),
    Above(f64),
}

struct Check {
    /// A sample name (`bbs_requests_total`, `rep_request_duration_seconds_count`).
    sample: &'static str,
    /// Labels the sample must carry (it may carry more).
    labels: Vec<(&'static str, String)>,
    /// The type of the family the sample belongs to.
    kind: Kind,
    expect: Expect,
}

fn check(sample: &'static str, labels: &[(&'static str, &str)], kind: Kind, expect: Expect) -> Check {
    Check {
        sample,
        labels: labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        kind,
        expect,
    }
}

/// The blob the test stores on the file server.
const FILES_BLOB: &[u8] = b"an app package";

/// One server's `/metrics` and what it must hold.
struct Role {
    name: &'static str,
    url: String,
    checks: Vec<Check>,
}

use Expect::*;
use Kind::{Counter, Gauge, Histogram};

/// The table: every role `diego dev` runs, with where it serves and what it must expose.
/// `instance_guid` is the running instance of `web`, as the BBS reports it.
/// Where each role serves.
struct Urls<'a> {
    bbs: &'a str,
    auctioneer: &'a str,
    rep: &'a str,
    logs: &'a str,
    router: &'a str,
    files: &'a str,
    apps: &'a str,
}

fn roles(urls: &Urls<'_>, instance_guid: &str) -> Vec<Role> {
    let Urls {
        bbs,
        auctioneer,
        rep,
        logs,
        router,
        files,
        apps,
    } = *urls;
    let web = [
        ("process_guid", "web"),
        ("index", "0"),
        ("instance_guid", instance_guid),
    ];
    vec![
        Role {
            name: "bbs",
            url: bbs.to_string(),
            checks: vec![
                check("LockHeld", &[], Gauge, Equals(1.0)),
                check("bbs_desired_lrps", &[], Gauge, Equals(2.0)),
                check(
                    "bbs_actual_lrps",
                    &[("state", "RUNNING"), ("presence", "ORDINARY")],
                    Gauge,
                    Equals(1.0),
                ),
                check("bbs_actual_lrps", &[("state", "UNCLAIMED")], Gauge, Equals(1.0)),
                check("bbs_tasks", &[("state", "PENDING")], Gauge, Equals(0.0)),
                check("bbs_cells", &[], Gauge, Equals(1.0)),
                check("bbs_convergence_passes_total", &[], Counter, AtLeast(1.0)),
                check("ConvergenceLRPDuration", &[], Gauge, AtLeast(0.0)),
                check("LRPsMissing", &[], Gauge, AtLeast(0.0)),
                check("PresentCells", &[], Gauge, AtLeast(0.0)),
                check("bbs_convergence_gather_seconds", &[], Gauge, AtLeast(0.0)),
                check(
                    "bbs_requests_total",
                    &[("method", "POST"), ("route", "/v1/desired_lrps")],
                    Counter,
                    AtLeast(2.0),
                ),
                check(
                    "bbs_request_duration_seconds_count",
                    &[("method", "POST"), ("route", "/v1/desired_lrps")],
                    Histogram,
                    AtLeast(2.0),
                ),
            ],
        },
        Role {
            name: "auctioneer",
            url: auctioneer.to_string(),
            checks: vec![
                check("LockHeld", &[], Gauge, Equals(1.0)),
                check("AuctioneerLRPAuctionsStarted_total", &[], Counter, AtLeast(1.0)),
                check("AuctioneerLRPAuctionsFailed_total", &[], Counter, AtLeast(1.0)),
                check("AuctioneerFetchStatesDuration", &[], Gauge, Above(0.0)),
                check("auctioneer_rounds_total", &[], Counter, AtLeast(1.0)),
                check(
                    "auctioneer_placement_failures_total",
                    &[("work", "lrp"), ("reason", "insufficient_resources")],
                    Counter,
                    AtLeast(1.0),
                ),
                check(
                    "auctioneer_round_duration_seconds_count",
                    &[],
                    Histogram,
                    AtLeast(1.0),
                ),
                check("auctioneer_cells", &[], Gauge, Equals(1.0)),
                check("auctioneer_cells_answered", &[], Gauge, Equals(1.0)),
                check("auctioneer_parked_instances", &[], Gauge, AtLeast(0.0)),
                check(
                    "auctioneer_requests_total",
                    &[("method", "POST"), ("route", "/v1/lrps")],
                    Counter,
                    AtLeast(1.0),
                ),
            ],
        },
        Role {
            name: "rep",
            url: rep.to_string(),
            checks: vec![
                check("CapacityTotalMemory", &[], Gauge, Above(0.0)),
                check("CapacityTotalDisk", &[], Gauge, Above(0.0)),
                check("CapacityTotalContainers", &[], Gauge, Above(0.0)),
                check("CapacityRemainingMemory", &[], Gauge, AtLeast(0.0)),
                check("CapacityRemainingDisk", &[], Gauge, AtLeast(0.0)),
                check("CapacityRemainingContainers", &[], Gauge, AtLeast(0.0)),
                check("ContainerCount", &[], Gauge, AtLeast(1.0)),
                check("StartingContainerCount", &[], Gauge, AtLeast(0.0)),
                check("rep_containers", &[("state", "running")], Gauge, AtLeast(1.0)),
                check("RepBulkSyncDuration", &[], Gauge, Above(0.0)),
                check(
                    "rep_bulk_sync_duration_seconds_count",
                    &[],
                    Histogram,
                    AtLeast(1.0),
                ),
                check("rep_instance_memory_bytes", &web, Gauge, Above(0.0)),
                check("rep_instance_cpu_seconds_total", &web, Counter, AtLeast(0.0)),
                check("rep_instance_disk_bytes", &web, Gauge, AtLeast(0.0)),
                check(
                    "rep_instance_memory_quota_bytes",
                    &web,
                    Gauge,
                    Equals((WEB_MEMORY_MB << 20) as f64),
                ),
                check("rep_instance_disk_quota_bytes", &web, Gauge, AtLeast(0.0)),
                check(
                    "rep_requests_total",
                    &[("method", "GET"), ("route", "/state")],
                    Counter,
                    AtLeast(1.0),
                ),
                check(
                    "rep_requests_total",
                    &[("method", "POST"), ("route", "/work")],
                    Counter,
                    AtLeast(1.0),
                ),
            ],
        },
        Role {
            name: "logs",
            url: logs.to_string(),
            checks: vec![
                // The cell's platform lines about `web` at least.
                check("logs_lines_in_total", &[], Counter, AtLeast(1.0)),
                check("logs_batches_in_total", &[], Counter, AtLeast(1.0)),
                check("logs_lines_out_total", &[], Counter, AtLeast(0.0)),
                check("logs_lines_evicted_total", &[], Counter, AtLeast(0.0)),
                check("logs_lines_dropped_total", &[], Counter, AtLeast(0.0)),
                check("logs_followers", &[], Gauge, AtLeast(0.0)),
                check("logs_log_guids", &[], Gauge, AtLeast(1.0)),
                check("logs_lines_held", &[], Gauge, AtLeast(1.0)),
                check(
                    "logs_requests_total",
                    &[("method", "POST"), ("route", "/v1/lines")],
                    Counter,
                    AtLeast(1.0),
                ),
            ],
        },
        Role {
            name: "router",
            url: router.to_string(),
            checks: vec![
                // `web` is routed and running; the test sent it requests and one to no app.
                check("router_routes", &[], Gauge, Equals(1.0)),
                check("router_endpoints", &[], Gauge, Equals(1.0)),
                check(
                    "router_proxied_requests_total",
                    &[("status", "200")],
                    Counter,
                    AtLeast(3.0),
                ),
                check(
                    "router_proxied_requests_total",
                    &[("status", "404")],
                    Counter,
                    AtLeast(1.0),
                ),
                check(
                    "router_backend_latency_seconds_count",
                    &[],
                    Histogram,
                    AtLeast(3.0),
                ),
                check("router_retries_total", &[], Counter, AtLeast(0.0)),
                check("router_websocket_upgrades_total", &[], Counter, AtLeast(0.0)),
                check("router_sync_listings_total", &[], Counter, AtLeast(1.0)),
                check("router_sync_events_total", &[], Counter, AtLeast(1.0)),
            ],
        },
        Role {
            name: "files",
            url: files.to_string(),
            checks: vec![
                // The test uploaded one blob, twice.
                check("fileserver_uploads_total", &[], Counter, Equals(1.0)),
                check(
                    "fileserver_upload_bytes_total",
                    &[],
                    Counter,
                    Equals(FILES_BLOB.len() as f64),
                ),
                check("fileserver_uploads_existing_total", &[], Counter, Equals(1.0)),
                check("fileserver_uploads_refused_total", &[], Counter, Equals(0.0)),
                check("fileserver_downloads_total", &[], Counter, AtLeast(0.0)),
                check("fileserver_not_modified_total", &[], Counter, AtLeast(0.0)),
                check("fileserver_gc_deleted_total", &[], Counter, AtLeast(0.0)),
                check("fileserver_blobs", &[], Gauge, Equals(1.0)),
                check(
                    "fileserver_blob_bytes",
                    &[],
                    Gauge,
                    Equals(FILES_BLOB.len() as f64),
                ),
                check(
                    "fileserver_requests_total",
                    &[("method", "PUT"), ("route", "/v1/blobs/{digest}")],
                    Counter,
                    Equals(2.0),
                ),
            ],
        },
        Role {
            name: "apps",
            url: apps.to_string(),
            checks: vec![
                // No app was pushed; the test asked for the service's info once.
                check("apps_stagings_started_total", &[], Counter, Equals(0.0)),
                check("apps_stagings_succeeded_total", &[], Counter, Equals(0.0)),
                check("apps_stagings_failed_total", &[], Counter, Equals(0.0)),
                check("apps_sync_desired_total", &[], Counter, Equals(0.0)),
                check("apps_sync_updated_total", &[], Counter, Equals(0.0)),
                check("apps_sync_removed_total", &[], Counter, Equals(0.0)),
                check(
                    "apps_requests_total",
                    &[("method", "GET"), ("route", "/v1/info")],
                    Counter,
                    Equals(1.0),
                ),
            ],
        },
    ]
}

/// `GET url/metrics` asking for `flavor`, checked for its content type and parsed strictly.
async fn scrape(http: &reqwest::Client, url: &str, flavor: Flavor) -> Result<Exposition, String> {
    let mut req = http.get(format!("{url}/metrics"));
    if flavor == Flavor::OpenMetrics {
        req = req.header(
            ACCEPT,
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        );
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if Flavor::from_content_type(&content_type) != Some(flavor) {
        return Err(format!("asked for {flavor:?}, got content type {content_type:?}"));
    }
    let text = resp.text().await.map_err(|e| e.to_string())?;
    exposition::parse(&text, flavor).map_err(|e| format!("{flavor:?} does not parse: {e}\n{text}"))
}

/// Each check of `role` that `metrics` fails, in words.
fn failures(role: &Role, metrics: &Exposition) -> Vec<String> {
    let mut failed = Vec::new();
    for c in &role.checks {
        let labels: Vec<(&str, &str)> = c.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let what = format!("{} {}{labels:?}", role.name, c.sample);
        let samples = metrics.samples(c.sample, &labels);
        if samples.is_empty() {
            failed.push(format!("{what}: missing"));
            continue;
        }
        let kind = metrics.family_of(c.sample).map(|f| f.kind);
        if kind != Some(c.kind) {
            failed.push(format!("{what}: a {kind:?}, not a {:?}", c.kind));
        }
        let value: f64 = samples.iter().map(|s| s.value).sum();
        let ok = match c.expect {
            Equals(v) => value == v,
            AtLeast(v) => value >= v,
            Above(v) => value > v,
        };
        if !ok {
            failed.push(format!("{what} is {value}, expected {:?}", c.expect));
        }
    }
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_serves_its_documented_metrics_in_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    // Dropped after dev: whatever a killed dev leaves (containers, app processes) goes too.
    let _containers = RuncLeftovers::for_depot(&dir.path().join("dev/cell-0/depot"));
    let _apps = ProcessLeftovers(dir.path().to_path_buf());
    let runc = common::runc_usable("every_role_serves_its_documented_metrics_in_both_formats (on runc)");
    let flags: &[&str] = if runc { &[] } else { &["--backend", "process"] };
    println!("backend: {}", if runc { "runc" } else { "process" });
    let logs = format!("127.0.0.1:{}", diego_testkit::free_port());
    let router = format!("127.0.0.1:{}", diego_testkit::free_port());
    let router_admin = format!("127.0.0.1:{}", diego_testkit::free_port());
    let files = format!("127.0.0.1:{}", diego_testkit::free_port());
    let apps = format!("127.0.0.1:{}", diego_testkit::free_port());
    let flags = [
        flags,
        &[
            "--file-server-listen",
            &files,
            "--apps-listen",
            &apps,
            "--logs-listen",
            &logs,
            "--router-listen",
            &router,
            "--router-admin",
            &router_admin,
        ],
    ]
    .concat();
    let (_dev, client) = start_dev(dir.path(), &flags, 1).await;
    let bbs = client.base_url().to_string();

    let memory = WEB_MEMORY_MB.to_string();
    let (ok, out) = diego(
        &bbs,
        &[
            "lrp",
            "create",
            "web",
            "--memory",
            &memory,
            "--port",
            "8080",
            "--route",
            "web.diego.localhost",
            "--",
            "sh",
            "-c",
            "echo started; echo hi > /tmp/index.html; exec httpd -f -p 8080 -h /tmp",
        ],
    )
    .await;
    assert!(ok, "{out}");
    // No cell has a terabyte: its instance stays UNCLAIMED, a placement failure.
    let (ok, out) = diego(
        &bbs,
        &[
            "lrp", "create", "huge", "--memory", "1000000", "--", "sleep", "600",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let running = eventually(WAIT, || async {
        let rows = running_rows(&client).await?;
        (rows.len() == 1)
            .then(|| rows[0].clone())
            .ok_or(format!("{rows:?}"))
    })
    .await;

    let rep = client.cells().await.unwrap()[0].cell_presence.rep_url.clone();
    let auctioneer = client
        .lock_holder(diego_model::locks::AUCTIONEER)
        .await
        .unwrap()
        .expect("the auctioneer holds its lock")
        .value;
    let http = diego_runtime::http_client(None)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Requests through the router: three to `web`, one to no app.
    for (host, want) in [("web.diego.localhost", 3), ("nope.diego.localhost", 1)] {
        for _ in 0..want {
            eventually(WAIT, || async {
                let r = http
                    .get(format!("http://{router}/"))
                    .header("host", host)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let ok = if host.starts_with("web") {
                    r.status() == 200
                } else {
                    r.status() == 404
                };
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                ok.then_some(()).ok_or(format!("{host}: {status} {body}"))
            })
            .await;
        }
    }
    // One blob on the file server, PUT twice (the client would skip the second: raw PUTs).
    let blob = diego_fileserver::Digest::of(FILES_BLOB);
    for want in [201, 200] {
        let r = http
            .put(format!("http://{files}/v1/blobs/{blob}"))
            .body(FILES_BLOB)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want);
    }
    let info = http.get(format!("http://{apps}/v1/info")).send().await.unwrap();
    assert!(info.status().is_success());
    let (logs_url, router_url) = (format!("http://{logs}"), format!("http://{router_admin}"));
    let (files_url, apps_url) = (format!("http://{files}"), format!("http://{apps}"));
    let urls = Urls {
        bbs: &bbs,
        auctioneer: &auctioneer,
        rep: &rep,
        logs: &logs_url,
        router: &router_url,
        files: &files_url,
        apps: &apps_url,
    };
    let roles = roles(&urls, &running.instance_guid);

    for role in &roles {
        let sizes = eventually(WAIT, || async {
            let mut failed = Vec::new();
            let mut sizes = Vec::new();
            for flavor in [Flavor::Prometheus, Flavor::OpenMetrics] {
                let metrics = scrape(&http, &role.url, flavor)
                    .await
                    .map_err(|e| format!("{} {}: {e}", role.name, role.url))?;
                failed.extend(
                    failures(role, &metrics)
                        .into_iter()
                        .map(|f| format!("{flavor:?}: {f}")),
                );
                sizes.push((
                    metrics.families.len(),
                    metrics.families.iter().map(|f| f.samples.len()).sum::<usize>(),
                ));
            }
            failed.is_empty().then_some(sizes).ok_or(failed.join("\n"))
        })
        .await;
        println!(
            "{}: {} checks pass in both formats; (families, samples) Prometheus {:?}, OpenMetrics {:?}",
            role.name,
            role.checks.len(),
            sizes[0],
            sizes[1]
        );
    }
}
