//! The Llama-style model, optimizer and checkpoints; the only crate that names tch.
