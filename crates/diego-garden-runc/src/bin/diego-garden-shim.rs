//! The per-process supervisor of the runc backend as a binary of its own (the `diego` binary
//! offers the same as `diego garden-shim`); see `diego_garden_runc::shim`.

fn main() {
    std::process::exit(diego_garden_runc::shim::main(std::env::args_os().skip(1)));
}
