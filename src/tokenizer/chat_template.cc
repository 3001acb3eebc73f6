// ChatTemplate (tokenizer.h): finding a model's chat template and its special tokens, and rendering messages through
// the Jinja interpreter (jinja.h).
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "tokenizer/jinja.h"
#include "tokenizer/tokenizer.h"

namespace patchllm {

using ojson = nlohmann::ordered_json;

ChatTemplate::ChatTemplate(const std::string& source, std::string origin, ojson variables)
    : _origin(std::move(origin)),
      _sha256(sha256_hex(source.data(), source.size())),
      _tpl(std::make_unique<jinja::Template>(source, _origin)),
      _vars(variables.is_object() ? std::move(variables) : ojson::object()) {}

ChatTemplate::~ChatTemplate() = default;

namespace {

// A special token in tokenizer_config.json: a string, or an AddedToken object {"content": ...}.
bool token_text(const nlohmann::json& v, std::string* out) {
  if (v.is_string()) return *out = v.get<std::string>(), true;
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return *out = v["content"].get<std::string>(), true;
  return false;
}

}  // namespace

std::unique_ptr<ChatTemplate> ChatTemplate::load(const std::string& model_dir, const Tokenizer* tok,
                                                 const std::string& template_file) {
  const std::string cfg_path = path_join(model_dir, "tokenizer_config.json");
  const nlohmann::json cfg = file_exists(cfg_path) ? json_read_file(cfg_path) : nlohmann::json::object();
  PATCHLLM_CHECK(cfg.is_object(), FormatError, cfg_path, ": expected a JSON object");
  // Special tokens as transformers' special_tokens_map passes them (unset ones are left out).
  ojson vars = ojson::object();
  for (const char* name :
       {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
    std::string text;
    if (cfg.contains(name) && token_text(cfg[name], &text)) vars[name] = text;
  }
  if (cfg.contains("additional_special_tokens") && cfg["additional_special_tokens"].is_array()) {
    ojson extra = ojson::array();
    for (const auto& t : cfg["additional_special_tokens"]) {
      std::string text;
      if (token_text(t, &text)) extra.push_back(text);
    }
    vars["additional_special_tokens"] = extra;
  }
  if (tok) {
    if (!vars.contains("bos_token") && tok->bos_id() >= 0) vars["bos_token"] = tok->token_text(tok->bos_id());
    if (!vars.contains("eos_token") && tok->eos_id() >= 0) vars["eos_token"] = tok->token_text(tok->eos_id());
  }

  if (!template_file.empty()) return std::make_unique<ChatTemplate>(file_read(template_file), template_file, vars);
  const std::string jinja_path = path_join(model_dir, "chat_template.jinja");
  if (file_exists(jinja_path)) return std::make_unique<ChatTemplate>(file_read(jinja_path), jinja_path, vars);
  if (!cfg.contains("chat_template") || cfg["chat_template"].is_null()) return nullptr;
  const nlohmann::json& ct = cfg["chat_template"];
  const std::string origin = cfg_path + " chat_template";
  if (ct.is_string()) return std::make_unique<ChatTemplate>(ct.get<std::string>(), origin, vars);
  // HF's named templates: [{"name": "default", "template": "..."}, {"name": "tool_use", ...}].
  PATCHLLM_CHECK(ct.is_array(), FormatError, cfg_path, ": chat_template must be a string or a list of named templates");
  for (const auto& t : ct) {
    PATCHLLM_CHECK(t.is_object() && t.contains("name") && t["name"].is_string() && t.contains("template") &&
                       t["template"].is_string(),
                   FormatError, cfg_path, ": chat_template list entries need a string \"name\" and \"template\"");
    if (t["name"] == "default")
      return std::make_unique<ChatTemplate>(t["template"].get<std::string>(), origin + " (default)", vars);
  }
  throw FormatError(str(cfg_path, ": chat_template has named templates but none called \"default\""));
}

std::string ChatTemplate::render(const ojson& messages, bool add_generation_prompt, const ojson& extra) const {
  PATCHLLM_CHECK(messages.is_array(), InvalidArgument, _origin, ": messages must be a JSON array");
  for (size_t k = 0; k < messages.size(); ++k)
    PATCHLLM_CHECK(messages[k].is_object() && messages[k].contains("role") && messages[k]["role"].is_string(),
                   InvalidArgument, _origin, ": message ", k + 1, " must be an object with a string \"role\"");
  PATCHLLM_CHECK(extra.is_object(), InvalidArgument, _origin, ": extra template variables must be a JSON object");
  ojson vars = _vars;
  vars["messages"] = messages;
  vars["tools"] = nullptr;
  vars["documents"] = nullptr;
  vars["add_generation_prompt"] = add_generation_prompt;
  for (const auto& [k, v] : extra.items()) vars[k] = v;
  return _tpl->render(vars);
}

}  // namespace patchllm
