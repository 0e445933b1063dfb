//! Corpus ingest: finds `.txt`, `.jsonl` and `.parquet` inputs and reads their documents.
//!
//! - A folder is walked recursively; files are taken in sorted path order, and files with other
//!   extensions are skipped. A file named directly must have one of the three extensions.
//! - `.txt`: the whole file is one document (UTF-8; a leading byte-order mark is dropped).
//! - `.jsonl`: one JSON object per line; its `text` field (a string) is one document. Blank
//!   lines are skipped; a line without a string `text` is an error naming the line.
//! - `.parquet`: the top-level `text` column (BYTE_ARRAY / STRING, as Hugging Face datasets
//!   write it); each non-null row is one document.
//!
//! Empty documents are dropped. Every size is checked against `types::limits::data` first.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use types::limits::data as limits;
use types::Hash32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum InputKind {
    Txt,
    Jsonl,
    Parquet,
}

impl InputKind {
    pub fn of(path: &Path) -> Option<InputKind> {
        match path.extension()?.to_str()? {
            "txt" => Some(InputKind::Txt),
            "jsonl" => Some(InputKind::Jsonl),
            "parquet" => Some(InputKind::Parquet),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            InputKind::Txt => "txt",
            InputKind::Jsonl => "jsonl",
            InputKind::Parquet => "parquet",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    pub path: PathBuf,
    pub kind: InputKind,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: unsupported input; expected a folder or a .txt, .jsonl or .parquet file")]
    UnsupportedExtension { path: PathBuf },
    #[error("no .txt, .jsonl or .parquet files found in the inputs")]
    NoInputFiles,
    #[error("more than {max} input files")]
    TooManyFiles { max: usize },
    #[error("{path}: folders nested deeper than {max}")]
    TooDeep { path: PathBuf, max: usize },
    #[error("{path}: not UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 { path: PathBuf, offset: usize },
    #[error("{path}: line {line}: {message}")]
    Jsonl {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("{path}: a document of {bytes} bytes exceeds the limit {max}")]
    DocumentTooLarge { path: PathBuf, bytes: u64, max: u64 },
    #[error("inputs hold more than {max} bytes of text")]
    InputTooLarge { max: u64 },
    #[error("{path}: parquet file of {bytes} bytes exceeds the limit {max}")]
    ParquetTooLarge { path: PathBuf, bytes: u64, max: u64 },
    #[error("{path}: parquet: {message}")]
    Parquet { path: PathBuf, message: String },
}

/// Expands folders into the sorted list of input files. `inputs` keep their given order.
pub fn collect_input_files(inputs: &[PathBuf]) -> Result<Vec<InputFile>, IngestError> {
    let mut files = Vec::new();
    for input in inputs {
        let metadata = std::fs::metadata(input).map_err(|source| IngestError::Io {
            path: input.clone(),
            source,
        })?;
        if metadata.is_dir() {
            let mut found = Vec::new();
            walk_folder(input, 0, &mut found)?;
            found.sort();
            files.extend(
                found
                    .into_iter()
                    .map(|(path, kind)| InputFile { path, kind }),
            );
        } else {
            let kind = InputKind::of(input).ok_or_else(|| IngestError::UnsupportedExtension {
                path: input.clone(),
            })?;
            files.push(InputFile {
                path: input.clone(),
                kind,
            });
        }
        if files.len() > limits::INPUT_FILES_MAX {
            return Err(IngestError::TooManyFiles {
                max: limits::INPUT_FILES_MAX,
            });
        }
    }
    if files.is_empty() {
        return Err(IngestError::NoInputFiles);
    }
    Ok(files)
}

fn walk_folder(
    folder: &Path,
    depth: usize,
    found: &mut Vec<(PathBuf, InputKind)>,
) -> Result<(), IngestError> {
    if depth > limits::INPUT_FOLDER_DEPTH_MAX {
        return Err(IngestError::TooDeep {
            path: folder.to_path_buf(),
            max: limits::INPUT_FOLDER_DEPTH_MAX,
        });
    }
    let io_error = |source| IngestError::Io {
        path: folder.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(folder).map_err(io_error)? {
        let path = entry.map_err(io_error)?.path();
        let metadata = std::fs::metadata(&path).map_err(|source| IngestError::Io {
            path: path.clone(),
            source,
        })?;
        if metadata.is_dir() {
            walk_folder(&path, depth + 1, found)?;
        } else if let Some(kind) = InputKind::of(&path) {
            found.push((path, kind));
            if found.len() > limits::INPUT_FILES_MAX {
                return Err(IngestError::TooManyFiles {
                    max: limits::INPUT_FILES_MAX,
                });
            }
        }
    }
    Ok(())
}

/// BLAKE3 of a file's bytes, streamed (used for the dataset fingerprint).
pub fn hash_file(path: &Path) -> Result<(Hash32, u64), IngestError> {
    let io_error = |source| IngestError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut hasher = blake3::Hasher::new();
    let file = File::open(path).map_err(io_error)?;
    hasher.update_reader(file).map_err(io_error)?;
    Ok((Hash32(*hasher.finalize().as_bytes()), hasher.count()))
}

/// Reads one input file's documents, charging their bytes to `budget` (remaining input bytes).
pub fn read_documents(file: &InputFile, budget: &mut u64) -> Result<Vec<String>, IngestError> {
    let documents = match file.kind {
        InputKind::Txt => vec![read_txt(&file.path, budget)?],
        InputKind::Jsonl => read_jsonl(&file.path, budget)?,
        InputKind::Parquet => read_parquet(&file.path, budget)?,
    };
    Ok(documents.into_iter().filter(|d| !d.is_empty()).collect())
}

/// Subtracts one document's bytes from the remaining input budget, before it is kept.
fn charge(budget: &mut u64, bytes: u64) -> Result<(), IngestError> {
    *budget = budget
        .checked_sub(bytes)
        .ok_or(IngestError::InputTooLarge {
            max: limits::INPUT_BYTES_MAX,
        })?;
    Ok(())
}

fn read_txt(path: &Path, budget: &mut u64) -> Result<String, IngestError> {
    let io_error = |source| IngestError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::metadata(path).map_err(io_error)?.len();
    check_document_size(path, bytes)?;
    charge(budget, bytes)?;
    let contents = std::fs::read(path).map_err(io_error)?;
    let text = utf8(path, contents)?;
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    };
    Ok(text)
}

fn read_jsonl(path: &Path, budget: &mut u64) -> Result<Vec<String>, IngestError> {
    #[derive(serde::Deserialize)]
    struct Line {
        text: Option<serde_json::Value>,
    }
    let io_error = |source| IngestError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(io_error)?);
    let mut documents = Vec::new();
    let mut line = Vec::new();
    for line_number in 1u64.. {
        line.clear();
        // `take` bounds one line's allocation; a longer line is an oversized document.
        let read = (&mut reader)
            .take(limits::DOCUMENT_BYTES_MAX + 2)
            .read_until(b'\n', &mut line)
            .map_err(io_error)?;
        if read == 0 {
            break;
        }
        if line.len() as u64 > limits::DOCUMENT_BYTES_MAX + 1 {
            return Err(IngestError::DocumentTooLarge {
                path: path.to_path_buf(),
                bytes: line.len() as u64,
                max: limits::DOCUMENT_BYTES_MAX,
            });
        }
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let jsonl_error = |message: String| IngestError::Jsonl {
            path: path.to_path_buf(),
            line: line_number,
            message,
        };
        let parsed: Line = serde_json::from_slice(&line).map_err(|e| jsonl_error(e.to_string()))?;
        match parsed.text {
            Some(serde_json::Value::String(text)) => {
                charge(budget, text.len() as u64)?;
                documents.push(text);
            }
            Some(_) => return Err(jsonl_error("field \"text\" is not a string".to_string())),
            None => return Err(jsonl_error("no field \"text\"".to_string())),
        }
    }
    Ok(documents)
}

fn read_parquet(path: &Path, budget: &mut u64) -> Result<Vec<String>, IngestError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;
    use parquet::schema::types::Type;

    let io_error = |source| IngestError::Io {
        path: path.to_path_buf(),
        source,
    };
    let parquet_error = |message: String| IngestError::Parquet {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::metadata(path).map_err(io_error)?.len();
    if bytes > limits::PARQUET_FILE_BYTES_MAX {
        return Err(IngestError::ParquetTooLarge {
            path: path.to_path_buf(),
            bytes,
            max: limits::PARQUET_FILE_BYTES_MAX,
        });
    }
    let file = File::open(path).map_err(io_error)?;
    let reader = SerializedFileReader::new(file).map_err(|e| parquet_error(e.to_string()))?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let text_field = schema
        .root_schema()
        .get_fields()
        .iter()
        .find(|field| field.name() == "text")
        .cloned()
        .ok_or_else(|| parquet_error("no top-level column \"text\"".to_string()))?;
    let is_byte_array = text_field.is_primitive()
        && text_field.get_physical_type() == parquet::basic::Type::BYTE_ARRAY;
    if !is_byte_array {
        return Err(parquet_error(
            "column \"text\" is not a string (BYTE_ARRAY) column".to_string(),
        ));
    }
    let projection = Type::group_type_builder("schema")
        .with_fields(vec![text_field])
        .build()
        .map_err(|e| parquet_error(e.to_string()))?;
    let rows = reader
        .get_row_iter(Some(projection))
        .map_err(|e| parquet_error(e.to_string()))?;
    let mut documents = Vec::new();
    for (index, row) in rows.enumerate() {
        let row = row.map_err(|e| parquet_error(format!("row {index}: {e}")))?;
        match row.get_string(0) {
            Ok(text) => {
                check_document_size(path, text.len() as u64)?;
                charge(budget, text.len() as u64)?;
                documents.push(text.clone());
            }
            // A null cell is skipped; anything else that is not a string is an error.
            Err(_)
                if row
                    .get_column_iter()
                    .all(|(_, field)| matches!(field, parquet::record::Field::Null)) => {}
            Err(e) => return Err(parquet_error(format!("row {index}: {e}"))),
        }
    }
    Ok(documents)
}

fn check_document_size(path: &Path, bytes: u64) -> Result<(), IngestError> {
    if bytes > limits::DOCUMENT_BYTES_MAX {
        return Err(IngestError::DocumentTooLarge {
            path: path.to_path_buf(),
            bytes,
            max: limits::DOCUMENT_BYTES_MAX,
        });
    }
    Ok(())
}

fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, IngestError> {
    String::from_utf8(bytes).map_err(|e| IngestError::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })
}
