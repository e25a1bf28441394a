//! Turning a failed command into what the user sees on stderr and the exit code.

use std::process::ExitCode;

use clap::CommandFactory;
use diego_client::ClientError;

use crate::cli::Cli;

/// The command line was well-formed for clap but still unusable (e.g. `task submit` with
/// neither a command nor `-f`). Reported like clap's own errors, with exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// Prints `err` to stderr and returns the exit code for it.
pub fn report(err: &anyhow::Error, bbs_url: &str) -> ExitCode {
    if let Some(u) = err.downcast_ref::<UsageError>() {
        let e = Cli::command().error(clap::error::ErrorKind::InvalidValue, &u.0);
        let _ = e.print();
        return ExitCode::from(2);
    }
    eprintln!("{}", describe(err, bbs_url));
    ExitCode::FAILURE
}

/// The message for `err`: the server's own words for API errors (one line per invalid
/// field), a hint to start a BBS when none is listening.
pub fn describe(err: &anyhow::Error, bbs_url: &str) -> String {
    let client_err = err.chain().find_map(|e| e.downcast_ref::<ClientError>());
    // Context added on top of the client error ("deleting task x") is worth keeping.
    let context: Vec<String> = err
        .chain()
        .take_while(|e| e.downcast_ref::<ClientError>().is_none())
        .map(|e| e.to_string())
        .collect();
    let prefix = if context.is_empty() || client_err.is_none() {
        String::new()
    } else {
        format!("{}: ", context.join(": "))
    };
    match client_err {
        Some(ClientError::Api { error, .. }) => {
            let mut out = format!("error: {prefix}{} ({})", error.message, error.kind.name());
            for f in &error.field_errors {
                out.push_str(&format!("\n  {}: {}", f.field, f.message));
            }
            out
        }
        Some(e @ (ClientError::Transport { .. } | ClientError::Unreachable { .. })) if e.is_connect() => {
            format!(
                "error: {prefix}cannot reach the BBS at {bbs_url}: {e}\n  \
             Is it running? Start one on this machine with `diego dev`, or point --bbs \
             (or DIEGO_BBS_URL) at a running BBS."
            )
        }
        Some(e) => format!("error: {prefix}{e}"),
        None => format!("error: {err:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;
    use diego_model::{ApiError, ErrorType, FieldError};

    #[test]
    fn api_errors_show_the_server_message_and_each_field() {
        let mut api = ApiError::new(ErrorType::InvalidRecord, "invalid task: task_guid: is required");
        api.field_errors.push(FieldError {
            field: "task_guid".into(),
            message: "is required".into(),
        });
        api.field_errors.push(FieldError {
            field: "action".into(),
            message: "is required".into(),
        });
        let err = anyhow::Error::new(ClientError::Api {
            status: 400,
            error: api,
            unprocessed: false,
        })
        .context("submitting task");
        assert_eq!(
            describe(&err, "http://x"),
            "error: submitting task: invalid task: task_guid: is required (InvalidRecord)\n  \
             task_guid: is required\n  action: is required"
        );
    }

    #[test]
    fn other_errors_show_their_chain() {
        let err = Err::<(), _>(std::io::Error::other("boom"))
            .context("reading task.json")
            .unwrap_err();
        assert_eq!(describe(&err, "http://x"), "error: reading task.json: boom");
    }

    #[tokio::test]
    async fn no_bbs_of_a_list_answering_names_every_url() {
        let ports: Vec<u16> = (0..2)
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            })
            .collect();
        let urls: Vec<String> = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
        let client = diego_client::BbsClient::new(diego_client::BbsUrls::new(&urls).unwrap());
        let err = anyhow::Error::new(client.cells().await.unwrap_err());
        let text = describe(&err, &urls.join(", "));
        assert!(
            text.starts_with(&format!(
                "error: cannot reach the BBS at {}, {}: no BBS answered:",
                urls[0], urls[1]
            )),
            "{text}"
        );
        for u in &urls {
            assert!(
                text.contains(&format!("GET {u}/v1/cells: could not connect")),
                "{text}"
            );
        }
    }
}
