//! The names of the locks roles hold in the BBS store, one definition each.

/// Held by the active BBS: only its holder runs convergence, sends start requests and
/// delivers task callbacks. Its value is the holder's URL.
pub const BBS: &str = "bbs";

/// Held by the active auctioneer; its value is the auctioneer's URL (how the BBS finds it).
pub const AUCTIONEER: &str = "auctioneer";
