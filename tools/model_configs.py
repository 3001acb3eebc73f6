"""Real model configurations (from their published config.json files) for random-weight checkpoints."""

LLAMA2_7B = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=4096, intermediate_size=11008,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                 max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0, hidden_act="silu",
                 tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
LLAMA31_8B = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=4096, intermediate_size=14336,
                  num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                  max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0, hidden_act="silu",
                  rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                    original_max_position_embeddings=8192),
                  tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128001)
LLAMA32_1B = dict(LLAMA31_8B, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, head_dim=64,
                  rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                    original_max_position_embeddings=8192),
                  tie_word_embeddings=True)
QWEN25_05B = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=896, intermediate_size=4864,
                  num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                  max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0, hidden_act="silu",
                  tie_word_embeddings=True, use_sliding_window=False, sliding_window=32768,
                  bos_token_id=151643, eos_token_id=151643)
MISTRAL_7B = dict(architectures=["MistralForCausalLM"], model_type="mistral", hidden_size=4096,
                  intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                  vocab_size=32000, max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=10000.0,
                  hidden_act="silu", sliding_window=4096, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)

# google/gemma-3-1b-pt: 5 sliding-window (512) layers per global one, head_dim 256 != hidden/heads, MQA.
GEMMA3_1B = dict(architectures=["Gemma3ForCausalLM"], model_type="gemma3_text", hidden_size=1152,
                 intermediate_size=6912, num_hidden_layers=26, num_attention_heads=4, num_key_value_heads=1,
                 head_dim=256, vocab_size=262144, max_position_embeddings=32768, rms_norm_eps=1e-6,
                 rope_theta=1000000.0, rope_local_base_freq=10000.0, sliding_window=512, sliding_window_pattern=6,
                 query_pre_attn_scalar=256, hidden_activation="gelu_pytorch_tanh", attn_logit_softcapping=None,
                 final_logit_softcapping=None, tie_word_embeddings=True, bos_token_id=2, eos_token_id=1,
                 pad_token_id=0)

CONFIGS = {"llama2-7b": LLAMA2_7B, "llama3.1-8b": LLAMA31_8B, "llama3.2-1b": LLAMA32_1B,
           "qwen2.5-0.5b": QWEN25_05B, "mistral-7b": MISTRAL_7B, "gemma3-1b": GEMMA3_1B}


def make_model(name, layers=None, dtype="float32", seed=0, device="cpu"):
    """A transformers model of the named config with random weights (HF's own init), optionally fewer layers."""
    import torch
    import transformers
    cfg = dict(CONFIGS[name])
    if layers:
        cfg["num_hidden_layers"] = layers
    cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
           "mistral": transformers.MistralConfig, "gemma3_text": transformers.Gemma3TextConfig}[cfg["model_type"]]
    config = cls(**{k: v for k, v in cfg.items() if k not in ("model_type",)})
    torch.manual_seed(seed)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=getattr(torch, dtype))
    # HF's init (std 0.02, norms = 1) gives near-uniform logits; perturb the norms so the check sees real structure.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(torch.randn_like(p) * 0.2)
    return model.eval()
