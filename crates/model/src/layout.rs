//! The flat parameter vector: its fixed order, and the seeded initialisation.
//!
//! Order (row-major within each tensor, HF `LlamaForCausalLM` names):
//! 1. `model.embed_tokens.weight` [vocab, hidden]
//! 2. for each layer N in 0..num_hidden_layers:
//!    `model.layers.N.input_layernorm.weight` [hidden],
//!    `model.layers.N.self_attn.q_proj.weight` [heads*head_dim, hidden],
//!    `...k_proj.weight` [kv_heads*head_dim, hidden], `...v_proj.weight` (same),
//!    `...o_proj.weight` [hidden, heads*head_dim],
//!    `model.layers.N.post_attention_layernorm.weight` [hidden],
//!    `model.layers.N.mlp.gate_proj.weight` [inter, hidden], `...up_proj.weight` [inter, hidden],
//!    `...down_proj.weight` [hidden, inter]
//! 3. `model.norm.weight` [hidden]
//! 4. `lm_head.weight` [vocab, hidden], absent when `tie_word_embeddings`.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::ModelConfig;

/// One tensor's place in the flat parameter vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// HF parameter name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    pub shape: Vec<usize>,
    /// Index of the first element in the flat vector.
    pub offset: usize,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Norm gains are 1-D and are neither decayed nor randomly initialised.
    pub fn is_norm(&self) -> bool {
        self.shape.len() == 1
    }
}

/// The documented order of all parameters of `config` (see the module docs).
pub fn layout(config: &ModelConfig) -> Vec<ParamSpec> {
    let h = config.hidden_size;
    let q = config.num_attention_heads * config.head_dim();
    let kv = config.num_key_value_heads * config.head_dim();
    let i = config.intermediate_size;
    let v = config.vocab_size;
    let mut shapes: Vec<(String, Vec<usize>)> =
        vec![("model.embed_tokens.weight".into(), vec![v, h])];
    for n in 0..config.num_hidden_layers {
        let p = format!("model.layers.{n}");
        shapes.push((format!("{p}.input_layernorm.weight"), vec![h]));
        shapes.push((format!("{p}.self_attn.q_proj.weight"), vec![q, h]));
        shapes.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, h]));
        shapes.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, h]));
        shapes.push((format!("{p}.self_attn.o_proj.weight"), vec![h, q]));
        shapes.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        shapes.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
        shapes.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
        shapes.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
    }
    shapes.push(("model.norm.weight".into(), vec![h]));
    if !config.tie_word_embeddings {
        shapes.push(("lm_head.weight".into(), vec![v, h]));
    }
    let mut offset = 0;
    shapes
        .into_iter()
        .map(|(name, shape)| {
            let spec = ParamSpec {
                name,
                shape,
                offset,
            };
            offset += spec.numel();
            spec
        })
        .collect()
}

pub fn param_count(config: &ModelConfig) -> usize {
    layout(config).iter().map(ParamSpec::numel).sum()
}

/// Seeded initial parameters: norm gains 1, matrices N(0, 0.02²), and the residual output
/// projections (`o_proj`, `down_proj`) N(0, (0.02/sqrt(2·layers))²) as in GPT-2.
/// Pure Rust (ChaCha8 + Box-Muller), so it never touches libtorch's global generator and is the
/// same on every machine.
pub fn init_params(config: &ModelConfig, seed: u64) -> Vec<f32> {
    let specs = layout(config);
    let total = specs.iter().map(ParamSpec::numel).sum();
    let mut out = Vec::with_capacity(total);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let residual_std = 0.02 / (2.0 * config.num_hidden_layers as f64).sqrt();
    for spec in &specs {
        if spec.is_norm() {
            out.extend(std::iter::repeat_n(1.0f32, spec.numel()));
            continue;
        }
        let residual =
            spec.name.ends_with("o_proj.weight") || spec.name.ends_with("down_proj.weight");
        let std = if residual { residual_std } else { 0.02 };
        push_normals(&mut rng, std, spec.numel(), &mut out);
    }
    out
}

fn push_normals(rng: &mut ChaCha8Rng, std: f64, count: usize, out: &mut Vec<f32>) {
    let uniform =
        |rng: &mut ChaCha8Rng| ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let mut left = count;
    while left > 0 {
        let u1 = uniform(rng);
        let u2 = uniform(rng);
        let radius = (-2.0 * u1.ln()).sqrt() * std;
        let angle = std::f64::consts::TAU * u2;
        out.push((radius * angle.cos()) as f32);
        left -= 1;
        if left > 0 {
            out.push((radius * angle.sin()) as f32);
            left -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Preset;

    #[test]
    fn offsets_are_contiguous_and_presets_have_documented_sizes() {
        let config = Preset::Tiny.model_config(256);
        let specs = layout(&config);
        let mut next = 0;
        for spec in &specs {
            assert_eq!(spec.offset, next);
            next += spec.numel();
        }
        assert_eq!(specs[0].name, "model.embed_tokens.weight");
        assert_eq!(specs.last().unwrap().name, "lm_head.weight");
        let tiny = param_count(&config);
        assert!((500_000..1_500_000).contains(&tiny), "tiny has {tiny}");
        let small = param_count(&Preset::Small.model_config(256));
        assert!(
            (15_000_000..25_000_000).contains(&small),
            "small has {small}"
        );
        let base = param_count(&Preset::Base.model_config(256));
        assert!((85_000_000..140_000_000).contains(&base), "base has {base}");
    }

    #[test]
    fn init_is_a_pure_function_of_seed() {
        let config = Preset::Tiny.model_config(256);
        let a = init_params(&config, 7);
        assert_eq!(a, init_params(&config, 7));
        assert_ne!(a, init_params(&config, 8));
        let spec = &layout(&config)[1];
        assert!(a[spec.offset..spec.offset + spec.numel()]
            .iter()
            .all(|&x| x == 1.0));
        let embed = &a[..config.vocab_size * config.hidden_size];
        let var = embed.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / embed.len() as f64;
        assert!((var.sqrt() - 0.02).abs() < 0.002, "std {}", var.sqrt());
    }
}
