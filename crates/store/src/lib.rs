//! Content-addressed storage: BLAKE3 CIDs, bao-verified ranges, erasure coding, audits.
