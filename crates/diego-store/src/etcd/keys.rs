//! Where each thing lives in etcd's key space, under the store's prefix.
//!
//! Keys sort the way listings are ordered, so a range read returns records in order:
//! tasks by guid, desired LRPs by process guid, actual LRPs by (process guid, index,
//! presence), presences by cell id, domains by name, feed entries by revision.

use diego_model::Presence;

use crate::RecordKey;

/// Separates an actual LRP's process guid from its index: below every character a guid
/// holds, so `p` sorts before `p-2` as the strings do.
const SEP: char = '\0';

/// The key layout of one store (one prefix).
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    /// `prefix` ends with `/` (added if missing).
    pub fn new(prefix: &str) -> Keys {
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Keys { prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, kind: &str, rest: &str) -> Vec<u8> {
        format!("{}{kind}/{rest}", self.prefix).into_bytes()
    }

    pub fn record(&self, key: &RecordKey) -> Vec<u8> {
        match key {
            RecordKey::Task { task_guid } => self.task(task_guid),
            RecordKey::DesiredLrp { process_guid } => self.desired(process_guid),
            RecordKey::ActualLrp {
                process_guid,
                index,
                presence,
            } => self.actual(process_guid, *index, *presence),
            RecordKey::CellPresence { cell_id } => self.cell(cell_id),
        }
    }

    pub fn task(&self, task_guid: &str) -> Vec<u8> {
        self.key("task", task_guid)
    }

    pub fn tasks(&self) -> Vec<u8> {
        self.key("task", "")
    }

    pub fn desired(&self, process_guid: &str) -> Vec<u8> {
        self.key("desired", process_guid)
    }

    pub fn desireds(&self) -> Vec<u8> {
        self.key("desired", "")
    }

    pub fn actual(&self, process_guid: &str, index: i32, presence: Presence) -> Vec<u8> {
        let mut k = self.actual_index(process_guid, index);
        k.push(presence_digit(presence));
        k
    }

    /// Every presence of one index.
    pub fn actual_index(&self, process_guid: &str, index: i32) -> Vec<u8> {
        // Flipping the sign bit makes the hex digits sort as the signed index does.
        let ordered = (index as u32) ^ 0x8000_0000;
        self.key("actual", &format!("{process_guid}{SEP}{ordered:08x}"))
    }

    /// Every instance of one process.
    pub fn actual_process(&self, process_guid: &str) -> Vec<u8> {
        self.key("actual", &format!("{process_guid}{SEP}"))
    }

    pub fn actuals(&self) -> Vec<u8> {
        self.key("actual", "")
    }

    pub fn cell(&self, cell_id: &str) -> Vec<u8> {
        self.key("cell", cell_id)
    }

    pub fn cells(&self) -> Vec<u8> {
        self.key("cell", "")
    }

    pub fn lock(&self, key: &str) -> Vec<u8> {
        self.key("lock", key)
    }

    pub fn domain(&self, domain: &str) -> Vec<u8> {
        self.key("domain", domain)
    }

    pub fn domains(&self) -> Vec<u8> {
        self.key("domain", "")
    }

    /// The change feed's head and how far it was pruned.
    pub fn head(&self) -> Vec<u8> {
        format!("{}head", self.prefix).into_bytes()
    }

    /// The entry of the transaction whose last change has `revision`.
    pub fn feed(&self, revision: u64) -> Vec<u8> {
        self.key("feed", &format!("{revision:020}"))
    }

    /// The end (exclusive) of the feed's range.
    pub fn feed_end(&self) -> Vec<u8> {
        prefix_end(&self.key("feed", ""))
    }
}

fn presence_digit(p: Presence) -> u8 {
    match p {
        Presence::Ordinary => b'0',
        Presence::Evacuating => b'1',
        Presence::Suspect => b'2',
    }
}

/// The first key after every key starting with `prefix` (etcd's range end for a prefix).
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: to the end of the key space.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actual_keys_sort_by_guid_index_presence() {
        let k = Keys::new("/d");
        let mut keys = vec![
            k.actual("p-2", 0, Presence::Ordinary),
            k.actual("p", 10, Presence::Ordinary),
            k.actual("p", 2, Presence::Suspect),
            k.actual("p", 2, Presence::Evacuating),
            k.actual("p", -1, Presence::Ordinary),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                k.actual("p", -1, Presence::Ordinary),
                k.actual("p", 2, Presence::Evacuating),
                k.actual("p", 2, Presence::Suspect),
                k.actual("p", 10, Presence::Ordinary),
                k.actual("p-2", 0, Presence::Ordinary),
            ]
        );
        assert!(k
            .actual("p", 2, Presence::Suspect)
            .starts_with(&k.actual_index("p", 2)));
        assert!(!k
            .actual("p-2", 0, Presence::Ordinary)
            .starts_with(&k.actual_process("p")));
    }

    #[test]
    fn feed_keys_sort_by_revision_and_end_the_range() {
        let k = Keys::new("/d/");
        assert!(k.feed(9) < k.feed(10));
        assert!(k.feed(u64::MAX) < k.feed_end());
        assert!(
            k.head() < k.feed(0) || k.head() > k.feed_end(),
            "head is outside the feed range"
        );
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b");
    }
}
