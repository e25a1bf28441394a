//! What this process last knew of keys it read or wrote, with their mod revisions, so a
//! commit can skip its read when everything it needs is known.
//!
//! A commit has to know, for each key it writes (plus `head` and a fence's lock), the value
//! its preconditions are checked on and the mod revision etcd compares. When the caller has
//! just read the record (a claim reads the instance, then commits its change) or this
//! process wrote it last (a start follows the claim that wrote the key), that is already
//! known here, and the commit sends its transaction without a read of its own: one etcd
//! request instead of two. This is never trusted for an answer: the transaction's comparisons
//! on those mod revisions decide, and a commit that fails one — or whose preconditions fail
//! on what is known here — reads etcd before it says anything (`commit.rs`).

use std::collections::HashMap;
use std::sync::Mutex;

use etcd_client::KeyValue;

/// Keys remembered before the map starts over (forgetting only costs a read).
const CAPACITY: usize = 16_384;

/// A key as last seen: its value at `mod_revision`, or absent (`value` none) as of
/// `revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seen {
    /// The mod revision of `value`; for an absent key, the revision it was known absent at.
    pub revision: i64,
    pub value: Option<Vec<u8>>,
}

impl Seen {
    pub fn of(kv: &KeyValue) -> Seen {
        Seen {
            revision: kv.mod_revision(),
            value: Some(kv.value().to_vec()),
        }
    }

    /// The mod revision a transaction compares: `None` for an absent key (compared as
    /// version 0).
    pub fn mod_revision(&self) -> Option<i64> {
        self.value.as_ref().map(|_| self.revision)
    }
}

#[derive(Default)]
pub(super) struct Known {
    keys: Mutex<HashMap<Vec<u8>, Seen>>,
}

impl Known {
    /// Records `seen` for `key` unless something newer is known already (a read answered
    /// after this process's later write must not undo it).
    pub fn saw(&self, key: &[u8], seen: Seen) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = keys.get_mut(key) {
            if seen.revision >= old.revision {
                *old = seen;
            }
            return;
        }
        if keys.len() >= CAPACITY {
            keys.clear();
        }
        keys.insert(key.to_vec(), seen);
    }

    /// Each key's value as read at etcd revision `read_at` (`None`: absent then).
    pub fn read(&self, keys: &[Vec<u8>], values: &[Option<KeyValue>], read_at: i64) {
        for (key, kv) in keys.iter().zip(values) {
            self.saw(
                key,
                match kv {
                    Some(kv) => Seen::of(kv),
                    None => Seen {
                        revision: read_at,
                        value: None,
                    },
                },
            );
        }
    }

    /// What is known of every key of `keys`, or `None` if any is not known.
    pub fn all(&self, keys: &[Vec<u8>]) -> Option<Vec<Seen>> {
        let known = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter().map(|k| known.get(k).cloned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(revision: i64, value: &str) -> Seen {
        Seen {
            revision,
            value: Some(value.as_bytes().to_vec()),
        }
    }

    #[test]
    fn the_newest_of_what_was_seen_stays() {
        let known = Known::default();
        let k = b"k".to_vec();
        known.saw(&k, present(5, "five"));
        // A read answered late, from before the write.
        known.saw(&k, present(3, "three"));
        assert_eq!(
            known.all(std::slice::from_ref(&k)),
            Some(vec![present(5, "five")])
        );
        // Deleted at 7: known absent, compared as version 0.
        known.saw(
            &k,
            Seen {
                revision: 7,
                value: None,
            },
        );
        let seen = known.all(std::slice::from_ref(&k)).unwrap();
        assert_eq!(seen[0].mod_revision(), None);
        known.saw(&k, present(9, "nine"));
        assert_eq!(known.all(&[k]).unwrap()[0].mod_revision(), Some(9));
    }

    #[test]
    fn all_needs_every_key() {
        let known = Known::default();
        known.saw(b"a", present(1, "a"));
        assert!(known.all(&[b"a".to_vec(), b"b".to_vec()]).is_none());
        assert_eq!(known.all(&[b"a".to_vec()]).map(|v| v.len()), Some(1));
    }
}
