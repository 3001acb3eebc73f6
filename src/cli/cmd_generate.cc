// patchllm generate -m DIR -p PROMPT -n N [--temp --top-p --seed --[no-]cuda-graph --no-fuse]: streamed text on stdout,
// speed on stderr.
#include <cstdio>
#include <iostream>

#include "cli/common.h"
#include "core/log.h"
#include "model/generate.h"
#include "tokenizer/tokenizer.h"

namespace patchllm::cli {

void register_generate(CLI::App& app) {
  struct Opts {
    std::string model, prompt;
    SamplingOptions s;
    DeviceOptions dev;
    bool no_bos = false, no_fuse = false, graph = false, no_graph = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("generate", "generate text (greedy at --temp 0)");
  sub->add_option("-m,--model", o->model, "Hugging Face model directory")->required()->envname("PATCHLLM_ARG_MODEL");
  sub->add_option("-p,--prompt", o->prompt, "prompt text (empty: start from BOS)")->capture_default_str();
  sub->add_option("-n,--n-predict", o->s.max_new_tokens, "tokens to generate")->capture_default_str();
  sub->add_option("--temp", o->s.temperature, "sampling temperature, 0 = greedy")->capture_default_str();
  sub->add_option("--top-p", o->s.top_p, "nucleus sampling mass")->capture_default_str();
  sub->add_option("-s,--seed", o->s.seed, "sampling seed")->capture_default_str();
  sub->add_flag("--no-bos", o->no_bos, "do not add BOS/special tokens to the prompt");
  sub->add_flag("--cuda-graph", o->graph,
                "decode with fixed-shape steps captured once as a CUDA graph and replayed (the default on CUDA; on the "
                "CPU the same steps run eagerly; a failed capture warns and decodes eagerly)");
  sub->add_flag("--no-cuda-graph", o->no_graph, "decode with Model::forward per token (eager)");
  sub->add_flag("--no-fuse", o->no_fuse, "keep q,k,v and gate,up as separate linears (fused: one GEMM each)");
  o->dev.add(sub);
  sub->callback([o] {
    auto lo = o->dev.resolve();
    PATCHLLM_CHECK(!(o->graph && o->no_graph), InvalidArgument, "--cuda-graph and --no-cuda-graph exclude each other");
    // The sampling flags, checked before anything loads or the prompt is echoed (an error after the echo would
    // share its line).
    check_sampling_options(o->s);
    o->s.decode_graph = o->graph || (lo.device.is_cuda() && !o->no_graph);
    auto tok = tokenizer_load(o->model);
    auto model = Model::load(o->model, lo);
    log_info("model ", o->model, " (", model->config.architecture, ", ", model->num_parameters(), " params) on ",
             describe(lo));
    if (!o->no_fuse) model_fuse_projections(*model);
    std::vector<int> prompt = tok->encode(o->prompt, !o->no_bos);
    if (prompt.empty()) {
      PATCHLLM_CHECK(tok->bos_id() >= 0, InvalidArgument, "empty prompt and the tokenizer has no BOS token");
      prompt.push_back(tok->bos_id());
    }
    o->s.stop_ids = model->config.eos_token_ids;
    if (tok->eos_id() >= 0) o->s.stop_ids.push_back(tok->eos_id());
    std::cout << o->prompt << std::flush;
    StreamDecoder dec(*tok);
    for (int id : prompt) dec.push(id);  // so the first generated piece is decoded in context (leading spaces)
    dec.flush();
    GenerateStats st;
    generate(*model, prompt, o->s, [&](int id) { std::cout << dec.push(id) << std::flush; }, &st);
    std::cout << dec.flush() << std::endl;
    std::fprintf(stderr, "prompt: %lld tokens, %.1f tok/s | generation: %lld tokens, %.1f tok/s\n",
                 static_cast<long long>(st.prompt_tokens), st.prompt_tokens / std::max(st.prompt_seconds, 1e-9),
                 static_cast<long long>(st.generated_tokens),
                 st.generated_tokens / std::max(st.decode_seconds, 1e-9));
  });
}

}  // namespace patchllm::cli
