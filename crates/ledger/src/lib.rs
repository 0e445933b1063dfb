//! The ownership ledger state machine and its replication.
