//! The container API over HTTP: a server generic over any backend and a client that is itself a backend.
