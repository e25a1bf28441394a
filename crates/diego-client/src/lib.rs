//! diego-client
