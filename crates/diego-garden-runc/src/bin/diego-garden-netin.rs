//! The per-container net-in proxy of the runc backend as a binary of its own (the `diego`
//! binary offers the same as `diego garden-netin`); see `diego_garden_runc::netin::proxy`.

fn main() {
    std::process::exit(diego_garden_runc::netin::proxy::main(std::env::args_os().skip(1)));
}
