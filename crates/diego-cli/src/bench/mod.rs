//! Benchmarks behind `diego bench …`. Each prints real measurements; with `--json` the last
//! line of stdout is one JSON object of the figures.

pub mod auction;
pub mod bbs;
pub mod control_plane;
pub mod converge;
pub mod garden;
pub mod logs;
mod procs;
pub mod recovery;
pub mod router;
pub mod start;
pub mod unplaceable;
