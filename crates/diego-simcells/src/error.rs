//! What can stop the simulated cells from starting or serving.

use std::net::SocketAddr;

use diego_client::ClientError;

#[derive(Debug, thiserror::Error)]
pub enum SimCellsError {
    /// The configuration cannot work; the message names every bad field.
    #[error("invalid sim-cells configuration: {0}")]
    Invalid(String),
    /// The listen address is taken or not ours to bind.
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The BBS refused or could not be reached while registering a cell.
    #[error("registering cell {cell_id:?} with the BBS")]
    BbsUnavailable {
        cell_id: String,
        bbs_url: String,
        #[source]
        source: ClientError,
    },
    /// The HTTP server failed while serving.
    #[error("serving the sim cells' rep API")]
    Serve(#[source] std::io::Error),
    /// A member (the server, the presence renewal) stopped on its own and took the others
    /// down.
    #[error(transparent)]
    Member(#[from] diego_runtime::SupervisorError),
}
