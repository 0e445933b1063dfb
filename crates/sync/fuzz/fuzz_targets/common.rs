//! Shared by the per-codec fuzz targets: wraps fuzz bytes in a valid header so libFuzzer
//! spends its time inside the codec body decoder instead of on the magic bytes.

use sync::codec::{CodecId, FORMAT_VERSION, MAGIC};

/// First two bytes: the expected value count; the rest: the codec body.
pub fn framed(data: &[u8], codec: CodecId) -> Option<(Vec<u8>, usize)> {
    if data.len() < 2 {
        return None;
    }
    let values = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let body = &data[2..];
    let mut bytes = Vec::with_capacity(24 + body.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.push(FORMAT_VERSION);
    bytes.push(codec as u8);
    bytes.extend_from_slice(&[0, 0]);
    bytes.extend_from_slice(&(values as u64).to_le_bytes());
    bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
    bytes.extend_from_slice(body);
    Some((bytes, values))
}

/// Decodes with the codec's own decoder; anything it accepts must be finite and sized.
pub fn check(codec: &dyn sync::codec::Codec, data: &[u8]) {
    if let Some((bytes, values)) = framed(data, codec.id()) {
        if let Ok(decoded) = codec.decode(&bytes, values) {
            assert_eq!(decoded.len(), values);
            assert!(decoded.iter().all(|v| v.is_finite()));
        }
    }
}
