//! etcd's members, used one at a time: every call goes to the current member until one fails
//! to answer, then calls move to the next (as etcd's own Go client pins one endpoint).
//!
//! etcd-client's balanced channel over every endpoint keeps sending a share of the calls to a
//! member that is down or cut off, so with one member lost each call had a chance of waiting
//! out a connect or request timeout — long enough for cells' presences to lapse on a healthy
//! cluster. A member that answers "no leader" (it is cut off from the others; the store asks
//! for a leader on every call) counts as not answering too.

use std::sync::atomic::{AtomicUsize, Ordering};

use etcd_client::{Client, ConnectOptions};

pub(super) struct Members {
    /// One client per member (each over its own connection), in the order given.
    clients: Vec<(String, Client)>,
    current: AtomicUsize,
}

impl Members {
    /// Clients of `endpoints` (`http://host:port`); connections are made on first use.
    pub(super) async fn connect(
        endpoints: &[String],
        options: &ConnectOptions,
    ) -> Result<Members, etcd_client::Error> {
        let mut clients = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            clients.push((e.clone(), Client::connect([e], Some(options.clone())).await?));
        }
        if clients.is_empty() {
            return Err(etcd_client::Error::InvalidArgs("no etcd endpoint".into()));
        }
        Ok(Members {
            clients,
            current: AtomicUsize::new(0),
        })
    }

    /// The member calls go to now, with its number for [`Members::failed`].
    pub(super) fn current(&self) -> (usize, &Client) {
        let i = self.current.load(Ordering::Acquire) % self.clients.len();
        (i, &self.clients[i].1)
    }

    /// A call to member `i` went unanswered: later calls go to the next member, unless
    /// another call already moved them on.
    pub(super) fn failed(&self, i: usize, error: &str) {
        let n = self.clients.len();
        if n < 2 {
            return;
        }
        let next = (i + 1) % n;
        if self
            .current
            .compare_exchange(i, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            tracing::info!(
                from = %self.clients[i].0,
                to = %self.clients[next].0,
                error,
                "an etcd member did not answer; using the next"
            );
        }
    }
}
