//! An in-memory [`ContainerBackend`] for unit tests of the layers above (executor, rep).
//!
//! Processes do not run: a [`FakeScript`] decides what each one prints and how it exits, or
//! that it runs until signalled. Containers, properties, port mappings, stop/destroy, signals,
//! attach and stream in/out behave like a real backend's, so callers can be tested against
//! them without root or runc.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::event_log::EventLog;
use crate::{
    new_id, properties_match, Capacity, ContainerBackend, ContainerInfo, ContainerMetrics, ContainerSpec,
    ContainerState, ExitStatus, GardenError, PortMapping, ProcessEvent, ProcessSpec, ProcessStream,
    Properties, Signal, TarStream,
};

/// What a fake process does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeProcess {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// `Some`: exits at once with this status. `None`: runs until signalled or stopped.
    pub exit: Option<ExitStatus>,
}

impl FakeProcess {
    pub fn exits(code: i32) -> Self {
        Self {
            exit: Some(ExitStatus {
                code,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn runs_forever() -> Self {
        Self::default()
    }
}

/// Decides each process's behaviour from its spec.
pub type FakeScript = Arc<dyn Fn(&ProcessSpec) -> FakeProcess + Send + Sync>;

struct FakeContainer {
    spec: ContainerSpec,
    state: ContainerState,
    mapped_ports: Vec<PortMapping>,
    processes: BTreeMap<String, EventLog>,
    files: BTreeMap<String, Bytes>,
    created: Instant,
}

struct State {
    containers: BTreeMap<String, FakeContainer>,
    next_host_port: u32,
}

pub struct FakeBackend {
    state: Mutex<State>,
    capacity: Capacity,
    script: FakeScript,
}

/// First host port handed out for `host_port: 0` mappings.
pub const FIRST_HOST_PORT: u32 = 61_000;

impl Default for FakeBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeBackend {
    /// Every process exits 0 at once, silently; room for 100 containers.
    pub fn new() -> Self {
        Self::with_script(Arc::new(|_| FakeProcess::exits(0)))
    }

    pub fn with_script(script: FakeScript) -> Self {
        Self {
            state: Mutex::new(State {
                containers: BTreeMap::new(),
                next_host_port: FIRST_HOST_PORT,
            }),
            capacity: Capacity {
                memory_bytes: 16 << 30,
                disk_bytes: 64 << 30,
                max_containers: 100,
            },
            script,
        }
    }

    pub fn with_capacity(mut self, capacity: Capacity) -> Self {
        self.capacity = capacity;
        self
    }

    /// The spec each existing container was created with.
    pub fn specs(&self) -> Vec<ContainerSpec> {
        self.lock().containers.values().map(|c| c.spec.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn info_of(handle: &str, c: &FakeContainer) -> ContainerInfo {
        ContainerInfo {
            handle: handle.to_string(),
            state: c.state,
            properties: c.spec.properties.clone(),
            host_ip: "127.0.0.1".into(),
            container_ip: String::new(),
            mapped_ports: c.mapped_ports.clone(),
            process_ids: c.processes.keys().cloned().collect(),
            events: Vec::new(),
        }
    }
}

fn killed(signal: Signal) -> ExitStatus {
    ExitStatus {
        code: 128 + signal.number(),
        signal: Some(signal.number()),
        oom_killed: false,
    }
}

fn missing(handle: &str) -> GardenError {
    GardenError::not_found(format!("container {handle:?}"))
}

#[async_trait]
impl ContainerBackend for FakeBackend {
    async fn ping(&self) -> Result<(), GardenError> {
        Ok(())
    }

    async fn capacity(&self) -> Result<Capacity, GardenError> {
        Ok(self.capacity)
    }

    async fn create(&self, mut spec: ContainerSpec) -> Result<ContainerInfo, GardenError> {
        if spec.rootfs.is_empty() {
            return Err(GardenError::Invalid("rootfs is required".into()));
        }
        let mut st = self.lock();
        if st.containers.len() as u64 >= self.capacity.max_containers {
            return Err(GardenError::Invalid(format!(
                "at capacity ({} containers)",
                self.capacity.max_containers
            )));
        }
        if spec.handle.is_empty() {
            spec.handle = new_id();
        }
        if st.containers.contains_key(&spec.handle) {
            return Err(GardenError::Exists(format!("container {:?}", spec.handle)));
        }
        let mut mapped_ports = Vec::new();
        for n in &spec.net_in {
            let host_port = if n.host_port == 0 {
                st.next_host_port += 1;
                st.next_host_port - 1
            } else {
                n.host_port
            };
            mapped_ports.push(PortMapping {
                host_port,
                container_port: n.container_port,
            });
        }
        let handle = spec.handle.clone();
        let c = FakeContainer {
            spec,
            state: ContainerState::Active,
            mapped_ports,
            processes: BTreeMap::new(),
            files: BTreeMap::new(),
            created: Instant::now(),
        };
        let info = Self::info_of(&handle, &c);
        st.containers.insert(handle, c);
        Ok(info)
    }

    async fn list(&self, filter: &Properties) -> Result<Vec<String>, GardenError> {
        let st = self.lock();
        Ok(st
            .containers
            .iter()
            .filter(|(_, c)| properties_match(&c.spec.properties, filter))
            .map(|(h, _)| h.clone())
            .collect())
    }

    async fn info(&self, handle: &str) -> Result<ContainerInfo, GardenError> {
        let st = self.lock();
        st.containers
            .get(handle)
            .map(|c| Self::info_of(handle, c))
            .ok_or_else(|| missing(handle))
    }

    async fn stop(&self, handle: &str, kill: bool) -> Result<(), GardenError> {
        let mut st = self.lock();
        let c = st.containers.get_mut(handle).ok_or_else(|| missing(handle))?;
        let signal = if kill { Signal::Kill } else { Signal::Term };
        for log in c.processes.values() {
            log.push(ProcessEvent::Exited(killed(signal)));
        }
        c.state = ContainerState::Stopped;
        Ok(())
    }

    async fn destroy(&self, handle: &str) -> Result<(), GardenError> {
        let c = self
            .lock()
            .containers
            .remove(handle)
            .ok_or_else(|| missing(handle))?;
        for log in c.processes.values() {
            log.push(ProcessEvent::Exited(killed(Signal::Kill)));
        }
        Ok(())
    }

    async fn run(&self, handle: &str, mut spec: ProcessSpec) -> Result<ProcessStream, GardenError> {
        if spec.path.is_empty() {
            return Err(GardenError::Invalid("process path is required".into()));
        }
        let behaviour = (self.script)(&spec);
        let mut st = self.lock();
        let c = st.containers.get_mut(handle).ok_or_else(|| missing(handle))?;
        if c.state == ContainerState::Stopped {
            return Err(GardenError::Invalid(format!("container {handle:?} is stopped")));
        }
        if spec.id.is_empty() {
            spec.id = new_id();
        }
        if c.processes.contains_key(&spec.id) {
            return Err(GardenError::Exists(format!(
                "process {:?} in container {handle:?}",
                spec.id
            )));
        }
        let log = EventLog::new();
        if !behaviour.stdout.is_empty() {
            log.push(ProcessEvent::Stdout(behaviour.stdout.into()));
        }
        if !behaviour.stderr.is_empty() {
            log.push(ProcessEvent::Stderr(behaviour.stderr.into()));
        }
        if let Some(status) = behaviour.exit {
            log.push(ProcessEvent::Exited(status));
        }
        let stream = ProcessStream {
            id: spec.id.clone(),
            events: log.stream(),
        };
        c.processes.insert(spec.id, log);
        Ok(stream)
    }

    async fn attach(&self, handle: &str, process_id: &str) -> Result<ProcessStream, GardenError> {
        let st = self.lock();
        let c = st.containers.get(handle).ok_or_else(|| missing(handle))?;
        let log = c.processes.get(process_id).ok_or_else(|| {
            GardenError::not_found(format!("process {process_id:?} in container {handle:?}"))
        })?;
        Ok(ProcessStream {
            id: process_id.to_string(),
            events: log.stream(),
        })
    }

    async fn signal(&self, handle: &str, process_id: &str, signal: Signal) -> Result<(), GardenError> {
        let st = self.lock();
        let c = st.containers.get(handle).ok_or_else(|| missing(handle))?;
        let log = c.processes.get(process_id).ok_or_else(|| {
            GardenError::not_found(format!("process {process_id:?} in container {handle:?}"))
        })?;
        // A fake process dies of any signal (no handlers to trap it).
        log.push(ProcessEvent::Exited(killed(signal)));
        Ok(())
    }

    async fn stream_in(&self, handle: &str, dst_path: &str, mut tar: TarStream) -> Result<(), GardenError> {
        let mut data = Vec::new();
        while let Some(chunk) = tar.next().await {
            data.extend_from_slice(&chunk?);
        }
        let mut st = self.lock();
        let c = st.containers.get_mut(handle).ok_or_else(|| missing(handle))?;
        c.files.insert(dst_path.to_string(), data.into());
        Ok(())
    }

    /// Returns exactly the bytes last streamed in at `src_path` (the fake does not read tar).
    async fn stream_out(&self, handle: &str, src_path: &str) -> Result<TarStream, GardenError> {
        let st = self.lock();
        let c = st.containers.get(handle).ok_or_else(|| missing(handle))?;
        let data = c
            .files
            .get(src_path)
            .cloned()
            .ok_or_else(|| GardenError::not_found(format!("{src_path:?} in container {handle:?}")))?;
        Ok(Box::pin(futures_util::stream::once(async move { Ok(data) })))
    }

    async fn bulk_metrics(
        &self,
        handles: &[String],
    ) -> Result<BTreeMap<String, ContainerMetrics>, GardenError> {
        let st = self.lock();
        Ok(handles
            .iter()
            .filter_map(|h| {
                st.containers.get(h).map(|c| {
                    let running = c.processes.values().filter(|l| l.exit_status().is_none()).count() as u64;
                    let metrics = ContainerMetrics {
                        pids: running,
                        age_ms: c.created.elapsed().as_millis() as u64,
                        ..Default::default()
                    };
                    (h.clone(), metrics)
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NetIn;

    fn spec(handle: &str) -> ContainerSpec {
        ContainerSpec {
            handle: handle.into(),
            rootfs: "preloaded:busybox".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn containers_are_created_listed_by_property_and_destroyed() {
        let g = FakeBackend::new();
        let mut a = spec("a");
        a.properties.insert("owner".into(), "cell-1".into());
        a.net_in = vec![
            NetIn {
                host_port: 0,
                container_port: 8080,
            },
            NetIn {
                host_port: 7000,
                container_port: 9090,
            },
        ];
        let info = g.create(a).await.unwrap();
        assert_eq!(
            info.mapped_ports,
            [
                PortMapping {
                    host_port: FIRST_HOST_PORT,
                    container_port: 8080
                },
                PortMapping {
                    host_port: 7000,
                    container_port: 9090
                }
            ]
        );
        g.create(spec("b")).await.unwrap();
        assert_eq!(
            g.create(spec("b")).await.unwrap_err(),
            GardenError::Exists("container \"b\"".into())
        );
        let owner: Properties = [("owner".to_string(), "cell-1".to_string())].into();
        assert_eq!(g.list(&owner).await.unwrap(), ["a"]);
        assert_eq!(g.list(&Properties::new()).await.unwrap(), ["a", "b"]);
        g.destroy("a").await.unwrap();
        assert!(matches!(g.info("a").await, Err(GardenError::NotFound(_))));
        assert!(matches!(g.destroy("a").await, Err(GardenError::NotFound(_))));
        assert!(
            g.create(ContainerSpec::default()).await.is_err(),
            "rootfs is required"
        );
    }

    #[tokio::test]
    async fn scripted_processes_stream_output_and_exit_and_can_be_attached_later() {
        let g = FakeBackend::with_script(Arc::new(|p: &ProcessSpec| match p.path.as_str() {
            "echo" => FakeProcess {
                stdout: p.args.join(" ").into_bytes(),
                ..FakeProcess::exits(0)
            },
            "fail" => FakeProcess {
                stderr: b"boom".to_vec(),
                ..FakeProcess::exits(3)
            },
            _ => FakeProcess::runs_forever(),
        }));
        g.create(spec("c")).await.unwrap();
        let p = g
            .run(
                "c",
                ProcessSpec {
                    path: "echo".into(),
                    args: vec!["hi".into(), "there".into()],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let events: Vec<_> = p.events.collect().await;
        assert_eq!(
            events,
            [
                ProcessEvent::Stdout("hi there".into()),
                ProcessEvent::Exited(ExitStatus::default())
            ]
        );
        let f = g
            .run(
                "c",
                ProcessSpec {
                    id: "f".into(),
                    path: "fail".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        drop(f);
        let replay: Vec<_> = g.attach("c", "f").await.unwrap().events.collect().await;
        assert_eq!(
            replay.last(),
            Some(&ProcessEvent::Exited(ExitStatus {
                code: 3,
                ..Default::default()
            }))
        );

        let daemon = g
            .run(
                "c",
                ProcessSpec {
                    id: "d".into(),
                    path: "sleep".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        g.signal("c", "d", Signal::Term).await.unwrap();
        let events: Vec<_> = daemon.events.collect().await;
        assert_eq!(
            events,
            [ProcessEvent::Exited(ExitStatus {
                code: 143,
                signal: Some(15),
                oom_killed: false
            })]
        );
        let ids = g.info("c").await.unwrap().process_ids;
        assert_eq!(ids.len(), 3, "{ids:?}");
        assert!(
            ids.contains(&"d".to_string()) && ids.contains(&"f".to_string()),
            "{ids:?}"
        );
        assert!(g.attach("c", "nope").await.is_err());
    }

    #[tokio::test]
    async fn stop_ends_running_processes_and_refuses_new_ones() {
        let g = FakeBackend::with_script(Arc::new(|_| FakeProcess::runs_forever()));
        g.create(spec("s")).await.unwrap();
        let p = g
            .run(
                "s",
                ProcessSpec {
                    path: "app".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        g.stop("s", true).await.unwrap();
        let events: Vec<_> = p.events.collect().await;
        assert_eq!(events, [ProcessEvent::Exited(killed(Signal::Kill))]);
        assert_eq!(g.info("s").await.unwrap().state, ContainerState::Stopped);
        assert!(matches!(
            g.run(
                "s",
                ProcessSpec {
                    path: "app".into(),
                    ..Default::default()
                }
            )
            .await,
            Err(GardenError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn files_round_trip_and_capacity_is_enforced() {
        let g = FakeBackend::new().with_capacity(Capacity {
            memory_bytes: 1,
            disk_bytes: 1,
            max_containers: 1,
        });
        g.create(spec("f")).await.unwrap();
        assert!(matches!(g.create(spec("g")).await, Err(GardenError::Invalid(_))));
        let tar: TarStream = Box::pin(futures_util::stream::iter(vec![
            Ok(Bytes::from("ab")),
            Ok(Bytes::from("c")),
        ]));
        g.stream_in("f", "/app", tar).await.unwrap();
        let mut out = g.stream_out("f", "/app").await.unwrap();
        assert_eq!(out.next().await.unwrap().unwrap(), Bytes::from("abc"));
        let m = g.bulk_metrics(&["f".into(), "nope".into()]).await.unwrap();
        assert_eq!(m.keys().collect::<Vec<_>>(), ["f"]);
    }
}
