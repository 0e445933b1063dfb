//! The model learns: loss falls on a learnable stream; bad inputs are typed errors.

mod common;

use common::{batch, synthetic_tokens, tiny_train_config};
use model::{ModelError, Preset, Trainer};

#[test]
fn loss_falls_on_a_repeating_phrase() {
    let steps = 25;
    let train = tiny_train_config(steps);
    let mut trainer = Trainer::new(Preset::Tiny.model_config(256), train.clone(), 1, 1).unwrap();
    let held_out = synthetic_tokens(10_000, 4 * (train.seq_len + 1));
    let before = trainer.eval_loss(&held_out).unwrap();
    assert!(
        (before - (256f32).ln()).abs() < 0.3,
        "initial loss {before} should be near ln 256"
    );
    for s in 0..steps {
        trainer.train_step(&batch(&train, s)).unwrap();
    }
    let after = trainer.eval_loss(&held_out).unwrap();
    assert!(after < before * 0.6, "loss went from {before} to {after}");
}

#[test]
fn gradient_accumulation_matches_one_big_batch_closely() {
    let mut big = tiny_train_config(3);
    big.batch_size = 4;
    let mut accum = big.clone();
    accum.batch_size = 2;
    accum.grad_accum = 2;
    let mut a = Trainer::new(Preset::Tiny.model_config(256), big.clone(), 3, 1).unwrap();
    let mut b = Trainer::new(Preset::Tiny.model_config(256), accum, 3, 1).unwrap();
    for s in 0..3 {
        let tokens = batch(&big, s);
        let la = a.train_step(&tokens).unwrap();
        let lb = b.train_step(&tokens).unwrap();
        assert!((la - lb).abs() < 1e-4, "{la} vs {lb}");
    }
    let max_diff = a
        .params()
        .iter()
        .zip(b.params())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(max_diff < 1e-4, "params differ by {max_diff}");
}

#[test]
fn bad_batches_are_errors_not_panics() {
    let train = tiny_train_config(1);
    let mut trainer = Trainer::new(Preset::Tiny.model_config(256), train.clone(), 1, 1).unwrap();
    assert!(matches!(
        trainer.train_step(&[1, 2, 3]),
        Err(ModelError::Batch(_))
    ));
    let mut tokens = batch(&train, 0);
    tokens[5] = 256;
    assert!(matches!(
        trainer.train_step(&tokens),
        Err(ModelError::Batch(_))
    ));
    assert!(trainer.eval_loss(&[]).is_err());
    assert_eq!(trainer.step(), 0);
}

#[test]
fn generate_is_seeded_and_in_vocab() {
    let train = tiny_train_config(1);
    let trainer = Trainer::new(Preset::Tiny.model_config(256), train, 1, 1).unwrap();
    let a = trainer.model().generate(&[65, 66], 20, 0.8, 40, 9).unwrap();
    let b = trainer.model().generate(&[65, 66], 20, 0.8, 40, 9).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 20);
    assert!(a.iter().all(|&t| t < 256));
    assert!(trainer.model().generate(&[], 5, 1.0, 0, 1).is_err());
}

#[test]
fn row_losses_are_each_rows_own_loss_from_one_batched_pass() {
    let train = tiny_train_config(3);
    let mut trainer = Trainer::new(Preset::Tiny.model_config(256), train.clone(), 5, 1).unwrap();
    for s in 0..3 {
        trainer.train_step(&batch(&train, s)).unwrap();
    }
    let row = train.seq_len + 1;
    let tokens = synthetic_tokens(77, 3 * row);
    let rows = trainer.eval_row_losses(&tokens).unwrap();
    assert_eq!(rows.len(), 3);
    for (i, loss) in rows.iter().enumerate() {
        let alone = trainer.eval_loss(&tokens[i * row..(i + 1) * row]).unwrap();
        assert!((loss - alone).abs() < 1e-4, "row {i}: {loss} vs {alone}");
    }
    let mean = rows.iter().sum::<f32>() / 3.0;
    assert!((mean - trainer.eval_loss(&tokens).unwrap()).abs() < 1e-4);
    assert!(trainer.eval_row_losses(&tokens[..row + 1]).is_err());
}

/// A trainer that joins a run late takes the run's place in the learning-rate schedule: its first step moves the
/// parameters by about the learning rate of that place (Adam's first step is ±lr per parameter), not by the
/// near-zero rate of warmup step 1, while a trainer from the start of the schedule takes the warmup rate.
#[test]
fn a_late_trainer_takes_the_runs_place_in_the_schedule() {
    let mut train = tiny_train_config(100);
    train.warmup_steps = 50;
    train.weight_decay = 0.0;
    let config = Preset::Tiny.model_config(256);
    let start = Trainer::new(config.clone(), train.clone(), 5, 1).unwrap();
    let params = start.params();
    let largest_move = |schedule_step: Option<u64>| {
        let mut trainer = Trainer::with_params(config.clone(), train.clone(), &params, 1).unwrap();
        if let Some(step) = schedule_step {
            trainer.set_schedule_step(step);
        }
        trainer.train_step(&batch(&train, 0)).unwrap();
        assert_eq!(
            trainer.step(),
            1,
            "bias correction counts the trainer's own steps"
        );
        let moved = trainer
            .params()
            .iter()
            .zip(&params)
            .map(|(a, b)| f64::from((a - b).abs()))
            .fold(0.0, f64::max);
        (moved, trainer.schedule_step())
    };
    let (fresh, fresh_position) = largest_move(None);
    let (late, late_position) = largest_move(Some(60));
    assert_eq!((fresh_position, late_position), (1, 61));
    let (want_fresh, want_late) = (train.lr_at(1), train.lr_at(61));
    assert!(
        (fresh / want_fresh - 1.0).abs() < 0.05,
        "{fresh} vs lr {want_fresh}"
    );
    assert!(
        (late / want_late - 1.0).abs() < 0.05,
        "{late} vs lr {want_late}"
    );
}
