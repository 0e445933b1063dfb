//! The peer-to-peer network: the only crate that names libp2p.
