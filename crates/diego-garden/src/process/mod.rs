//! The process backend: processes on the host, no isolation.
