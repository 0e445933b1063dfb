//! Tokenizers, token shards and batch sampling.
