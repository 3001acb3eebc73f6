// patchllm convert --from llama2c MODEL.bin --tokenizer TOK.bin -o DIR
#include "cli/common.h"
#include "core/error.h"
#include "core/log.h"
#include "io/gguf_convert.h"
#include "io/llama2c.h"

namespace patchllm::cli {

void register_convert(CLI::App& app) {
  struct Opts {
    std::string from, input, tokenizer, output;
    bool force = false, fp32 = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("convert", "convert a checkpoint into a Hugging Face directory");
  sub->add_option("--from", o->from, "input format: llama2c | gguf")->required();
  sub->add_option("input", o->input, "input checkpoint file")->required();
  sub->add_option("--tokenizer", o->tokenizer, "tokenizer file (llama2c: tokenizer .bin)");
  sub->add_option("-o,--output", o->output, "output directory")->required();
  sub->add_flag("--force", o->force, "overwrite a non-empty output directory");
  sub->add_flag("--fp32", o->fp32, "gguf: write float32 weights (default bf16)");
  sub->callback([o] {
    if (o->from == "llama2c") {
      PATCHLLM_CHECK(!o->tokenizer.empty(), InvalidArgument, "convert --from llama2c needs --tokenizer TOK.bin");
      llama2c_convert_to_hf(o->input, o->tokenizer, o->output, o->force);
    } else if (o->from == "gguf") {
      gguf_convert_to_hf(o->input, o->output, o->fp32, o->force);
    } else {
      throw InvalidArgument(str("convert: unknown --from '", o->from, "' (supported: llama2c, gguf)"));
    }
    log_info("wrote ", o->output);
  });
}

}  // namespace patchllm::cli
