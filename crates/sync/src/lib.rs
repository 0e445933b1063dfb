//! Outer optimizer, update codecs and aggregation, over flat f32 vectors. Sans-IO.
