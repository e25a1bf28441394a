//! What the request path reads: the host map of the last published table, with each pool's
//! balancing counters. A new [`Routes`] is built on every publish and swapped in whole; an
//! endpoint still in the table keeps its [`Backend`] (and so its in-flight count).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::uri::Authority;

use super::balance::{self, Balance, Candidate, Pick};
use crate::table::{Endpoint, HostMap};

/// One endpoint as the proxy uses it.
#[derive(Debug)]
pub struct Backend {
    pub endpoint: Arc<Endpoint>,
    /// `host:port`, parsed once.
    pub authority: Authority,
    in_flight: AtomicUsize,
}

impl Backend {
    fn new(endpoint: Arc<Endpoint>) -> Option<Self> {
        let authority = endpoint.address().parse().ok()?;
        Some(Backend {
            endpoint,
            authority,
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A request in flight to a backend (see [`Backend::begin`]).
#[derive(Debug)]
pub struct InFlight(Arc<Backend>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A hostname's backends and its round-robin counter.
#[derive(Debug)]
pub struct PoolState {
    pub backends: Vec<Arc<Backend>>,
    turn: AtomicUsize,
}

impl PoolState {
    /// The backend for one attempt (see [`balance::pick`]).
    pub fn pick(&self, balance: Balance, sticky: Option<&str>, tried: &[usize]) -> Option<Pick> {
        let turn = if tried.is_empty() {
            self.turn.fetch_add(1, Ordering::Relaxed)
        } else {
            self.turn.load(Ordering::Relaxed)
        };
        // Most pools are small; the candidate list lives on the stack up to 16.
        let mut stack = [Candidate {
            instance_guid: "",
            in_flight: 0,
        }; 16];
        let heap: Vec<Candidate<'_>>;
        let candidates: &[Candidate<'_>] = if self.backends.len() <= stack.len() {
            for (slot, b) in stack.iter_mut().zip(&self.backends) {
                *slot = candidate(b);
            }
            &stack[..self.backends.len()]
        } else {
            heap = self.backends.iter().map(|b| candidate(b)).collect();
            &heap
        };
        balance::pick(candidates, balance, turn, sticky, tried)
    }
}

fn candidate(b: &Backend) -> Candidate<'_> {
    Candidate {
        instance_guid: &b.endpoint.instance_guid,
        in_flight: b.in_flight(),
    }
}

/// The host map and every pool's state, as one value swapped in on publish.
#[derive(Debug, Default)]
pub struct Routes {
    pub hosts: HostMap,
    pools: HashMap<String, Arc<PoolState>>,
}

impl Routes {
    /// The routes of `hosts`, keeping the backends `previous` has for the same endpoints.
    pub fn build(hosts: HostMap, previous: &Routes) -> Routes {
        let mut kept: HashMap<&Endpoint, &Arc<Backend>> = HashMap::new();
        for state in previous.pools.values() {
            for b in &state.backends {
                kept.insert(&b.endpoint, b);
            }
        }
        let mut pools = HashMap::new();
        for pool in hosts.pools() {
            let backends = pool
                .endpoints
                .iter()
                .filter_map(|e| match kept.get(e.as_ref()) {
                    Some(b) => Some(Arc::clone(b)),
                    None => Backend::new(e.clone()).map(Arc::new),
                })
                .collect();
            let turn = previous
                .pools
                .get(&pool.hostname)
                .map_or(0, |p| p.turn.load(Ordering::Relaxed));
            pools.insert(
                pool.hostname.clone(),
                Arc::new(PoolState {
                    backends,
                    turn: AtomicUsize::new(turn),
                }),
            );
        }
        Routes { hosts, pools }
    }

    /// The state of the pool named `hostname` as the table spells it.
    pub fn lookup_pool(&self, hostname: &str) -> Option<&Arc<PoolState>> {
        self.pools.get(hostname)
    }

    /// The pool for a request's host.
    pub fn lookup(&self, host: &str) -> Option<&Arc<PoolState>> {
        let pool = self.hosts.lookup(host)?;
        self.pools.get(&pool.hostname)
    }
}
