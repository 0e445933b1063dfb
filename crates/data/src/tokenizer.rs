//! Tokenizers: byte-level (`bytes`), GPT-2 BPE (`gpt2`) and a byte-level BPE trained on the corpus (`bpe:N`).
//!
//! All three are Hugging Face `tokenizers` pipelines with a byte-level pre-tokenizer and decoder, so each
//! saves as a standard `tokenizer.json` that `transformers` loads, and every UTF-8 string round-trips.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokenizers::models::bpe::{BpeTrainerBuilder, Vocab, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;
use types::limits::data as limits;

/// The end-of-text token of `gpt2` and `bpe:N`. `prepare` appends it after every document.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// GPT-2's vocabulary and merges, embedded from the `tiktoken-rs` crate source (see build.rs).
const GPT2_ENCODER_JSON: &[u8] = include_bytes!(env!("CW_GPT2_ENCODER_JSON"));
const GPT2_VOCAB_BPE: &[u8] = include_bytes!(env!("CW_GPT2_VOCAB_BPE"));

/// Which tokenizer to build. Text form: `bytes`, `gpt2` or `bpe:N` (N = vocabulary size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenizerSpec {
    /// One token per UTF-8 byte; token id = byte value; vocabulary 256.
    Bytes,
    /// OpenAI's GPT-2 BPE (vocabulary 50,257, `<|endoftext|>` = 50,256).
    Gpt2,
    /// Byte-level BPE trained on the train split, `vocab_size` tokens including `<|endoftext|>`.
    Bpe { vocab_size: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("tokenizer spec is empty; expected bytes, gpt2 or bpe:N")]
    Empty,
    #[error("unknown tokenizer {0:?}; expected bytes, gpt2 or bpe:N")]
    Unknown(String),
    #[error("bpe vocabulary size {0:?} is not a whole number (expected e.g. bpe:4096)")]
    BpeVocabNotNumber(String),
    #[error("bpe vocabulary size {vocab_size} is outside {min}..={max}")]
    BpeVocabRange { vocab_size: u64, min: u32, max: u32 },
}

impl TokenizerSpec {
    pub fn parse(text: &str) -> Result<TokenizerSpec, SpecError> {
        let text = text.trim();
        match text {
            "" => Err(SpecError::Empty),
            "bytes" => Ok(TokenizerSpec::Bytes),
            "gpt2" => Ok(TokenizerSpec::Gpt2),
            _ => {
                let Some(number) = text.strip_prefix("bpe:") else {
                    return Err(SpecError::Unknown(text.to_string()));
                };
                let vocab_size: u64 = number
                    .parse()
                    .map_err(|_| SpecError::BpeVocabNotNumber(number.to_string()))?;
                let range =
                    u64::from(limits::BPE_VOCAB_SIZE_MIN)..=u64::from(limits::BPE_VOCAB_SIZE_MAX);
                if !range.contains(&vocab_size) {
                    return Err(SpecError::BpeVocabRange {
                        vocab_size,
                        min: limits::BPE_VOCAB_SIZE_MIN,
                        max: limits::BPE_VOCAB_SIZE_MAX,
                    });
                }
                Ok(TokenizerSpec::Bpe {
                    vocab_size: vocab_size as u32,
                })
            }
        }
    }

    /// Whether building this tokenizer needs training text.
    pub fn needs_training(&self) -> bool {
        matches!(self, TokenizerSpec::Bpe { .. })
    }
}

impl FromStr for TokenizerSpec {
    type Err = SpecError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        TokenizerSpec::parse(text)
    }
}

impl fmt::Display for TokenizerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenizerSpec::Bytes => f.write_str("bytes"),
            TokenizerSpec::Gpt2 => f.write_str("gpt2"),
            TokenizerSpec::Bpe { vocab_size } => write!(f, "bpe:{vocab_size}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("tokenizers library: {0}")]
    Library(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: tokenizer.json is {bytes} bytes, more than the limit {max}")]
    FileTooLarge { path: PathBuf, bytes: u64, max: u64 },
    #[error("tokenizer vocabulary {vocab_size} exceeds the limit {max}")]
    VocabTooLarge { vocab_size: u64, max: u32 },
    #[error("tokenizer has an empty vocabulary")]
    VocabEmpty,
    #[error("embedded GPT-2 files are malformed: {0}")]
    Gpt2Assets(String),
    #[error("bpe:{vocab_size} needs training text, and none was given")]
    NoTrainingText { vocab_size: u32 },
}

fn library_error(error: tokenizers::Error) -> TokenizerError {
    TokenizerError::Library(error.to_string())
}

/// A ready tokenizer. Ids are always `< vocab_size()`.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    vocab_size: u32,
    end_of_text: Option<u32>,
    /// True when `inner` is exactly the `bytes` pipeline, whose ids are the UTF-8 bytes (tested
    /// against the pipeline): encode and decode then skip the pipeline.
    byte_identity: bool,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("end_of_text", &self.end_of_text)
            .finish()
    }
}

impl Tokenizer {
    /// Builds the tokenizer named by `spec`. Only `bpe:N` reads `training_texts`.
    pub fn from_spec(
        spec: TokenizerSpec,
        training_texts: &[&str],
    ) -> Result<Tokenizer, TokenizerError> {
        match spec {
            TokenizerSpec::Bytes => Tokenizer::bytes(),
            TokenizerSpec::Gpt2 => Tokenizer::gpt2(),
            TokenizerSpec::Bpe { vocab_size } => Tokenizer::train_bpe(vocab_size, training_texts),
        }
    }

    /// Byte-level: id = byte value (see `bytes_pipeline`).
    pub fn bytes() -> Result<Tokenizer, TokenizerError> {
        let mut tokenizer = Tokenizer::from_inner(bytes_pipeline()?)?;
        tokenizer.byte_identity = true;
        Ok(tokenizer)
    }

    /// GPT-2 BPE from the `encoder.json` and `vocab.bpe` shipped in the `tiktoken-rs` crate.
    pub fn gpt2() -> Result<Tokenizer, TokenizerError> {
        let vocab: Vocab =
            serde_json::from_slice::<std::collections::BTreeMap<String, u32>>(GPT2_ENCODER_JSON)
                .map_err(|e| TokenizerError::Gpt2Assets(format!("encoder.json: {e}")))?
                .into_iter()
                .collect();
        let merges_text = std::str::from_utf8(GPT2_VOCAB_BPE)
            .map_err(|e| TokenizerError::Gpt2Assets(format!("vocab.bpe: {e}")))?;
        let mut merges = Vec::new();
        for line in merges_text.lines() {
            if line.starts_with("#version") || line.is_empty() {
                continue;
            }
            let Some((a, b)) = line.split_once(' ') else {
                return Err(TokenizerError::Gpt2Assets(format!(
                    "vocab.bpe line {line:?}"
                )));
            };
            merges.push((a.to_string(), b.to_string()));
        }
        let model = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(library_error)?;
        let mut inner = tokenizers::Tokenizer::new(model);
        let byte_level = ByteLevel::new(false, true, true);
        inner.with_pre_tokenizer(Some(byte_level));
        inner.with_decoder(Some(byte_level));
        inner.with_post_processor(Some(byte_level));
        inner.add_special_tokens(&[AddedToken::from(END_OF_TEXT, true)]);
        Tokenizer::from_inner(inner)
    }

    /// Trains a byte-level BPE with GPT-2's pre-tokenizer on `texts`. Deterministic: the trainer
    /// breaks count ties by pair id, and the alphabet is the fixed 256 byte symbols.
    pub fn train_bpe(vocab_size: u32, texts: &[&str]) -> Result<Tokenizer, TokenizerError> {
        TokenizerSpec::parse(&format!("bpe:{vocab_size}"))?;
        if texts.iter().all(|t| t.is_empty()) {
            return Err(TokenizerError::NoTrainingText { vocab_size });
        }
        let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size as usize)
            .min_frequency(2)
            .show_progress(false)
            .initial_alphabet(alphabet)
            .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
            .build()
            .into();
        let mut inner = tokenizers::Tokenizer::new(BPE::default());
        let byte_level = ByteLevel::new(false, true, true);
        inner.with_pre_tokenizer(Some(byte_level));
        inner.with_decoder(Some(byte_level));
        inner.with_post_processor(Some(byte_level));
        inner
            .train(&mut trainer, texts.iter())
            .map_err(library_error)?;
        Tokenizer::from_inner(inner)
    }

    /// Parses a `tokenizer.json` document.
    pub fn from_json(json: &str) -> Result<Tokenizer, TokenizerError> {
        if json.len() as u64 > limits::TOKENIZER_JSON_BYTES_MAX {
            return Err(TokenizerError::FileTooLarge {
                path: PathBuf::from("<memory>"),
                bytes: json.len() as u64,
                max: limits::TOKENIZER_JSON_BYTES_MAX,
            });
        }
        let inner = tokenizers::Tokenizer::from_str(json).map_err(library_error)?;
        let mut tokenizer = Tokenizer::from_inner(inner)?;
        // Canonical serializations compared, so whitespace or key order in the file do not matter.
        if tokenizer.vocab_size == 256 {
            let canonical = bytes_pipeline()?.to_string(false).map_err(library_error)?;
            tokenizer.byte_identity = tokenizer.to_json()? == canonical;
        }
        Ok(tokenizer)
    }

    /// Reads a `tokenizer.json` file (size-checked before reading).
    pub fn load(path: &Path) -> Result<Tokenizer, TokenizerError> {
        let io_error = |source| TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bytes = std::fs::metadata(path).map_err(io_error)?.len();
        if bytes > limits::TOKENIZER_JSON_BYTES_MAX {
            return Err(TokenizerError::FileTooLarge {
                path: path.to_path_buf(),
                bytes,
                max: limits::TOKENIZER_JSON_BYTES_MAX,
            });
        }
        let json = std::fs::read_to_string(path).map_err(io_error)?;
        Tokenizer::from_json(&json)
    }

    fn from_inner(inner: tokenizers::Tokenizer) -> Result<Tokenizer, TokenizerError> {
        // The model's embedding table is sized by the largest id, which need not equal the count.
        let id_max = inner
            .get_vocab(true)
            .values()
            .copied()
            .max()
            .ok_or(TokenizerError::VocabEmpty)?;
        let vocab_size = u64::from(id_max) + 1;
        if vocab_size > u64::from(limits::VOCAB_SIZE_MAX) {
            return Err(TokenizerError::VocabTooLarge {
                vocab_size,
                max: limits::VOCAB_SIZE_MAX,
            });
        }
        let end_of_text = inner.token_to_id(END_OF_TEXT);
        Ok(Tokenizer {
            inner,
            vocab_size: vocab_size as u32,
            end_of_text,
            byte_identity: false,
        })
    }

    /// Token ids for `text`, with no special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        if self.byte_identity {
            return Ok(text.bytes().map(u32::from).collect());
        }
        let encoding = self.inner.encode_fast(text, false).map_err(library_error)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Encodes many texts on the `tokenizers` thread pool (rayon). Output order = input order.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, TokenizerError> {
        if self.byte_identity {
            return Ok(texts
                .iter()
                .map(|t| t.bytes().map(u32::from).collect())
                .collect());
        }
        let encodings = self
            .inner
            .encode_batch_fast(texts.to_vec(), false)
            .map_err(library_error)?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }

    /// Text for `ids`. Ids outside the vocabulary are skipped; invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        if self.byte_identity {
            let bytes: Vec<u8> = ids.iter().filter_map(|&id| u8::try_from(id).ok()).collect();
            return Ok(String::from_utf8_lossy(&bytes).into_owned());
        }
        self.inner.decode(ids, false).map_err(library_error)
    }

    /// The embedding table size a model needs: largest id + 1.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size as usize
    }

    /// The `<|endoftext|>` id, if this tokenizer has one (`bytes` has none).
    pub fn end_of_text_id(&self) -> Option<u32> {
        self.end_of_text
    }

    /// The Hugging Face `tokenizer.json` text.
    pub fn to_json(&self) -> Result<String, TokenizerError> {
        self.inner.to_string(false).map_err(library_error)
    }

    /// Writes `tokenizer.json` to `path`.
    pub fn save(&self, path: &Path) -> Result<(), TokenizerError> {
        let json = self.to_json()?;
        std::fs::write(path, json).map_err(|source| TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The underlying Hugging Face tokenizer (benchmarks compare against it).
    pub fn hf(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// The `bytes` pipeline: a BPE model with the 256 byte symbols and no merges, and no regex split,
/// so each UTF-8 byte becomes one token whose id is the byte value.
fn bytes_pipeline() -> Result<tokenizers::Tokenizer, TokenizerError> {
    let symbols = byte_symbols();
    let vocab: Vocab = symbols
        .iter()
        .enumerate()
        .map(|(byte, c)| (c.to_string(), byte as u32))
        .collect();
    let model = BPE::builder()
        .vocab_and_merges(vocab, Vec::new())
        .build()
        .map_err(library_error)?;
    let mut inner = tokenizers::Tokenizer::new(model);
    let byte_level = ByteLevel::new(false, true, false);
    inner.with_pre_tokenizer(Some(byte_level));
    inner.with_decoder(Some(byte_level));
    Ok(inner)
}

/// GPT-2's byte → printable-char table (`bytes_to_unicode`): printable Latin-1 bytes map to
/// themselves, the other 68 bytes to U+0100 onward, in byte order.
fn byte_symbols() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next_extra = 0u32;
    for byte in 0..=255u8 {
        let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[byte as usize] = if printable {
            char::from(byte)
        } else {
            next_extra += 1;
            char::from_u32(255 + next_extra).expect("U+0100..U+0144 are chars")
        };
    }
    table
}
