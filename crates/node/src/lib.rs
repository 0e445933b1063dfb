//! Node roles and the shell that owns tokio.
