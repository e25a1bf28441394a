//! `diego certs init` and `diego certs issue`: a cluster's CA and its components'
//! certificates, for the `--tls-ca/--tls-cert/--tls-key` flags (docs/170-tls.md).

use std::path::PathBuf;

use anyhow::Context as _;
use diego_runtime::tls::certs;

#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Create a CA in DIR: ca.pem (give it to every role as --tls-ca) and ca-key.pem (keep it
    /// where certificates are issued; mode 0600).
    Init(InitArgs),
    /// Issue ROLE.pem and ROLE-key.pem in DIR, signed by its CA, for server and client use.
    Issue(IssueArgs),
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Where the CA's files go (created if absent).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Replace an existing CA. Every certificate the old one signed stops being trusted once
    /// the roles load the new ca.pem.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    /// The component the certificate is for (its common name and file names), e.g. `bbs`,
    /// `cell-z1-0`, `cli`.
    pub role: String,
    /// The directory holding the CA (from `diego certs init`); the certificate goes there too.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// A DNS name or IP address the component is reached at (repeatable). Default: localhost
    /// and 127.0.0.1.
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = certs::DEFAULT_VALID_DAYS)]
    pub days: u32,
}

pub fn run(cmd: CertsCommand) -> anyhow::Result<()> {
    match cmd {
        CertsCommand::Init(args) => {
            let written = certs::init(&args.dir, args.force).context("diego certs init")?;
            println!(
                "CA written: {} (every role's --tls-ca) and {} (keep it private)",
                written.cert.display(),
                written.key.display()
            );
        }
        CertsCommand::Issue(args) => {
            let written =
                certs::issue(&args.dir, &args.role, &args.hosts, args.days).context("diego certs issue")?;
            let hosts = if args.hosts.is_empty() {
                certs::DEFAULT_HOSTS.join(", ")
            } else {
                args.hosts.join(", ")
            };
            println!(
                "certificate for {} ({hosts}; {} days) written: --tls-cert {} --tls-key {}",
                args.role,
                args.days,
                written.cert.display(),
                written.key.display()
            );
        }
    }
    Ok(())
}
