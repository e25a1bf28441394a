//! diego-store
