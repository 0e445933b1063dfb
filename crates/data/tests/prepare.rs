//! Tests of ingest and `prepare`: txt folders, jsonl, parquet, the split, idempotence, bad inputs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use data::prepare::{val_split_point, DATASET_JSON};
use data::{prepare, DataError, IngestError, TokenizerSpec};

fn play(name: &str, lines: usize) -> String {
    (0..lines)
        .map(|i| format!("{name} line {i}: the quality of mercy is not strained.\n"))
        .collect()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A Hugging Face-style parquet file: one optional UTF-8 `text` column (plus an id column),
/// snappy-compressed, in two row groups.
fn write_parquet(path: &Path, groups: &[Vec<Option<&str>>]) {
    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    let schema =
        parse_message_type("message schema { optional int64 id; optional binary text (STRING); }")
            .unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(file, Arc::new(schema), Arc::new(props)).unwrap();
    let mut next_id = 0i64;
    for rows in groups {
        let mut group = writer.next_row_group().unwrap();
        let ids: Vec<i64> = (0..rows.len() as i64).map(|i| next_id + i).collect();
        next_id += rows.len() as i64;
        let mut column = group.next_column().unwrap().unwrap();
        column
            .typed::<Int64Type>()
            .write_batch(&ids, Some(&vec![1; ids.len()]), None)
            .unwrap();
        column.close().unwrap();
        let values: Vec<ByteArray> = rows.iter().flatten().map(|t| ByteArray::from(*t)).collect();
        let levels: Vec<i16> = rows.iter().map(|r| i16::from(r.is_some())).collect();
        let mut column = group.next_column().unwrap().unwrap();
        column
            .typed::<ByteArrayType>()
            .write_batch(&values, Some(&levels), None)
            .unwrap();
        column.close().unwrap();
        group.close().unwrap();
    }
    writer.close().unwrap();
}

fn sorted_folder(root: &Path) -> PathBuf {
    let folder = root.join("corpus");
    write(&folder.join("b.txt"), &play("Bee", 40));
    write(&folder.join("a.txt"), &play("Ay", 40));
    write(&folder.join("nested/deeper/c.txt"), &play("Sea", 40));
    write(&folder.join("notes.md"), "skipped: not an input extension");
    folder
}

#[test]
fn txt_folder_bytes_split_and_stats() {
    let root = tempfile::tempdir().unwrap();
    let folder = sorted_folder(root.path());
    let out = root.path().join("out");
    let prepared = prepare(&[folder.clone()], TokenizerSpec::Bytes, &out, 0.1, 7).unwrap();
    assert!(!prepared.reused);
    let m = &prepared.manifest;
    assert_eq!(m.documents, 3);
    assert_eq!(m.vocab_size, 256);
    // Sorted walk: a.txt, b.txt, nested/deeper/c.txt.
    let names: Vec<_> = m
        .inputs
        .iter()
        .map(|i| Path::new(&i.path).file_name().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["a.txt", "b.txt", "c.txt"]);
    let texts = [play("Ay", 40), play("Bee", 40), play("Sea", 40)];
    let total: u64 = texts.iter().map(|t| t.len() as u64).sum();
    assert_eq!(m.train.bytes + m.val.bytes, total);
    // bytes: one token per byte, no separators.
    assert_eq!(m.train.tokens, m.train.bytes);
    assert_eq!(m.val.tokens, m.val.bytes);
    let train = prepared.train_tokens().unwrap();
    let val = prepared.val_tokens().unwrap();
    let mut expected_train = Vec::new();
    let mut expected_val = Vec::new();
    for text in &texts {
        let cut = val_split_point(text, 0.1);
        assert!(text[..cut].ends_with('\n'), "cut on a line boundary");
        expected_train.extend(text[..cut].bytes().map(u32::from));
        expected_val.extend(text[cut..].bytes().map(u32::from));
    }
    assert_eq!(train, expected_train);
    assert_eq!(val, expected_val);
    let fraction = m.val.bytes as f64 / total as f64;
    assert!((0.05..0.15).contains(&fraction), "val fraction {fraction}");
    // bits per byte: for bytes, tokens == bytes, so bpb = nats / ln 2.
    assert!((prepared.val_bits_per_byte(std::f64::consts::LN_2) - 1.0).abs() < 1e-12);
}

#[test]
fn prepare_is_idempotent_and_rebuilds_on_change() {
    let root = tempfile::tempdir().unwrap();
    let folder = sorted_folder(root.path());
    let out = root.path().join("out");
    let first = prepare(&[folder.clone()], TokenizerSpec::Gpt2, &out, 0.1, 1).unwrap();
    let manifest_before = std::fs::read(out.join(DATASET_JSON)).unwrap();
    let modified_before = std::fs::metadata(out.join("train-00000.shard"))
        .unwrap()
        .modified()
        .unwrap();
    let second = prepare(&[folder.clone()], TokenizerSpec::Gpt2, &out, 0.1, 1).unwrap();
    assert!(second.reused);
    assert_eq!(second.manifest, first.manifest);
    assert_eq!(
        std::fs::read(out.join(DATASET_JSON)).unwrap(),
        manifest_before
    );
    assert_eq!(
        std::fs::metadata(out.join("train-00000.shard"))
            .unwrap()
            .modified()
            .unwrap(),
        modified_before
    );

    // A corrupted shard is noticed and rebuilt.
    std::fs::write(out.join("val.shard"), b"garbage").unwrap();
    let third = prepare(&[folder.clone()], TokenizerSpec::Gpt2, &out, 0.1, 1).unwrap();
    assert!(!third.reused);
    assert_eq!(third.manifest, first.manifest);

    // Changed input, changed settings: rebuilt, with different contents.
    write(&folder.join("a.txt"), &play("Changed", 40));
    let fourth = prepare(&[folder.clone()], TokenizerSpec::Gpt2, &out, 0.1, 1).unwrap();
    assert!(!fourth.reused);
    assert_ne!(fourth.manifest.fingerprint, first.manifest.fingerprint);
    let fifth = prepare(&[folder], TokenizerSpec::Gpt2, &out, 0.2, 1).unwrap();
    assert!(!fifth.reused);
    assert!(fifth.manifest.val.bytes > fourth.manifest.val.bytes);
    // gpt2 separates documents with <|endoftext|>: one per document part.
    let separators = fifth
        .train_tokens()
        .unwrap()
        .iter()
        .filter(|&&t| t == 50256)
        .count();
    assert_eq!(separators, 3);
}

#[test]
fn jsonl_and_parquet_inputs() {
    let root = tempfile::tempdir().unwrap();
    let jsonl = root.path().join("docs.jsonl");
    let mut lines = String::new();
    for i in 0..30 {
        lines
            .push_str(&serde_json::json!({"id": i, "text": play(&format!("J{i}"), 5)}).to_string());
        lines.push('\n');
    }
    lines.push('\n'); // A blank line is skipped.
    write(&jsonl, &lines);
    let parquet = root.path().join("hf/data/train-00000-of-00001.parquet");
    std::fs::create_dir_all(parquet.parent().unwrap()).unwrap();
    let group_a = [play("P0", 5), play("P1", 5)];
    let group_b = [play("P2", 5)];
    write_parquet(
        &parquet,
        &[
            vec![Some(group_a[0].as_str()), None, Some(group_a[1].as_str())],
            vec![Some(group_b[0].as_str())],
        ],
    );
    let out = root.path().join("out");
    let prepared = prepare(
        &[jsonl, root.path().join("hf")],
        TokenizerSpec::Bpe { vocab_size: 320 },
        &out,
        0.25,
        3,
    )
    .unwrap();
    let m = &prepared.manifest;
    assert_eq!(m.documents, 30 + 3, "the null parquet cell is skipped");
    assert_eq!(
        m.inputs.iter().map(|i| i.kind.as_str()).collect::<Vec<_>>(),
        ["jsonl", "parquet"]
    );
    let tokenizer = prepared.tokenizer().unwrap();
    assert!(
        (258..=320).contains(&tokenizer.vocab_size()),
        "vocab {}",
        tokenizer.vocab_size()
    );
    // Decoding the val split gives back exactly the val text (separators removed).
    let eot = tokenizer.end_of_text_id().unwrap();
    let val: Vec<u32> = prepared
        .val_tokens()
        .unwrap()
        .into_iter()
        .filter(|&t| t != eot)
        .collect();
    let decoded = tokenizer.decode(&val).unwrap();
    assert_eq!(decoded.len() as u64, m.val.bytes);
    assert!(decoded.ends_with(&group_b[0][val_split_point(&group_b[0], 0.25)..]));
    let total: u64 = (0..30)
        .map(|i| play(&format!("J{i}"), 5).len() as u64)
        .sum::<u64>()
        + group_a
            .iter()
            .chain(&group_b)
            .map(|t| t.len() as u64)
            .sum::<u64>();
    assert_eq!(m.train.bytes + m.val.bytes, total);
    // dataset.json reopens and verifies.
    let reopened = data::PreparedDataset::open(&out).unwrap();
    assert_eq!(reopened.manifest, prepared.manifest);
}

#[test]
fn bad_inputs_get_clear_errors() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let run = |inputs: &[PathBuf]| prepare(inputs, TokenizerSpec::Bytes, &out, 0.1, 0).unwrap_err();

    let missing = root.path().join("missing.txt");
    assert!(matches!(
        run(&[missing]),
        DataError::Ingest(IngestError::Io { .. })
    ));
    let csv = root.path().join("x.csv");
    write(&csv, "a,b");
    assert!(matches!(
        run(&[csv]),
        DataError::Ingest(IngestError::UnsupportedExtension { .. })
    ));
    let empty_folder = root.path().join("empty");
    std::fs::create_dir_all(&empty_folder).unwrap();
    assert!(matches!(
        run(&[empty_folder]),
        DataError::Ingest(IngestError::NoInputFiles)
    ));
    let latin1 = root.path().join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9\n").unwrap();
    assert!(matches!(
        run(&[latin1]),
        DataError::Ingest(IngestError::NotUtf8 { offset: 3, .. })
    ));
    let bad_json = root.path().join("bad.jsonl");
    write(&bad_json, "{\"text\": \"ok\"}\n{\"text\": 5}\n");
    assert!(matches!(
        run(&[bad_json]),
        DataError::Ingest(IngestError::Jsonl { line: 2, .. })
    ));
    let no_text = root.path().join("no_text.jsonl");
    write(&no_text, "{\"body\": \"x\"}\n");
    assert!(matches!(
        run(&[no_text]),
        DataError::Ingest(IngestError::Jsonl { line: 1, .. })
    ));
    let broken_json = root.path().join("broken.jsonl");
    write(&broken_json, "{\"text\": \n");
    assert!(matches!(
        run(&[broken_json]),
        DataError::Ingest(IngestError::Jsonl { line: 1, .. })
    ));
    let not_parquet = root.path().join("fake.parquet");
    write(&not_parquet, "definitely not parquet");
    assert!(matches!(
        run(&[not_parquet]),
        DataError::Ingest(IngestError::Parquet { .. })
    ));
    let empty_txt = root.path().join("empty.txt");
    write(&empty_txt, "");
    assert!(matches!(run(&[empty_txt]), DataError::NoText));
    let good = root.path().join("good.txt");
    write(&good, &play("G", 10));
    for fraction in [0.0, -0.1, 0.9, f64::NAN] {
        assert!(matches!(
            prepare(&[good.clone()], TokenizerSpec::Bytes, &out, fraction, 0),
            Err(DataError::BadValFraction(_))
        ));
    }
}

#[test]
fn parquet_without_text_column_is_an_error() {
    use parquet::data_type::Int64Type;
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("ids.parquet");
    let schema = parse_message_type("message schema { required int64 text_id; }").unwrap();
    let mut writer = SerializedFileWriter::new(
        std::fs::File::create(&path).unwrap(),
        Arc::new(schema),
        Arc::new(WriterProperties::builder().build()),
    )
    .unwrap();
    let mut group = writer.next_row_group().unwrap();
    let mut column = group.next_column().unwrap().unwrap();
    column
        .typed::<Int64Type>()
        .write_batch(&[1, 2], None, None)
        .unwrap();
    column.close().unwrap();
    group.close().unwrap();
    writer.close().unwrap();
    let error = prepare(
        &[path],
        TokenizerSpec::Bytes,
        &root.path().join("out"),
        0.1,
        0,
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("no top-level column \"text\""),
        "{error}"
    );
}

#[test]
fn split_point_rules() {
    assert_eq!(val_split_point("aaaa\nbbbb\ncccc\n", 0.5), 10);
    // No newline after the cut: the next char boundary.
    assert_eq!(val_split_point("abcdefghij", 0.3), 7);
    let multibyte = "ééééé"; // 10 bytes; cut at 7 is inside a char, moves to 8.
    assert_eq!(val_split_point(multibyte, 0.3), 8);
    assert_eq!(val_split_point("", 0.1), 0);
}
