// patchllm convert --from llama2c MODEL.bin --tokenizer TOK.bin -o DIR
// patchllm convert --from gguf MODEL.gguf -o DIR [--fp32]
// patchllm convert --to gguf -m HF_DIR -o MODEL.gguf [--dtype f16|bf16|f32]
#include "cli/common.h"
#include "core/error.h"
#include "core/log.h"
#include "io/gguf_convert.h"
#include "io/hf_to_gguf.h"
#include "io/llama2c.h"

namespace patchllm::cli {

void register_convert(CLI::App& app) {
  struct Opts {
    std::string from, to, input, model, tokenizer, output, dtype = "bf16";
    bool force = false, fp32 = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("convert", "convert a checkpoint into a Hugging Face directory, or one into GGUF");
  sub->add_option("--from", o->from, "input format: llama2c | gguf (output: a Hugging Face directory)");
  sub->add_option("--to", o->to, "output format: gguf (input: the Hugging Face directory given by -m)");
  sub->add_option("input", o->input, "input checkpoint file (--from)");
  sub->add_option("-m,--model", o->model, "Hugging Face model directory (--to gguf)");
  sub->add_option("--tokenizer", o->tokenizer, "tokenizer file (llama2c: tokenizer .bin)");
  sub->add_option("-o,--output", o->output, "output directory (--from) or file (--to)")->required();
  sub->add_flag("--force", o->force, "overwrite an existing output");
  sub->add_flag("--fp32", o->fp32, "--from gguf: write float32 weights (default bf16)");
  sub->add_option("--dtype", o->dtype, "--to gguf: weight type f16 | bf16 | f32 (default bf16; 1-D tensors are f32)");
  sub->callback([o] {
    PATCHLLM_CHECK(o->from.empty() != o->to.empty(), InvalidArgument, "convert needs exactly one of --from or --to");
    if (!o->to.empty()) {
      PATCHLLM_CHECK(o->to == "gguf", InvalidArgument, "convert: unknown --to '", o->to, "' (supported: gguf)");
      PATCHLLM_CHECK(!o->model.empty(), InvalidArgument, "convert --to gguf needs -m HF_DIR");
      PATCHLLM_CHECK(o->input.empty(), InvalidArgument, "convert --to gguf takes the model as -m HF_DIR, not '",
                     o->input, "'");
      hf_convert_to_gguf(o->model, o->output, gguf_export_dtype_parse(o->dtype), o->force);
    } else {
      PATCHLLM_CHECK(!o->input.empty(), InvalidArgument, "convert --from ", o->from, " needs an input file");
      if (o->from == "llama2c") {
        PATCHLLM_CHECK(!o->tokenizer.empty(), InvalidArgument, "convert --from llama2c needs --tokenizer TOK.bin");
        llama2c_convert_to_hf(o->input, o->tokenizer, o->output, o->force);
      } else if (o->from == "gguf") {
        gguf_convert_to_hf(o->input, o->output, o->fp32, o->force);
      } else {
        throw InvalidArgument(str("convert: unknown --from '", o->from, "' (supported: llama2c, gguf)"));
      }
    }
    log_info("wrote ", o->output);
  });
}

}  // namespace patchllm::cli
