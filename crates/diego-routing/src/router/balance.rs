//! Which endpoint of a pool one attempt goes to: the sticky instance while it is in the
//! pool, else round robin or the least busy endpoint. Pure; the proxy keeps the counters.

use std::str::FromStr;

/// How the router spreads requests over a pool's endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Balance {
    /// Each request to the next endpoint in turn (gorouter's default).
    #[default]
    RoundRobin,
    /// The endpoint with the fewest requests in flight; ties go round robin.
    LeastConnections,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round-robin",
            Balance::LeastConnections => "least-connections",
        }
    }
}

impl FromStr for Balance {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "round-robin" => Ok(Balance::RoundRobin),
            "least-connections" => Ok(Balance::LeastConnections),
            other => Err(format!(
                "unknown balancing {other:?}: expected round-robin or least-connections"
            )),
        }
    }
}

/// What the balancer sees of one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub instance_guid: &'a str,
    /// Requests sent to it whose response has not finished.
    pub in_flight: usize,
}

/// The endpoint chosen for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// Its position in the pool.
    pub index: usize,
    /// Chosen because the request's `__VCAP_ID__` names it.
    pub sticky: bool,
}

/// The endpoint for an attempt, skipping those in `tried` (earlier attempts of the same
/// request). `turn` is the pool's request counter, which rotates round robin and breaks
/// least-connections ties. `None` when every endpoint was tried.
pub fn pick(
    candidates: &[Candidate<'_>],
    balance: Balance,
    turn: usize,
    sticky: Option<&str>,
    tried: &[usize],
) -> Option<Pick> {
    let untried = |i: &usize| !tried.contains(i);
    if let Some(guid) = sticky {
        if let Some(index) = (0..candidates.len())
            .filter(untried)
            .find(|&i| candidates[i].instance_guid == guid)
        {
            return Some(Pick { index, sticky: true });
        }
    }
    let n = candidates.len();
    if n == 0 {
        return None;
    }
    let start = turn % n;
    let in_turn = (0..n).map(|k| (start + k) % n).filter(untried);
    let index = match balance {
        Balance::RoundRobin => in_turn.into_iter().next(),
        // `min_by_key` keeps the first of equals, so ties go to the earliest in turn.
        Balance::LeastConnections => in_turn.min_by_key(|&i| candidates[i].in_flight),
    }?;
    Some(Pick { index, sticky: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(in_flight: &[usize]) -> Vec<Candidate<'static>> {
        const GUIDS: [&str; 4] = ["g0", "g1", "g2", "g3"];
        in_flight
            .iter()
            .enumerate()
            .map(|(i, &n)| Candidate {
                instance_guid: GUIDS[i],
                in_flight: n,
            })
            .collect()
    }

    #[test]
    fn round_robin_visits_every_endpoint_in_turn() {
        let p = pool(&[0, 0, 0]);
        let picked: Vec<usize> = (0..6)
            .map(|turn| pick(&p, Balance::RoundRobin, turn, None, &[]).unwrap().index)
            .collect();
        assert_eq!(picked, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn round_robin_spreads_evenly_whatever_the_load() {
        let p = pool(&[5, 0, 9, 1]);
        let mut hits = [0; 4];
        for turn in 0..400 {
            hits[pick(&p, Balance::RoundRobin, turn, None, &[]).unwrap().index] += 1;
        }
        assert_eq!(hits, [100; 4]);
    }

    /// (in flight, balance, turn, sticky, tried) → (index, sticky)
    type Case = (
        &'static [usize],
        Balance,
        usize,
        Option<&'static str>,
        &'static [usize],
        Option<(usize, bool)>,
    );

    #[test]
    fn the_choice_for_each_case() {
        use Balance::*;
        // (in flight, balance, turn, sticky, tried) → (index, sticky)
        let cases: &[Case] = &[
            // Least connections picks the idle one wherever the turn starts.
            (&[3, 0, 2], LeastConnections, 0, None, &[], Some((1, false))),
            (&[3, 0, 2], LeastConnections, 2, None, &[], Some((1, false))),
            // Ties go to the first in turn.
            (&[1, 1, 1], LeastConnections, 1, None, &[], Some((1, false))),
            (&[1, 1, 1], LeastConnections, 5, None, &[], Some((2, false))),
            (&[0, 4, 0], LeastConnections, 1, None, &[], Some((2, false))),
            // A retry skips what was tried.
            (&[0, 0, 0], RoundRobin, 0, None, &[0], Some((1, false))),
            (&[0, 0, 0], RoundRobin, 2, None, &[2, 0], Some((1, false))),
            (&[0, 5, 9], LeastConnections, 0, None, &[0], Some((1, false))),
            (&[0, 0], RoundRobin, 0, None, &[0, 1], None),
            (&[], RoundRobin, 0, None, &[], None),
            // The sticky instance while it is there, whatever the balancing says.
            (&[0, 0, 0], RoundRobin, 0, Some("g2"), &[], Some((2, true))),
            (&[0, 0, 9], LeastConnections, 0, Some("g2"), &[], Some((2, true))),
            // Gone from the pool, or refused on an earlier attempt: balanced normally.
            (&[0, 0, 0], RoundRobin, 1, Some("gone"), &[], Some((1, false))),
            (&[0, 0, 0], RoundRobin, 1, Some("g2"), &[2], Some((1, false))),
            (
                &[4, 0, 0],
                LeastConnections,
                0,
                Some("g0"),
                &[0],
                Some((1, false)),
            ),
        ];
        for (i, (in_flight, balance, turn, sticky, tried, want)) in cases.iter().enumerate() {
            let got = pick(&pool(in_flight), *balance, *turn, *sticky, tried).map(|p| (p.index, p.sticky));
            assert_eq!(
                got, *want,
                "case {i}: {in_flight:?} {balance:?} turn {turn} sticky {sticky:?} tried {tried:?}"
            );
        }
    }

    #[test]
    fn balancing_names_parse_and_a_bad_one_is_named() {
        assert_eq!("round-robin".parse(), Ok(Balance::RoundRobin));
        assert_eq!("least-connections".parse(), Ok(Balance::LeastConnections));
        let err = "random".parse::<Balance>().unwrap_err();
        assert!(
            err.contains("\"random\"") && err.contains("least-connections"),
            "{err}"
        );
        for b in [Balance::RoundRobin, Balance::LeastConnections] {
            assert_eq!(b.as_str().parse(), Ok(b));
        }
    }
}
