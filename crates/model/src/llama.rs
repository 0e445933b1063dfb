//! The Llama forward pass over parameter views (HF `LlamaForCausalLM` semantics).
//!
//! Per block: x += o_proj(attn(rope(q_proj(n)), rope(k_proj(n)), v_proj(n))) with
//! n = rms_norm(x); then x += down_proj(silu(gate_proj(n)) * up_proj(n)) with n = rms_norm(x).
//! Rotary embeddings use HF's `rotate_half` convention (the two halves of each head, not
//! interleaved pairs), so HF transformers loads our checkpoints and computes the same logits.
//! Attention is `scaled_dot_product_attention(is_causal = true)`; grouped-query attention
//! repeats each key/value head `heads / kv_heads` times, like HF's `repeat_kv`.

use tch::{Kind, Tensor};

use crate::config::ModelConfig;

/// Tensors of one transformer block, in layout order.
pub struct Block {
    pub input_norm: Tensor,
    pub q_proj: Tensor,
    pub k_proj: Tensor,
    pub v_proj: Tensor,
    pub o_proj: Tensor,
    pub post_norm: Tensor,
    pub gate_proj: Tensor,
    pub up_proj: Tensor,
    pub down_proj: Tensor,
}

/// All parameter tensors (views into the flat parameter buffer).
pub struct Weights {
    pub embed: Tensor,
    pub blocks: Vec<Block>,
    pub norm: Tensor,
    /// `None` when tied: the output projection is `embed`.
    pub lm_head: Option<Tensor>,
}

impl Weights {
    /// Groups `tensors` (in `layout` order) into named weights.
    pub fn from_ordered(config: &ModelConfig, tensors: &[Tensor]) -> Weights {
        let mut it = tensors.iter().map(|t| t.shallow_clone());
        let mut next = || it.next().expect("tensor count matches layout");
        let embed = next();
        let blocks = (0..config.num_hidden_layers)
            .map(|_| Block {
                input_norm: next(),
                q_proj: next(),
                k_proj: next(),
                v_proj: next(),
                o_proj: next(),
                post_norm: next(),
                gate_proj: next(),
                up_proj: next(),
                down_proj: next(),
            })
            .collect();
        let norm = next();
        let lm_head = (!config.tie_word_embeddings).then(next);
        Weights {
            embed,
            blocks,
            norm,
            lm_head,
        }
    }
}

/// Rotary tables `(cos, sin)`, each [seq_len, head_dim], HF layout (frequencies repeated twice).
pub fn rope_tables(config: &ModelConfig, seq_len: usize) -> (Tensor, Tensor) {
    let head_dim = config.head_dim();
    let inv_freq: Vec<f32> = (0..head_dim / 2)
        .map(|i| (1.0 / config.rope_theta.powf((2 * i) as f64 / head_dim as f64)) as f32)
        .collect();
    let inv_freq = Tensor::from_slice(&inv_freq);
    let positions = Tensor::arange(seq_len as i64, (Kind::Float, tch::Device::Cpu));
    let freqs = positions.unsqueeze(1) * inv_freq.unsqueeze(0);
    let emb = Tensor::cat(&[&freqs, &freqs], -1);
    (emb.cos(), emb.sin())
}

fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    let x1 = x.narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    Tensor::cat(&[&x2.neg(), &x1], 3)
}

fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    x * cos + rotate_half(x) * sin
}

fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Tensor {
    let dim = *x.size().last().expect("non-scalar");
    Tensor::rms_norm(x, [dim], Some(weight), eps)
}

/// Logits [batch, seq, vocab] for `input_ids` [batch, seq] (Int64).
/// `rope` holds tables for at least `seq` positions.
pub fn forward(
    config: &ModelConfig,
    w: &Weights,
    rope: &(Tensor, Tensor),
    input_ids: &Tensor,
) -> Tensor {
    let (batch, seq) = input_ids.size2().expect("input_ids is [batch, seq]");
    let heads = config.num_attention_heads as i64;
    let kv_heads = config.num_key_value_heads as i64;
    let head_dim = config.head_dim() as i64;
    let eps = config.rms_norm_eps;
    let cos = rope.0.narrow(0, 0, seq);
    let sin = rope.1.narrow(0, 0, seq);
    let mut x = Tensor::embedding(&w.embed, input_ids, -1, false, false);
    for block in &w.blocks {
        let n = rms_norm(&x, &block.input_norm, eps);
        let q = n
            .linear::<Tensor>(&block.q_proj, None)
            .view([batch, seq, heads, head_dim])
            .transpose(1, 2);
        let k = n
            .linear::<Tensor>(&block.k_proj, None)
            .view([batch, seq, kv_heads, head_dim])
            .transpose(1, 2);
        let v = n
            .linear::<Tensor>(&block.v_proj, None)
            .view([batch, seq, kv_heads, head_dim])
            .transpose(1, 2);
        let q = apply_rope(&q, &cos, &sin);
        let mut k = apply_rope(&k, &cos, &sin);
        let mut v = v;
        if kv_heads != heads {
            let repeat = heads / kv_heads;
            k = k.repeat_interleave_self_int(repeat, 1, None);
            v = v.repeat_interleave_self_int(repeat, 1, None);
        }
        let attn = Tensor::scaled_dot_product_attention::<Tensor>(
            &q, &k, &v, None, 0.0, true, None, false,
        );
        let attn = attn.transpose(1, 2).reshape([batch, seq, heads * head_dim]);
        x = x + attn.linear::<Tensor>(&block.o_proj, None);
        let n = rms_norm(&x, &block.post_norm, eps);
        let gate = n.linear::<Tensor>(&block.gate_proj, None).silu();
        let up = n.linear::<Tensor>(&block.up_proj, None);
        x = x + (gate * up).linear::<Tensor>(&block.down_proj, None);
    }
    let x = rms_norm(&x, &w.norm, eps);
    x.linear::<Tensor>(w.lm_head.as_ref().unwrap_or(&w.embed), None)
}
