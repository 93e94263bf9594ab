//! What every long-running snapmend process needs, written once for the operator and the
//! node-helper agent (feature `runtime`): graceful shutdown on SIGTERM/SIGINT, the
//! `/metrics` `/healthz` `/readyz` server, the retry policy for API calls, and the duration
//! parser of command lines and configs. The CRD types themselves need none of it, so it is
//! behind a feature that only the two binaries' crates enable.

pub mod duration;
pub mod go_duration;
pub mod http;
pub mod retry;
pub mod shutdown;
