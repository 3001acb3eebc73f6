// A chat template (the Jinja source a model's tokenizer_config.json carries) parsed and rendered with a fixed
// conversation that has a system turn, content parts, a tool call and tools: a template that parses must render or
// fail with patchllm::Error, never crash, hang or exhaust memory (jinja.cc bounds nesting, loops and sizes).
#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
  static const nlohmann::ordered_json messages = nlohmann::ordered_json::parse(R"([
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it? \u00e9\ud83d\ude00"}]},
    {"role": "assistant", "content": "", "tool_calls": [{"type": "function",
      "function": {"name": "look", "arguments": {"zoom": 2, "where": ["x", null, 1.5, true]}}}]},
    {"role": "tool", "content": "{\"seen\": \"a cat\"}"},
    {"role": "user", "content": "  thanks  "}])");
  static const nlohmann::ordered_json extra = nlohmann::ordered_json::parse(
      R"({"tools": [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}]})");
  const std::string source(reinterpret_cast<const char*>(data), n);
  PATCHLLM_FUZZ_EXPECT_ERRORS({
    patchllm::ChatTemplate t(source, "fuzz", {{"bos_token", "<s>"}, {"eos_token", "</s>"}});
    t.render(messages, true, extra);
    t.render(messages, false);
  });
  return 0;
}
