#include "io/llama2c.h"

#include <dirent.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "core/provenance.h"
#include "io/safetensors.h"
#include "tokenizer/tokenizer.h"

namespace patchllm {

Llama2cHeader llama2c_read_header(const std::string& path) {
  MappedFile f(path);
  PATCHLLM_CHECK(f.size() >= 28, FormatError, path, ": too small for a llama2.c header (", f.size(), " bytes)");
  int32_t h[7];
  std::memcpy(h, f.data(), sizeof h);
  Llama2cHeader r{h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[5] > 0};
  r.vocab_size = std::abs(r.vocab_size);
  PATCHLLM_CHECK(r.dim > 0 && r.hidden_dim > 0 && r.n_layers > 0 && r.n_heads > 0 && r.n_kv_heads > 0 &&
                     r.vocab_size > 0 && r.seq_len > 0 && r.dim % r.n_heads == 0 && r.n_heads % r.n_kv_heads == 0 &&
                     r.dim < (1 << 16) && r.hidden_dim < (1 << 18) && r.n_layers < 1024 && r.vocab_size < (1 << 22),
                 FormatError, path, ": implausible llama2.c header (dim ", r.dim, ", hidden ", r.hidden_dim,
                 ", layers ", r.n_layers, ", heads ", r.n_heads, "/", r.n_kv_heads, ", vocab ", r.vocab_size, ")");
  return r;
}

namespace {

// llama2.c rotates consecutive pairs (x[2i], x[2i+1]); HF rotates halves. Reorder each head's rows so that
// HF's rotate_half on the new layout equals llama2.c's interleaved rotation: rows (2i, 2i+1) -> (i, i + hd/2).
torch::Tensor permute_rope_rows(const torch::Tensor& w, int64_t n_heads) {
  const int64_t out = w.size(0), in = w.size(1), hd = out / n_heads;
  return w.view({n_heads, hd / 2, 2, in}).transpose(1, 2).reshape({out, in});
}

}  // namespace

void llama2c_convert_to_hf(const std::string& model_bin, const std::string& tokenizer_bin, const std::string& out_dir,
                           bool force) {
  Llama2cHeader h = llama2c_read_header(model_bin);
  MappedFile f(model_bin);
  const int64_t D = h.dim, F = h.hidden_dim, L = h.n_layers, V = h.vocab_size, hd = D / h.n_heads;
  const int64_t KV = h.n_kv_heads * hd;
  // Float counts of the legacy layout (SOURCE.md): embedding, norms, q k v o, ffn norm, w1 w2 w3, final norm,
  // two legacy RoPE tables, optional classifier.
  const int64_t need = V * D + L * D + L * D * D + 2 * L * KV * D + L * D * D + L * D + 3 * L * F * D + D +
                       h.seq_len * hd + (h.shared_classifier ? 0 : V * D);
  const int64_t have = (static_cast<int64_t>(f.size()) - 28) / 4;
  PATCHLLM_CHECK(have >= need, FormatError, model_bin, ": truncated llama2.c checkpoint (", have, " floats, need ",
                 need, ")");
  const float* p = reinterpret_cast<const float*>(f.data() + 28);
  auto take = [&](std::vector<int64_t> shape) {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    auto t = torch::from_blob(const_cast<float*>(p), shape, torch::kFloat32).clone();
    p += n;
    return t;
  };
  auto emb = take({V, D}), att_norm = take({L, D}), wq = take({L, D, D}), wk = take({L, KV, D}),
       wv = take({L, KV, D}), wo = take({L, D, D}), ffn_norm = take({L, D}), w1 = take({L, F, D}),
       w2 = take({L, D, F}), w3 = take({L, F, D}), final_norm = take({D});
  p += h.seq_len * hd;  // freq_cis_real + freq_cis_imag (hd/2 each per position), recomputed at run time
  std::map<std::string, torch::Tensor> t;
  t["model.embed_tokens.weight"] = emb;
  t["model.norm.weight"] = final_norm;
  if (!h.shared_classifier) t["lm_head.weight"] = take({V, D});
  for (int64_t i = 0; i < L; ++i) {
    std::string pre = "model.layers." + std::to_string(i) + ".";
    t[pre + "input_layernorm.weight"] = att_norm[i];
    t[pre + "post_attention_layernorm.weight"] = ffn_norm[i];
    t[pre + "self_attn.q_proj.weight"] = permute_rope_rows(wq[i], h.n_heads);
    t[pre + "self_attn.k_proj.weight"] = permute_rope_rows(wk[i], h.n_kv_heads);
    t[pre + "self_attn.v_proj.weight"] = wv[i];
    t[pre + "self_attn.o_proj.weight"] = wo[i];
    t[pre + "mlp.gate_proj.weight"] = w1[i];
    t[pre + "mlp.down_proj.weight"] = w2[i];
    t[pre + "mlp.up_proj.weight"] = w3[i];
  }
  nlohmann::json tok = tokenizer_json_from_llama2c(tokenizer_bin);
  nlohmann::json tok_cfg = tokenizer_config_from_llama2c(tokenizer_bin);
  nlohmann::json cfg = {{"architectures", {"LlamaForCausalLM"}},
                        {"model_type", "llama"},
                        {"hidden_size", D},
                        {"intermediate_size", F},
                        {"num_hidden_layers", L},
                        {"num_attention_heads", h.n_heads},
                        {"num_key_value_heads", h.n_kv_heads},
                        {"vocab_size", V},
                        {"max_position_embeddings", h.seq_len},
                        {"rms_norm_eps", 1e-5},
                        {"rope_theta", 10000.0},
                        {"hidden_act", "silu"},
                        {"tie_word_embeddings", h.shared_classifier},
                        {"bos_token_id", 1},
                        {"eos_token_id", 2},
                        {"torch_dtype", "float32"}};
  nlohmann::json gen = {{"bos_token_id", 1}, {"eos_token_id", 2}};
  if (dir_exists(out_dir) && !dir_is_empty(out_dir))
    PATCHLLM_CHECK(force, InvalidArgument, out_dir, ": output directory exists and is not empty (use --force)");
  dir_create(out_dir);
  auto prov = provenance_json({model_bin, tokenizer_bin});
  safetensors_write(path_join(out_dir, "model.safetensors"), t,
                    {{"format", "pt"}, {"patchllm_provenance", prov.dump()}});
  file_write_atomic(path_join(out_dir, "config.json"), cfg.dump(2) + "\n");
  file_write_atomic(path_join(out_dir, "generation_config.json"), gen.dump(2) + "\n");
  file_write_atomic(path_join(out_dir, "tokenizer.json"), tok.dump(2) + "\n");
  file_write_atomic(path_join(out_dir, "tokenizer_config.json"), tok_cfg.dump(2) + "\n");
}

}  // namespace patchllm
