//! `diego-builder`: stages an app's directory with buildpacks into a droplet (Diego's tailor).
//! Runs inside the staging container; see docs/190-lifecycle.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use diego_lifecycle::builder::{self, Buildpack, Layout};
use diego_lifecycle::droplet;

#[derive(Debug, Parser)]
#[command(
    name = "diego-builder",
    version,
    about = "Stage an app's directory with buildpacks into a droplet"
)]
struct Args {
    /// The app's files; the buildpack changes them in place.
    #[arg(long, value_name = "DIR")]
    build_dir: PathBuf,
    /// Where the buildpacks are, one directory each, named as in --buildpack-order.
    #[arg(long, value_name = "DIR")]
    buildpacks_dir: PathBuf,
    /// The buildpacks to detect with, in order, comma-separated.
    #[arg(long, value_name = "NAME,…", value_delimiter = ',', required = true)]
    buildpack_order: Vec<String>,
    /// Stage with this buildpack, without detection.
    #[arg(long, value_name = "NAME")]
    buildpack: Option<String>,
    /// Kept between stagings of the same app.
    #[arg(long, value_name = "DIR")]
    cache_dir: PathBuf,
    /// Where the deps and profile.d directories are made.
    #[arg(long, value_name = "DIR", default_value = "/tmp/staging")]
    work_dir: PathBuf,
    /// The droplet (gzipped tar) to write.
    #[arg(long, value_name = "FILE")]
    output_droplet: PathBuf,
    /// The staging result (JSON) to write.
    #[arg(long, value_name = "FILE")]
    output_metadata: PathBuf,
    /// Also pack the buildpack cache (--cache-dir) into this gzipped tar, for the next staging.
    #[arg(long, value_name = "FILE")]
    output_cache: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let buildpacks: Vec<Buildpack> = args
        .buildpack_order
        .iter()
        .map(|name| Buildpack {
            name: name.clone(),
            dir: args.buildpacks_dir.join(name),
        })
        .collect();
    let layout = Layout {
        build_dir: args.build_dir.clone(),
        cache_dir: args.cache_dir.clone(),
        deps_dir: args.work_dir.join("deps"),
        profile_dir: args.work_dir.join("profile.d"),
    };
    let result = match builder::stage(&buildpacks, &layout, args.buildpack.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("staging failed: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let written = std::fs::File::create(&args.output_droplet)
        .and_then(|f| droplet::pack(&layout, &result, std::io::BufWriter::new(f)))
        .and_then(|()| {
            let (droplet_sha256, droplet_size) = droplet::sha256_file(&args.output_droplet)?;
            let cache_sha256 = match &args.output_cache {
                Some(file) => {
                    std::fs::create_dir_all(&layout.cache_dir)?;
                    let out = std::io::BufWriter::new(std::fs::File::create(file)?);
                    diego_lifecycle::archive::pack_tree(&layout.cache_dir, out)?;
                    Some(droplet::sha256_file(file)?.0)
                }
                None => None,
            };
            let staged = droplet::StagedDroplet {
                result: result.clone(),
                droplet_sha256,
                droplet_size,
                cache_sha256,
            };
            let json = serde_json::to_vec(&staged).map_err(std::io::Error::other)?;
            std::fs::write(&args.output_metadata, json)
        });
    if let Err(e) = written {
        eprintln!("staging failed: writing the droplet: {e}");
        return ExitCode::from(1);
    }
    println!(
        "staged with buildpack {}; start command: {}",
        result.detected_buildpack, result.start_command
    );
    ExitCode::SUCCESS
}
