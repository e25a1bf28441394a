//! Modification tags: the compare-and-swap token carried by every stored record.

use serde::{Deserialize, Serialize};

/// `epoch` is a guid chosen when the record is created; `index` grows by one on every write.
/// A writer presents the tag it read; the store refuses the write if the record moved on.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModificationTag {
    #[serde(default)]
    pub epoch: String,
    #[serde(default)]
    pub index: u32,
}

impl ModificationTag {
    pub fn new(epoch: impl Into<String>) -> Self {
        Self {
            epoch: epoch.into(),
            index: 0,
        }
    }

    /// The tag a record carries after one more write.
    pub fn next(&self) -> Self {
        Self {
            epoch: self.epoch.clone(),
            index: self.index.wrapping_add(1),
        }
    }
}
