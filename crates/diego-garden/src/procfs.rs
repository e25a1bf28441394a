//! What `/proc` says of a process: the one reader of `/proc/<pid>/stat` and
//! `/proc/<pid>/status` for the backends (process groups and metrics, the runc net-in proxy),
//! the benchmarks and the tests.

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Field 3 (`R`, `S`, `Z`, …).
    pub state: char,
    /// Field 4.
    pub ppid: u32,
    /// Field 5.
    pub pgid: u32,
    /// Fields 14 + 15 (user + system CPU time), in clock ticks.
    pub cpu_ticks: u64,
    /// Field 22: clock ticks after boot. With the pid it names a process: a reused pid has
    /// another start time.
    pub start_time: u64,
}

impl Stat {
    /// `/proc/<pid>/stat`; an error if there is no such process.
    pub fn read(pid: u32) -> std::io::Result<Stat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        Stat::parse(&text).ok_or_else(|| std::io::Error::other(format!("unparsable /proc/{pid}/stat")))
    }

    /// `/proc/<pid>/task/<tid>/stat`: one thread's figures (its CPU time is its own).
    pub fn read_thread(pid: u32, tid: u32) -> std::io::Result<Stat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))?;
        Stat::parse(&text)
            .ok_or_else(|| std::io::Error::other(format!("unparsable /proc/{pid}/task/{tid}/stat")))
    }

    /// The command name (field 2) may hold spaces and parentheses: fields are counted from
    /// the last `)`.
    pub fn parse(stat: &str) -> Option<Stat> {
        let rest = stat.get(stat.rfind(')')? + 1..)?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // fields[0] is field 3.
        Some(Stat {
            state: fields.first()?.chars().next()?,
            ppid: fields.get(1)?.parse().ok()?,
            pgid: fields.get(2)?.parse().ok()?,
            cpu_ticks: fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?,
            start_time: fields.get(19)?.parse().ok()?,
        })
    }

    /// Dead: a zombie waiting to be reaped, or being torn down.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// The start time of `pid` if it is a live process (not a zombie); `None` otherwise.
pub fn live_start_time(pid: u32) -> Option<u64> {
    Stat::read(pid)
        .ok()
        .filter(|s| !s.is_dead())
        .map(|s| s.start_time)
}

/// The threads of `pid` whose name (`comm`) starts with `prefix`, by thread id.
pub fn threads_named(pid: u32, prefix: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|tid| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                .is_ok_and(|comm| comm.starts_with(prefix))
        })
        .collect()
}

/// The children of `pid` (those its threads started), from `/proc/<pid>/task/*/children`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut kids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    kids.sort_unstable();
    kids
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `RssAnon`, …) in KiB; `None` if the process
/// or the field is not there.
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat() {
        let stat = "42 (a (weird) name) S 1 40 40 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 123456 1000 10";
        assert_eq!(
            Stat::parse(stat),
            Some(Stat {
                state: 'S',
                ppid: 1,
                pgid: 40,
                cpu_ticks: 12,
                start_time: 123_456
            })
        );
        assert_eq!(Stat::parse("42 (x) S 1"), None);
        assert_eq!(Stat::parse("garbage"), None);
        let zombie = "42 (x) Z 1 40 40 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 123456 1000 10";
        assert!(Stat::parse(zombie).unwrap().is_dead());
        let me = std::process::id();
        assert!(live_start_time(me).is_some_and(|t| t > 0));
        assert!(status_kb(me, "VmRSS").is_some_and(|kb| kb > 0));
        assert_eq!(status_kb(me, "NoSuchField"), None);
        let main_thread = Stat::read_thread(me, me).unwrap();
        assert_eq!(main_thread.ppid, Stat::read(me).unwrap().ppid);
        // A thread names itself as it starts: ask only once it runs, and keep it until then.
        let (running, started) = std::sync::mpsc::channel();
        let (finish, finished) = std::sync::mpsc::channel::<()>();
        let named = std::thread::Builder::new()
            .name("procfs-probe".into())
            .spawn(move || {
                running.send(()).unwrap();
                let _ = finished.recv();
            })
            .unwrap();
        started.recv().unwrap();
        assert_eq!(threads_named(me, "procfs-probe").len(), 1);
        finish.send(()).unwrap();
        named.join().unwrap();
        let child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        assert!(children(me).contains(&child.id()));
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
    }
}
