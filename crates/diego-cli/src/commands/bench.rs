//! `diego bench …`: load generators that print numbers.

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Benchmark the placement algorithm in process: Diego's simulation scenarios and
    /// 1,000,000 instances onto 10,000 cells.
    Auction(BenchAuctionArgs),
    /// Benchmark the BBS on its embedded store over HTTP on loopback.
    Bbs(BenchBbsArgs),
    /// Benchmark placement end to end: the real BBS, auctioneer and 1,000 simulated cells.
    ControlPlane(BenchControlPlaneArgs),
    /// Benchmark one convergence pass over a large, damaged cluster (missing cells and
    /// indices, crashed instances) on the BBS's store.
    Converge(BenchConvergeArgs),
    /// Benchmark BBS failover: kill -9 the active BBS (of two on a real etcd) under a steady
    /// write load, time the takeover, check no acknowledged write is lost or applied twice.
    Failover(BenchFailoverArgs),
    /// Benchmark the runc container backend in process against raw `runc run` (needs root).
    Garden(BenchGardenArgs),
    /// Benchmark log lines: 100 instances through the real shipper to one log server, one
    /// follower over SSE (in process, on loopback).
    Logs(BenchLogsArgs),
    /// Benchmark `diego app push` in a fresh `diego dev` (needs root, runc and the debian
    /// rootfs): a static site and a Python app until they answer through the router, and an
    /// unchanged re-push, against an LRP desired straight in the BBS.
    Push(BenchPushArgs),
    /// Benchmark recovery from cell loss: kill -9 a cell and its containers, time until every
    /// instance runs again elsewhere (runc when root, else processes).
    Recovery(BenchRecoveryArgs),
    /// Benchmark the router against nginx (Debian's) in front of the same 4 loopback backends:
    /// wrk throughput, open-loop latency at half nginx's maximum, and how soon a removed
    /// instance stops getting requests.
    Router(BenchRouterArgs),
    /// Benchmark instance starts on a real cell: desire → RUNNING against raw runc create+start.
    Start(BenchStartArgs),
    /// Benchmark an LRP no cell can take (100,000 instances): memory while every round fails
    /// it, and how soon a delete or a scale to zero is answered and done.
    Unplaceable(BenchUnplaceableArgs),
}

/// Where `bench bbs` and `bench control-plane` also run their workload on etcd.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchEtcdArgs {
    /// Also run the workload on etcd at this URL (`etcd://host:port[,host:port…][/prefix]`),
    /// after the SQLite run, each run under a key prefix of its own.
    #[arg(long, value_name = "URL", conflicts_with = "start_etcd")]
    pub store: Option<String>,
    /// Also run the workload on an etcd the benchmark starts: N members (default 3) on free
    /// loopback ports, data in a temporary directory, killed on exit.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "3")]
    pub start_etcd: Option<usize>,
}

impl BenchEtcdArgs {
    fn choice(self) -> anyhow::Result<crate::bench::etcd::EtcdChoice> {
        if let Some(url) = &self.store {
            diego_store::etcd::EtcdOptions::from_url(url).map_err(|e| anyhow::anyhow!("--store: {e}"))?;
        }
        if self.start_etcd == Some(0) {
            anyhow::bail!("--start-etcd: members must be 1 or more (got 0)");
        }
        Ok(crate::bench::etcd::EtcdChoice {
            store: self.store,
            start: self.start_etcd,
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct BenchRouterArgs {
    /// Print human lines on stderr and one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Seconds of each wrk run and of each open-loop run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

#[derive(Debug, clap::Args)]
pub struct BenchFailoverArgs {
    /// Print human lines on stderr and one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Members of the etcd cluster the benchmark starts.
    #[arg(long, default_value_t = 3)]
    pub etcd_members: usize,
    /// Kills of the active BBS (each followed by a restart of the killed one as passive).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Tasks desired per second through the failing-over client.
    #[arg(long, default_value_t = 50)]
    pub rate: u32,
    /// Seconds of writes before each kill.
    #[arg(long, default_value_t = 3)]
    pub load: u64,
    /// `--lock-ttl` for both BBS [default: the BBS's default].
    #[arg(long, value_name = "SECONDS")]
    pub lock_ttl: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct BenchUnplaceableArgs {
    /// Print human lines on stderr and one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Instances of the unplaceable LRP.
    #[arg(long, default_value_t = 100_000)]
    pub instances: i32,
    /// Seconds to keep it failing before it is deleted.
    #[arg(long, default_value_t = 150)]
    pub hold: u64,
}

#[derive(Debug, clap::Args)]
pub struct BenchLogsArgs {
    /// Print human lines on stderr and one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Simulated instances writing lines (one log guid).
    #[arg(long, default_value_t = 100)]
    pub instances: usize,
    /// Lines per second offered, all instances together.
    #[arg(long, default_value_t = 250_000)]
    pub rate: u64,
    /// Seconds the instances write.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
}

#[derive(Debug, clap::Args)]
pub struct BenchAuctionArgs {
    /// Print human lines on stderr and one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Run a tenth of the million-instance scenario.
    #[arg(long)]
    pub quick: bool,
}

#[derive(Debug, clap::Args)]
pub struct BenchControlPlaneArgs {
    /// Print human lines on stderr and one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Simulated cells.
    #[arg(long, default_value_t = 1000)]
    pub cells: usize,
    /// Desired LRPs (each with --instances-per-lrp instances).
    #[arg(long, default_value_t = 1000)]
    pub lrps: usize,
    #[arg(long, default_value_t = 100)]
    pub instances_per_lrp: usize,
    /// Seconds to wait for every instance to be claimed.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    #[command(flatten)]
    pub etcd: BenchEtcdArgs,
}

#[derive(Debug, clap::Args)]
pub struct BenchConvergeArgs {
    /// Print human lines on stderr and one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Actual LRPs in the seeded store.
    #[arg(long, default_value_t = 250_000)]
    pub actual: usize,
    /// Desired LRPs they belong to.
    #[arg(long, default_value_t = 25_000)]
    pub desired: usize,
    /// Cells they run on (1% of them without a presence).
    #[arg(long, default_value_t = 1_000)]
    pub cells: usize,
}

#[derive(Debug, clap::Args)]
pub struct BenchPushArgs {
    /// Print human lines on stderr and one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Runs of each measurement (the figures are their medians).
    #[arg(long, default_value_t = 3)]
    pub trials: usize,
}

#[derive(Debug, clap::Args)]
pub struct BenchRecoveryArgs {
    /// Print human lines on stderr and one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Cells killed, one after another (each restarted before the next).
    #[arg(long, default_value_t = 5)]
    pub trials: usize,
}

#[derive(Debug, clap::Args)]
pub struct BenchStartArgs {
    /// Print human lines on stderr and one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Instances of the benchmark LRP.
    #[arg(long, default_value_t = 20)]
    pub instances: usize,
    /// Containers the benchmark's own cell creates at once [default: the cell's, one per
    /// core, at least 2]; not used with --bbs.
    #[arg(long, value_name = "N")]
    pub max_concurrent_creates: Option<usize>,
}

#[derive(Debug, clap::Args)]
pub struct BenchGardenArgs {
    /// Print human lines on stderr and one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Sequential create → run /bin/true → destroy cycles (and raw `runc run` iterations).
    #[arg(long, default_value_t = 30)]
    pub cycles: usize,
    /// Cycles in total over 8 parallel workers.
    #[arg(long, default_value_t = 40)]
    pub parallel_cycles: usize,
    /// Idle containers (each running `sleep 3600`) for the supervision-memory figure.
    #[arg(long, default_value_t = 10)]
    pub idle: usize,
}

#[derive(Debug, clap::Args)]
pub struct BenchBbsArgs {
    /// Print human lines on stderr and one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds the task-transition phase runs.
    #[arg(long, default_value_t = 5.0)]
    pub task_seconds: f64,
    /// Desired LRPs to create (each with --instances-per-lrp instances).
    #[arg(long, default_value_t = 1000)]
    pub lrps: usize,
    #[arg(long, default_value_t = 100)]
    pub instances_per_lrp: usize,
    /// Instances to claim and start.
    #[arg(long, default_value_t = 20_000)]
    pub claim_start_instances: usize,
    #[command(flatten)]
    pub etcd: BenchEtcdArgs,
}

pub async fn run(cmd: BenchCommand, bbs: Option<String>) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Auction(a) => {
            crate::bench::auction::run(crate::bench::auction::Options {
                json: a.json,
                quick: a.quick,
            })
            .await
        }
        BenchCommand::Bbs(a) => {
            crate::bench::bbs::run(crate::bench::bbs::Options {
                json: a.json,
                clients: a.clients.max(1),
                task_seconds: a.task_seconds,
                lrps: a.lrps,
                instances_per_lrp: a.instances_per_lrp,
                claim_start_instances: a.claim_start_instances,
                etcd: a.etcd.choice()?,
            })
            .await
        }
        BenchCommand::ControlPlane(a) => {
            crate::bench::control_plane::run(crate::bench::control_plane::Options {
                json: a.json,
                cells: a.cells.max(1),
                lrps: a.lrps.max(1),
                instances_per_lrp: a.instances_per_lrp.max(1),
                timeout: std::time::Duration::from_secs(a.timeout),
                etcd: a.etcd.choice()?,
            })
            .await
        }
        BenchCommand::Converge(a) => {
            crate::bench::converge::run(crate::bench::converge::Options {
                json: a.json,
                actual: a.actual.max(1),
                desired: a.desired.max(1),
                cells: a.cells.max(2),
            })
            .await
        }
        BenchCommand::Logs(a) => {
            anyhow::ensure!(a.seconds > 0.0, "--seconds must be above 0 (got {})", a.seconds);
            crate::bench::logs::run(crate::bench::logs::Options {
                json: a.json,
                instances: a.instances.max(1),
                rate: a.rate.max(1),
                seconds: a.seconds,
            })
            .await
        }
        BenchCommand::Push(a) => {
            crate::bench::push::run(crate::bench::push::Options {
                json: a.json,
                trials: a.trials,
            })
            .await
        }
        BenchCommand::Recovery(a) => {
            crate::bench::recovery::run(crate::bench::recovery::Options {
                json: a.json,
                trials: a.trials,
            })
            .await
        }
        BenchCommand::Start(a) => {
            crate::bench::start::run(crate::bench::start::Options {
                json: a.json,
                instances: a.instances.max(1),
                max_concurrent_creates: a.max_concurrent_creates,
                bbs,
            })
            .await
        }
        BenchCommand::Router(a) => {
            crate::bench::router::run(crate::bench::router::Options {
                json: a.json,
                duration: std::time::Duration::from_secs(a.duration.clamp(1, 600)),
                connections: a.connections.max(1),
                threads: a.threads.clamp(1, a.connections.max(1)),
            })
            .await
        }
        BenchCommand::Failover(a) => {
            crate::bench::failover::run(crate::bench::failover::Options {
                json: a.json,
                etcd_members: a.etcd_members.clamp(1, 7),
                rounds: a.rounds.clamp(1, 100),
                rate: a.rate.clamp(1, 1_000),
                load: std::time::Duration::from_secs(a.load.clamp(1, 600)),
                lock_ttl: a.lock_ttl,
            })
            .await
        }
        BenchCommand::Unplaceable(a) => {
            crate::bench::unplaceable::run(crate::bench::unplaceable::Options {
                json: a.json,
                instances: a.instances.max(1),
                hold: std::time::Duration::from_secs(a.hold),
            })
            .await
        }
        BenchCommand::Garden(a) => {
            crate::bench::garden::run(crate::bench::garden::Options {
                json: a.json,
                cycles: a.cycles,
                parallel_cycles: a.parallel_cycles,
                idle: a.idle,
            })
            .await
        }
    }
}
