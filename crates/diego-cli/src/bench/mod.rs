//! Benchmarks behind `diego bench …`. Each prints real measurements; with `--json` the last
//! line of stdout is one JSON object of the figures.

pub mod auction;
pub mod bbs;
pub mod control_plane;
pub mod converge;
pub mod etcd;
pub mod failover;
pub mod garden;
pub mod logs;
mod procs;
pub mod push;
pub mod recovery;
pub mod router;
pub mod start;
pub mod unplaceable;

/// A progress line: on stdout, or on stderr with `--json` (stdout then carries only the JSON).
pub fn say(json: bool, line: &str) {
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}
