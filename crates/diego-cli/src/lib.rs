//! diego-cli
