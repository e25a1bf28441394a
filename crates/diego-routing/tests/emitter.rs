//! The route-emitter against a real `nats-server` and a real BBS on loopback, checked by a
//! NATS subscriber in the test: registrations and their fields, unregistrations when an
//! instance stops (and their repeats), a router's greeting setting the re-registration
//! interval, and the whole table sent again after NATS restarts.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{key, register_cell, run_instance, web};
use diego_routing::emitter::message::RegistryMessage;
use diego_routing::emitter::{self, EmitterConfig, RunningEmitter, Subject, Timing};
use diego_testkit::{eventually, NatsServer, TestBbs};
use futures_util::StreamExt as _;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

/// Every message the test saw on one subject, in order.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<RegistryMessage>>>);

impl Seen {
    /// Messages for the endpoint on `port`.
    fn on_port(&self, port: u32) -> Vec<RegistryMessage> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.port == port)
            .cloned()
            .collect()
    }
}

/// Records what arrives on `subject` until the test ends.
async fn record(client: &async_nats::Client, subject: &'static str) -> Seen {
    let seen = Seen::default();
    let mut sub = client.subscribe(subject).await.unwrap();
    client.flush().await.unwrap();
    let into = seen.clone();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let m: RegistryMessage = serde_json::from_slice(&msg.payload)
                .unwrap_or_else(|e| panic!("{subject}: not a registry message ({e}): {:?}", msg.payload));
            into.0.lock().unwrap().push(m);
        }
    });
    seen
}

async fn start_emitter(
    bbs: &TestBbs,
    nats: &NatsServer,
    timing: Timing,
) -> (RunningEmitter, CancellationToken) {
    let mut config = EmitterConfig::new(
        bbs.url.clone(),
        vec![emitter::parse_nats_url(&nats.url).unwrap()],
        "127.0.0.1:0".parse().unwrap(),
    );
    config.timing = timing;
    let stop = CancellationToken::new();
    let running = emitter::start(config, stop.clone()).await.unwrap();
    (running, stop)
}

async fn get(url: String) -> (u16, String) {
    let r = diego_runtime::http_client(None)
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Waits until at least `n` messages for `port` arrived on `seen`, and returns them.
async fn at_least(seen: &Seen, port: u32, n: usize, what: &str) -> Vec<RegistryMessage> {
    eventually(WAIT, || async {
        let got = seen.on_port(port);
        if got.len() >= n {
            Ok(got)
        } else {
            Err(format!("{} {what} for port {port}, want at least {n}", got.len()))
        }
    })
    .await
}

#[tokio::test]
async fn registers_routable_instances_and_unregisters_stopped_ones_repeatedly() {
    let Some(nats) =
        NatsServer::start("registers_routable_instances_and_unregisters_stopped_ones_repeatedly").await
    else {
        return;
    };
    let bbs = TestBbs::start().await;
    let c = bbs.client.clone();
    register_cell(&c).await;
    let mut lrp = web(3, "web.example.com");
    lrp.placement_tags = vec!["iso-1".into()];
    c.desire_lrp(&lrp).await.unwrap();
    run_instance(&c, 0, 61000).await;
    run_instance(&c, 1, 61001).await;

    let client = async_nats::connect(&nats.url).await.unwrap();
    let registers = record(&client, "router.register").await;
    let unregisters = record(&client, "router.unregister").await;
    let timing = Timing {
        unregister_interval: Duration::from_millis(200),
        unregister_repeats: 3,
        ..Timing::default()
    };
    let (running, stop) = start_emitter(&bbs, &nats, timing).await;

    // A register for every routable instance, with gorouter's fields.
    for (index, port) in [(0, 61000), (1, 61001)] {
        let got = at_least(&registers, port, 1, "registers").await;
        let m = got.last().unwrap();
        let actual = &c.actual_lrp("web", index).await.unwrap()[0];
        let want = json!({
            "host": "127.0.0.1", "port": port, "uris": ["web.example.com"],
            "protocol": "http1", "app": "web-logs",
            "private_instance_id": key(index).instance_guid,
            "private_instance_index": index.to_string(),
            "server_cert_domain_san": key(index).instance_guid,
            "isolation_segment": "iso-1",
            "endpoint_updated_at_ns": actual.since,
            "tags": {"component": "route-emitter", "process_guid": "web"},
            "availability_zone": "z1",
        });
        assert_eq!(serde_json::to_value(m).unwrap(), want, "index {index}");
        assert!(actual.since > 0);
    }
    // A third instance starting is registered as it comes.
    run_instance(&c, 2, 61002).await;
    at_least(&registers, 61002, 1, "registers").await;
    assert!(
        unregisters.0.lock().unwrap().is_empty(),
        "nothing unregistered yet"
    );

    // A crash unregisters the instance, and the unregister is repeated 3 times, 200 ms apart.
    c.crash_actual_lrp("web", 0, &key(0), "boom").await.unwrap();
    let got = at_least(&unregisters, 61000, 4, "unregisters").await;
    assert_eq!(got[0].private_instance_id.as_deref(), Some("instance-0"));
    assert!(
        got.iter().all(|m| *m == got[0]),
        "repeats are the same message: {got:?}"
    );
    // ... and then no more (slowness could only make fewer).
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(unregisters.on_port(61000).len(), 4, "1 unregister + 3 repeats");

    // Removing an instance unregisters it too.
    c.remove_actual_lrp("web", 1, Some(&key(1))).await.unwrap();
    at_least(&unregisters, 61001, 1, "unregisters").await;
    assert!(
        unregisters.on_port(61002).is_empty(),
        "the running instance stays registered"
    );

    // Metrics and health say the same.
    let base = format!("http://{}", running.addr);
    let (status, health) = get(format!("{base}/health")).await;
    assert_eq!(status, 200, "{health}");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["registrations"], 1, "{health}");
    let (status, text) = get(format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    // Every line parses as Prometheus text.
    diego_testkit::exposition::parse(&text, diego_testkit::exposition::Flavor::Prometheus)
        .unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"));
    let registers_sent = running.metrics.sent_count(Subject::Register);
    assert!(registers_sent >= 3, "{registers_sent}");
    for line in [
        "route_emitter_registrations 1".to_string(),
        "route_emitter_nats_connected 1".to_string(),
        "route_emitter_register_interval_seconds 20.0".to_string(),
        "route_emitter_sync_listings_total 1".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
    }
    for prefix in [
        "route_emitter_messages_sent_total{subject=\"router.register\"} ",
        "route_emitter_messages_sent_total{subject=\"router.unregister\"} ",
        "route_emitter_unregistrations_cached ",
        "route_emitter_sync_events_total ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(prefix)),
            "{prefix:?} missing from:\n{text}"
        );
    }

    stop.cancel();
    running.task.await.unwrap().unwrap();
}

/// Answers every `router.greet` with a `router.start`-shaped reply naming `interval_s`.
async fn answer_greetings(client: &async_nats::Client, interval_s: u64) {
    let mut greets = client.subscribe("router.greet").await.unwrap();
    client.flush().await.unwrap();
    let client = client.clone();
    tokio::spawn(async move {
        while let Some(msg) = greets.next().await {
            let Some(reply) = msg.reply else { continue };
            let body = json!({
                "id": "test-router", "hosts": ["127.0.0.1"],
                "minimumRegisterIntervalInSeconds": interval_s, "pruneThresholdInSeconds": 3,
            });
            client.publish(reply, body.to_string().into()).await.unwrap();
        }
    });
}

#[tokio::test]
async fn a_routers_greeting_sets_the_re_registration_interval() {
    let Some(nats) = NatsServer::start("a_routers_greeting_sets_the_re_registration_interval").await else {
        return;
    };
    let bbs = TestBbs::start().await;
    let c = bbs.client.clone();
    register_cell(&c).await;
    c.desire_lrp(&web(1, "web.example.com")).await.unwrap();
    run_instance(&c, 0, 61000).await;

    let client = async_nats::connect(&nats.url).await.unwrap();
    answer_greetings(&client, 1).await;
    let registers = record(&client, "router.register").await;
    // The default interval is 20 s: only the router's answer makes it 1 s.
    let (running, stop) = start_emitter(&bbs, &nats, Timing::default()).await;
    at_least(&registers, 61000, 5, "registers (re-sent about every second)").await;
    assert_eq!(running.metrics.register_interval_seconds.get(), 1.0);
    assert!(running.metrics.greetings.get() >= 1);

    // A router starting later asks for 30 s: it gets the table at once, then not for 30 s.
    let start = json!({"id": "r2", "hosts": ["127.0.0.1"], "minimumRegisterIntervalInSeconds": 30, "pruneThresholdInSeconds": 120});
    client
        .publish("router.start", start.to_string().into())
        .await
        .unwrap();
    eventually(WAIT, || async {
        match running.metrics.register_interval_seconds.get() {
            30.0 => Ok(()),
            other => Err(format!("interval {other} s")),
        }
    })
    .await;
    let after = registers.on_port(61000).len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let more = registers.on_port(61000).len() - after;
    assert!(
        more <= 1,
        "{more} registers in 3 s after asking for 30 s (at most router.start's own)"
    );

    // Another router.start with the same interval: the table again, at once.
    let before = registers.on_port(61000).len();
    client
        .publish("router.start", start.to_string().into())
        .await
        .unwrap();
    at_least(&registers, 61000, before + 1, "registers after router.start").await;

    stop.cancel();
    running.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_whole_table_is_sent_again_after_nats_restarts() {
    let Some(mut nats) = NatsServer::start("the_whole_table_is_sent_again_after_nats_restarts").await else {
        return;
    };
    let bbs = TestBbs::start().await;
    let c = bbs.client.clone();
    register_cell(&c).await;
    c.desire_lrp(&web(2, "web.example.com")).await.unwrap();
    run_instance(&c, 0, 61000).await;
    run_instance(&c, 1, 61001).await;
    // No re-registration by the timer within the test: only a reconnect sends the table again.
    let timing = Timing {
        register_interval: Duration::from_secs(600),
        ..Timing::default()
    };
    let (running, stop) = start_emitter(&bbs, &nats, timing).await;
    let m = &running.metrics;
    let sent = || m.sent_count(Subject::Register);
    eventually(WAIT, || async {
        match (m.nats_connects.get(), m.registrations.get(), sent()) {
            (1, 2, n) if n >= 2 => Ok(()),
            (connects, held, n) => Err(format!(
                "{connects} connects, {held} registrations, {n} registers sent"
            )),
        }
    })
    .await;
    let before = sent();

    nats.restart().await;
    eventually(WAIT, || async {
        match (m.nats_connects.get(), m.nats_connected.get(), sent()) {
            (2, 1, n) if n >= before + 2 => Ok(()),
            (connects, connected, n) => Err(format!(
                "{connects} connects, connected={connected}, {n} registers sent ({before} before the restart)"
            )),
        }
    })
    .await;

    // What a router subscribed now sees: the table again, the next time it is sent.
    let client = async_nats::connect(&nats.url).await.unwrap();
    let registers = record(&client, "router.register").await;
    client
        .publish(
            "router.start",
            json!({"minimumRegisterIntervalInSeconds": 600})
                .to_string()
                .into(),
        )
        .await
        .unwrap();
    at_least(&registers, 61000, 1, "registers").await;
    at_least(&registers, 61001, 1, "registers").await;

    stop.cancel();
    running.task.await.unwrap().unwrap();
}
