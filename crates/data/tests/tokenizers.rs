//! Tests of the three tokenizers: spec parsing, round trips, GPT-2 against tiktoken, BPE training.

use data::tokenizer::{SpecError, Tokenizer, TokenizerSpec};

const SAMPLE: &str =
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\
    Ünïcödé — ✓ 日本語 🎭\ttabs  and   spaces\r\n";

fn corpus() -> Vec<String> {
    // A small, varied training corpus: repeated words so BPE finds merges.
    (0..200)
        .map(|i| format!("To be, or not to be, that is the question {i}: whether 'tis nobler in the mind.\n{SAMPLE}"))
        .collect()
}

#[test]
fn spec_parses_and_rejects() {
    assert_eq!(TokenizerSpec::parse("bytes"), Ok(TokenizerSpec::Bytes));
    assert_eq!(TokenizerSpec::parse(" gpt2 "), Ok(TokenizerSpec::Gpt2));
    assert_eq!(
        TokenizerSpec::parse("bpe:4096"),
        Ok(TokenizerSpec::Bpe { vocab_size: 4096 })
    );
    assert_eq!(
        "bpe:300".parse::<TokenizerSpec>(),
        Ok(TokenizerSpec::Bpe { vocab_size: 300 })
    );
    assert_eq!(TokenizerSpec::parse(""), Err(SpecError::Empty));
    assert!(matches!(
        TokenizerSpec::parse("gpt3"),
        Err(SpecError::Unknown(_))
    ));
    assert!(matches!(
        TokenizerSpec::parse("bpe:"),
        Err(SpecError::BpeVocabNotNumber(_))
    ));
    assert!(matches!(
        TokenizerSpec::parse("bpe:-1"),
        Err(SpecError::BpeVocabNotNumber(_))
    ));
    assert!(matches!(
        TokenizerSpec::parse("bpe:12"),
        Err(SpecError::BpeVocabRange { .. })
    ));
    assert!(matches!(
        TokenizerSpec::parse("bpe:99999999999"),
        Err(SpecError::BpeVocabRange { .. })
    ));
    for text in ["bytes", "gpt2", "bpe:4096"] {
        assert_eq!(TokenizerSpec::parse(text).unwrap().to_string(), text);
    }
}

#[test]
fn bytes_ids_are_the_utf8_bytes() {
    let tokenizer = Tokenizer::bytes().unwrap();
    assert_eq!(tokenizer.vocab_size(), 256);
    assert_eq!(tokenizer.end_of_text_id(), None);
    let ids = tokenizer.encode(SAMPLE).unwrap();
    let expected: Vec<u32> = SAMPLE.bytes().map(u32::from).collect();
    assert_eq!(ids, expected);
    assert_eq!(tokenizer.decode(&ids).unwrap(), SAMPLE);
    // The fast path must agree with the Hugging Face pipeline it stands for, before and after a
    // save/load round trip.
    let pipeline = tokenizer
        .hf()
        .encode_fast(SAMPLE, false)
        .unwrap()
        .get_ids()
        .to_vec();
    assert_eq!(pipeline, expected);
    assert_eq!(tokenizer.hf().decode(&ids, false).unwrap(), SAMPLE);
    let loaded = Tokenizer::from_json(&tokenizer.to_json().unwrap()).unwrap();
    assert_eq!(loaded.encode(SAMPLE).unwrap(), expected);
    let invalid_utf8 = [0x66, 0xff, 0x6f];
    assert_eq!(
        tokenizer.decode(&invalid_utf8).unwrap(),
        tokenizer.hf().decode(&invalid_utf8, false).unwrap()
    );
    let all_bytes: Vec<u32> = (0..256).collect();
    // Every id decodes (lone high bytes become U+FFFD, as UTF-8 requires).
    assert!(!tokenizer.decode(&all_bytes).unwrap().is_empty());
}

#[test]
fn gpt2_known_ids_and_matches_tiktoken() {
    let tokenizer = Tokenizer::gpt2().unwrap();
    assert_eq!(tokenizer.vocab_size(), 50257);
    assert_eq!(tokenizer.end_of_text_id(), Some(50256));
    assert_eq!(tokenizer.encode("Hello world").unwrap(), vec![15496, 995]);
    let reference = tiktoken_rs::r50k_base().unwrap();
    for text in [
        SAMPLE,
        "  leading spaces, trailing   ",
        "It's 2024's 'quote' I'll we've",
        "\n\n\n",
    ] {
        let ours = tokenizer.encode(text).unwrap();
        let theirs: Vec<u32> = reference
            .encode_ordinary(text)
            .into_iter()
            .map(|t| t as u32)
            .collect();
        assert_eq!(ours, theirs, "text {text:?}");
        assert_eq!(tokenizer.decode(&ours).unwrap(), text);
    }
    // The special token in text is one token, as in Hugging Face's GPT-2.
    assert_eq!(
        tokenizer.encode("a<|endoftext|>b").unwrap(),
        vec![64, 50256, 65]
    );
}

#[test]
fn trained_bpe_is_deterministic_and_round_trips() {
    let corpus = corpus();
    let texts: Vec<&str> = corpus.iter().map(String::as_str).collect();
    let a = Tokenizer::train_bpe(400, &texts).unwrap();
    let b = Tokenizer::train_bpe(400, &texts).unwrap();
    assert_eq!(a.to_json().unwrap(), b.to_json().unwrap());
    // At most N; fewer only when the corpus runs out of pairs seen twice.
    assert!(
        (380..=400).contains(&a.vocab_size()),
        "vocab {}",
        a.vocab_size()
    );
    assert!(a.end_of_text_id().is_some());
    let ids = a.encode(SAMPLE).unwrap();
    assert!(ids.len() < SAMPLE.len(), "merges should shorten the text");
    assert!(ids.iter().all(|&id| (id as usize) < a.vocab_size()));
    assert_eq!(a.decode(&ids).unwrap(), SAMPLE);
    // Text never seen in training still round-trips (byte-level alphabet).
    let unseen = "Zebra quartz jumps ∑ 🦀";
    assert_eq!(a.decode(&a.encode(unseen).unwrap()).unwrap(), unseen);
    assert!(matches!(
        Tokenizer::train_bpe(400, &[]),
        Err(data::TokenizerError::NoTrainingText { .. })
    ));
}

#[test]
fn every_tokenizer_saves_and_loads() {
    let corpus = corpus();
    let texts: Vec<&str> = corpus.iter().map(String::as_str).collect();
    let dir = tempfile::tempdir().unwrap();
    for spec in ["bytes", "gpt2", "bpe:300"] {
        let spec = TokenizerSpec::parse(spec).unwrap();
        let tokenizer = Tokenizer::from_spec(spec, &texts).unwrap();
        let path = dir.path().join(format!("{spec}.json").replace(':', "_"));
        tokenizer.save(&path).unwrap();
        let loaded = Tokenizer::load(&path).unwrap();
        assert_eq!(loaded.vocab_size(), tokenizer.vocab_size(), "{spec}");
        assert_eq!(
            loaded.end_of_text_id(),
            tokenizer.end_of_text_id(),
            "{spec}"
        );
        assert_eq!(
            loaded.encode(SAMPLE).unwrap(),
            tokenizer.encode(SAMPLE).unwrap(),
            "{spec}"
        );
        assert_eq!(
            loaded.to_json().unwrap(),
            tokenizer.to_json().unwrap(),
            "{spec}"
        );
        // It is a standard Hugging Face tokenizer.json.
        let json: serde_json::Value = serde_json::from_str(&tokenizer.to_json().unwrap()).unwrap();
        assert_eq!(json["model"]["type"], "BPE", "{spec}");
    }
}

#[test]
fn bad_tokenizer_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    assert!(matches!(
        Tokenizer::load(&path),
        Err(data::TokenizerError::Io { .. })
    ));
    std::fs::write(&path, "{ not json").unwrap();
    assert!(matches!(
        Tokenizer::load(&path),
        Err(data::TokenizerError::Library(_))
    ));
    assert!(Tokenizer::from_json("[]").is_err());
}
