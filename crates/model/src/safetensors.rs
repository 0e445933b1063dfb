//! A small, strict reader and writer of f32 safetensors files (the HF weight format).
//!
//! Format: 8-byte little-endian header length, a JSON header mapping each tensor name to
//! `{dtype, shape, data_offsets: [begin, end]}` (plus an optional `__metadata__` string map),
//! then the raw little-endian data. We write `{"format": "pt"}` metadata because transformers
//! refuses files without it. The reader checks every length and offset before it allocates.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde_json::Value;
use types::limits::model as limits;

use crate::ModelError;

/// A named f32 tensor, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

fn bad(path: &Path, what: impl Into<String>) -> ModelError {
    ModelError::BadFile {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// Writes `tensors` (in the given order) to `path`, atomically (temp file + rename).
pub fn write(path: &Path, tensors: &[(&str, &[usize], &[f32])]) -> Result<(), ModelError> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut offset = 0usize;
    for (name, shape, data) in tensors {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "{name}: shape and data disagree"
        );
        let end = offset + data.len() * 4;
        header.insert(
            (*name).to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut header_bytes =
        serde_json::to_vec(&Value::Object(header)).expect("json of plain values");
    // Pad the header with spaces so the data starts 8-byte aligned, as the reference writer does.
    while (8 + header_bytes.len()) % 8 != 0 {
        header_bytes.push(b' ');
    }
    let tmp = path.with_extension("safetensors.tmp");
    let io = |e: std::io::Error| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    out.write_all(&(header_bytes.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(&header_bytes).map_err(io)?;
    for (_, _, data) in tensors {
        for chunk in data.chunks(64 * 1024) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            out.write_all(&bytes).map_err(io)?;
        }
    }
    out.flush().map_err(io)?;
    out.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Reads every tensor of an f32 safetensors file, sorted by name.
pub fn read(path: &Path) -> Result<Vec<NamedTensor>, ModelError> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    parse(path, &bytes)
}

/// Parses safetensors bytes; `path` only names the file in errors.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<NamedTensor>, ModelError> {
    if bytes.len() < 8 {
        return Err(bad(path, "shorter than the 8-byte header length"));
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if header_len > limits::SAFETENSORS_HEADER_BYTES_MAX as u64
        || header_len > (bytes.len() - 8) as u64
    {
        return Err(bad(
            path,
            format!("header length {header_len} is too large for the file"),
        ));
    }
    let header_end = 8 + header_len as usize;
    let header: BTreeMap<String, Value> = serde_json::from_slice(&bytes[8..header_end])
        .map_err(|e| bad(path, format!("header is not a JSON object: {e}")))?;
    if header.len() > limits::SAFETENSORS_TENSORS_MAX + 1 {
        return Err(bad(
            path,
            format!("{} tensors, over the limit", header.len()),
        ));
    }
    let data = &bytes[header_end..];
    let mut out = Vec::with_capacity(header.len());
    for (name, entry) in header {
        if name == "__metadata__" {
            continue;
        }
        out.push(parse_entry(path, &name, &entry, data)?);
    }
    Ok(out)
}

fn parse_entry(
    path: &Path,
    name: &str,
    entry: &Value,
    data: &[u8],
) -> Result<NamedTensor, ModelError> {
    let dtype = entry.get("dtype").and_then(Value::as_str);
    if dtype != Some("F32") {
        return Err(bad(
            path,
            format!("{name}: dtype {dtype:?}, only F32 is supported"),
        ));
    }
    let shape: Vec<usize> = entry
        .get("shape")
        .and_then(Value::as_array)
        .and_then(|dims| {
            dims.iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect()
        })
        .ok_or_else(|| {
            bad(
                path,
                format!("{name}: shape missing or not a list of integers"),
            )
        })?;
    let numel = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= limits::PARAMS_MAX)
        .ok_or_else(|| bad(path, format!("{name}: shape {shape:?} too large")))?;
    let offsets: Vec<u64> = entry
        .get("data_offsets")
        .and_then(Value::as_array)
        .and_then(|o| o.iter().map(Value::as_u64).collect())
        .ok_or_else(|| bad(path, format!("{name}: data_offsets missing")))?;
    let [begin, end] = offsets[..] else {
        return Err(bad(
            path,
            format!("{name}: data_offsets must have 2 entries"),
        ));
    };
    if begin > end || end > data.len() as u64 || end - begin != numel as u64 * 4 {
        return Err(bad(
            path,
            format!("{name}: data_offsets [{begin}, {end}] do not fit shape {shape:?}"),
        ));
    }
    let raw = &data[begin as usize..end as usize];
    let values = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    Ok(NamedTensor {
        name: name.to_string(),
        shape,
        data: values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let a = [1.0f32, -2.0, 3.5, 0.0, 5.0, 6.0];
        write(&path, &[("b", &[2, 3], &a), ("a", &[1], &[9.0])]).unwrap();
        let got = read(&path).unwrap();
        assert_eq!(
            got[0],
            NamedTensor {
                name: "a".into(),
                shape: vec![1],
                data: vec![9.0]
            }
        );
        assert_eq!(got[1].data, a);
        let bytes = std::fs::read(&path).unwrap();
        for cut in [0, 4, 8, 20, bytes.len() - 1] {
            assert!(
                parse(&path, &bytes[..cut]).is_err(),
                "cut at {cut} accepted"
            );
        }
    }
}
