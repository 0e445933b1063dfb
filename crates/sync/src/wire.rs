//! Little-endian byte reader, byte writer helpers and bit packing shared by the binary formats.

/// Ran out of bytes while reading; callers turn it into their own typed error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Truncated;

/// Reads little-endian values from a byte slice, never past its end.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, position: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], Truncated> {
        if len > self.remaining() {
            return Err(Truncated);
        }
        let slice = &self.bytes[self.position..self.position + len];
        self.position += len;
        Ok(slice)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Truncated> {
        let slice = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Truncated> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Truncated> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Truncated> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, Truncated> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn f32(&mut self) -> Result<f32, Truncated> {
        Ok(f32::from_le_bytes(self.array()?))
    }
}

pub(crate) fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_f32(out: &mut Vec<u8>, value: f32) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Appends f32 values as little-endian bytes.
pub(crate) fn put_f32s(out: &mut Vec<u8>, values: &[f32]) {
    out.reserve(values.len() * 4);
    for value in values {
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// Bits needed to write any index in `0..count` (at least 1).
pub(crate) fn index_bits(count: u32) -> u32 {
    let max_index = count.saturating_sub(1);
    (u32::BITS - max_index.leading_zeros()).max(1)
}

/// Bytes taken by `count` fields of `bits` bits each, packed and padded to a whole byte.
pub(crate) fn packed_bytes(count: u64, bits: u32) -> Option<u64> {
    count
        .checked_mul(u64::from(bits))?
        .checked_add(7)
        .map(|b| b / 8)
}

/// Packs fields of up to 32 bits, least significant bit first.
pub(crate) struct BitWriter {
    bytes: Vec<u8>,
    accumulator: u64,
    filled: u32,
}

impl BitWriter {
    pub(crate) fn with_capacity(bytes: usize) -> BitWriter {
        BitWriter {
            bytes: Vec::with_capacity(bytes),
            accumulator: 0,
            filled: 0,
        }
    }

    pub(crate) fn push(&mut self, value: u32, bits: u32) {
        debug_assert!((1..=32).contains(&bits));
        debug_assert!(bits == 32 || value >> bits == 0);
        self.accumulator |= u64::from(value) << self.filled;
        self.filled += bits;
        while self.filled >= 8 {
            self.bytes.push(self.accumulator as u8);
            self.accumulator >>= 8;
            self.filled -= 8;
        }
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        if self.filled > 0 {
            self.bytes.push(self.accumulator as u8);
        }
        self.bytes
    }
}

/// Reads fields written by [`BitWriter`]; reading past the end is an error, never a panic.
pub(crate) struct BitReader<'a> {
    bytes: &'a [u8],
    position: usize,
    accumulator: u64,
    filled: u32,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> BitReader<'a> {
        BitReader {
            bytes,
            position: 0,
            accumulator: 0,
            filled: 0,
        }
    }

    pub(crate) fn read(&mut self, bits: u32) -> Result<u32, Truncated> {
        debug_assert!((1..=32).contains(&bits));
        while self.filled < bits {
            let byte = *self.bytes.get(self.position).ok_or(Truncated)?;
            self.accumulator |= u64::from(byte) << self.filled;
            self.position += 1;
            self.filled += 8;
        }
        let mask = if bits == 32 {
            u64::from(u32::MAX)
        } else {
            (1u64 << bits) - 1
        };
        let value = (self.accumulator & mask) as u32;
        self.accumulator >>= bits;
        self.filled -= bits;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip() {
        let fields: Vec<(u32, u32)> = vec![
            (5, 3),
            (4095, 12),
            (0, 1),
            (1, 1),
            (3, 2),
            (u32::MAX, 32),
            (77, 7),
        ];
        let mut writer = BitWriter::with_capacity(16);
        for &(value, bits) in &fields {
            writer.push(value, bits);
        }
        let bytes = writer.finish();
        let total: u32 = fields.iter().map(|f| f.1).sum();
        assert_eq!(bytes.len() as u64, packed_bytes(1, total).unwrap());
        let mut reader = BitReader::new(&bytes);
        for &(value, bits) in &fields {
            assert_eq!(reader.read(bits), Ok(value));
        }
        assert_eq!(reader.read(8), Err(Truncated));
    }

    #[test]
    fn index_bits_matches_log2() {
        assert_eq!(index_bits(1), 1);
        assert_eq!(index_bits(2), 1);
        assert_eq!(index_bits(3), 2);
        assert_eq!(index_bits(4096), 12);
        assert_eq!(index_bits(4097), 13);
    }
}
