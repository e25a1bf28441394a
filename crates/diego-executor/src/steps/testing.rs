//! Test support: a [`FakeBackend`] wrapped to record signals and, when asked, to ignore them
//! (the fake's processes die of any signal; real apps may trap SIGTERM), plus a harness with
//! one container, a memory log sink and a step context.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use diego_garden::fake::{FakeBackend, FakeProcess};
use diego_garden::{
    Capacity, ContainerBackend, ContainerInfo, ContainerMetrics, ContainerSpec, GardenError, ProcessSpec,
    ProcessStream, Properties, Signal, TarStream,
};
use diego_model::RunAction;

use super::StepContext;
use diego_logs::{LogStreamer, MemorySink};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trap {
    None,
    Term,
    All,
}

#[derive(Default)]
struct Recorded {
    signals: Vec<(String, Signal)>,
    specs: Vec<ProcessSpec>,
}

/// Delegates to a [`FakeBackend`], recording process specs and signals.
pub(crate) struct RecordingBackend {
    inner: FakeBackend,
    trap: Mutex<Trap>,
    recorded: Arc<Mutex<Recorded>>,
}

#[async_trait]
impl ContainerBackend for RecordingBackend {
    async fn ping(&self) -> Result<(), GardenError> {
        self.inner.ping().await
    }
    async fn capacity(&self) -> Result<Capacity, GardenError> {
        self.inner.capacity().await
    }
    async fn create(&self, spec: ContainerSpec) -> Result<ContainerInfo, GardenError> {
        self.inner.create(spec).await
    }
    async fn list(&self, filter: &Properties) -> Result<Vec<String>, GardenError> {
        self.inner.list(filter).await
    }
    async fn info(&self, handle: &str) -> Result<ContainerInfo, GardenError> {
        self.inner.info(handle).await
    }
    async fn stop(&self, handle: &str, kill: bool) -> Result<(), GardenError> {
        self.inner.stop(handle, kill).await
    }
    async fn destroy(&self, handle: &str) -> Result<(), GardenError> {
        self.inner.destroy(handle).await
    }
    async fn run(&self, handle: &str, mut spec: ProcessSpec) -> Result<ProcessStream, GardenError> {
        {
            let mut rec = self.recorded.lock().unwrap();
            if spec.id.is_empty() {
                // Ids that name the path, so tests can tell which process got a signal.
                spec.id = format!("{}#{}", spec.path, rec.specs.len());
            }
            rec.specs.push(spec.clone());
        }
        self.inner.run(handle, spec).await
    }
    async fn attach(&self, handle: &str, process_id: &str) -> Result<ProcessStream, GardenError> {
        self.inner.attach(handle, process_id).await
    }
    async fn signal(&self, handle: &str, process_id: &str, signal: Signal) -> Result<(), GardenError> {
        self.recorded
            .lock()
            .unwrap()
            .signals
            .push((process_id.to_string(), signal));
        let trap = *self.trap.lock().unwrap();
        match (trap, signal) {
            (Trap::All, _) | (Trap::Term, Signal::Term) => Ok(()),
            _ => self.inner.signal(handle, process_id, signal).await,
        }
    }
    async fn stream_in(&self, handle: &str, dst_path: &str, tar: TarStream) -> Result<(), GardenError> {
        self.inner.stream_in(handle, dst_path, tar).await
    }
    async fn stream_out(&self, handle: &str, src_path: &str) -> Result<TarStream, GardenError> {
        self.inner.stream_out(handle, src_path).await
    }
    async fn bulk_metrics(
        &self,
        handles: &[String],
    ) -> Result<BTreeMap<String, ContainerMetrics>, GardenError> {
        self.inner.bulk_metrics(handles).await
    }
}

/// One container in a recording fake backend, with a memory sink and a context for steps.
pub(crate) struct Harness {
    pub backend: Arc<RecordingBackend>,
    pub sink: Arc<MemorySink>,
    pub ctx: StepContext,
}

impl Harness {
    pub async fn new(script: impl Fn(&ProcessSpec) -> FakeProcess + Send + Sync + 'static) -> Self {
        let backend = Arc::new(RecordingBackend {
            inner: FakeBackend::with_script(Arc::new(script)),
            trap: Mutex::new(Trap::None),
            recorded: Arc::default(),
        });
        backend
            .create(ContainerSpec {
                handle: "c".into(),
                rootfs: "preloaded:test".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let sink = MemorySink::new();
        let streamer = LogStreamer::new(sink.clone(), "log-guid", "", Some(0));
        let ctx = StepContext::new(backend.clone(), "c", streamer);
        Self { backend, sink, ctx }
    }

    /// Processes named by path: `exit-N` exits with N after printing `<path> out`,
    /// `forever` runs until signalled.
    pub async fn by_path() -> Self {
        Self::new(|spec| {
            if let Some(code) = spec.path.strip_prefix("exit-") {
                FakeProcess {
                    stdout: format!("{} out\n", spec.path).into_bytes(),
                    ..FakeProcess::exits(code.parse().unwrap())
                }
            } else {
                FakeProcess::runs_forever()
            }
        })
        .await
    }

    pub fn ignoring_term(self) -> Self {
        *self.backend.trap.lock().unwrap() = Trap::Term;
        self
    }

    pub fn ignoring_all_signals(self) -> Self {
        *self.backend.trap.lock().unwrap() = Trap::All;
        self
    }

    /// Signals sent so far, in order.
    pub fn signals(&self) -> Vec<Signal> {
        self.backend
            .recorded
            .lock()
            .unwrap()
            .signals
            .iter()
            .map(|(_, s)| *s)
            .collect()
    }

    /// Paths of the processes signalled, in order, with the signal.
    pub fn signalled_paths(&self) -> Vec<(String, Signal)> {
        let rec = self.backend.recorded.lock().unwrap();
        rec.signals
            .iter()
            .map(|(pid, s)| (pid.split('#').next().unwrap_or_default().to_string(), *s))
            .collect()
    }

    /// Every process spec run so far, in order.
    pub fn specs(&self) -> Vec<ProcessSpec> {
        self.backend.recorded.lock().unwrap().specs.clone()
    }
}

pub(crate) fn run_action(path: &str) -> RunAction {
    RunAction {
        path: path.into(),
        ..Default::default()
    }
}
