//! The `diego` binary; everything lives in the `diego_cli` library.

fn main() -> std::process::ExitCode {
    // The runc backend's per-process supervisor and per-container net-in proxy (internal, not
    // in --help): dispatched before any parsing or runtime so that they stay small for as long
    // as their processes run.
    let mut args = std::env::args_os();
    let helper: Option<fn(std::env::ArgsOs) -> i32> = match args.nth(1) {
        Some(a) if a == "garden-shim" => Some(diego_garden_runc::shim::main),
        Some(a) if a == "garden-netin" => Some(diego_garden_runc::netin::proxy::main),
        _ => None,
    };
    if let Some(helper) = helper {
        let code = helper(args);
        return std::process::ExitCode::from(u8::try_from(code).unwrap_or(2));
    }
    bound_malloc_arenas();
    match diego_cli::config::parse_cli(std::env::args_os()) {
        Ok(cli) => diego_cli::run(cli),
        Err(code) => code,
    }
}

/// glibc gives each thread that allocates under contention an arena of its own, up to 8 per
/// core, and keeps what they grew to: with a large store (100,000 instances listed and decoded
/// on several threads at once) that retained memory is most of the process's. One arena per
/// core (at least 2) keeps it bounded at little cost to these mostly I/O-bound roles; an
/// operator's `MALLOC_ARENA_MAX` still decides. docs/benchmarks.md (`diego bench unplaceable`)
/// has the figures. The one `unsafe` of the workspace: mallopt has no safe wrapper.
#[allow(unsafe_code)]
fn bound_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(2);
        // SAFETY: mallopt only sets an allocator parameter; it runs before any other thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}
