//! diego-testkit
