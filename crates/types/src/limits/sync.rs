//! Bounds for the `sync` crate: update sizes, codec parameters, peers per aggregate.

/// Most values in one update or outer-state vector (covers the 1B preset with headroom).
pub const UPDATE_VALUES_MAX: usize = 1 << 31;

/// Most bytes in one encoded update: a dense fp32 update at `UPDATE_VALUES_MAX` plus headers.
pub const UPDATE_BYTES_MAX: u64 = (UPDATE_VALUES_MAX as u64) * 4 + 4096;

/// Largest block of the blockwise int8 codec (values per block, each block carries one scale).
pub const INT8_BLOCK_VALUES_MAX: u32 = 1 << 16;

/// Largest chunk of the top-k codec (values per chunk); indices are packed at ceil(log2(chunk)) bits.
pub const TOPK_CHUNK_VALUES_MAX: u32 = 1 << 16;

/// Most chunks sharing one quantization table in the top-k codec.
pub const TOPK_GROUP_CHUNKS_MAX: u32 = 1 << 16;

/// Most bits per quantized value in the top-k codec (the table has 2^bits entries).
pub const TOPK_VALUE_BITS_MAX: u8 = 8;

/// Largest side of the square DCT chunk (the chunk holds side² values).
pub const DCT_SIDE_VALUES_MAX: u32 = 256;

/// Most updates combined in one aggregation.
pub const AGGREGATE_PEERS_MAX: usize = 4096;
