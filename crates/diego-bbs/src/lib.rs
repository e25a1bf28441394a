//! diego-bbs
