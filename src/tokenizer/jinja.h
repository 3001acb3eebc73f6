// A Jinja2 interpreter for chat templates (internal header of the tokenizer module; the front is ChatTemplate in
// tokenizer.h). It renders as transformers' apply_chat_template does: jinja2's sandboxed environment with
// trim_blocks and lstrip_blocks, the loopcontrols extension (break / continue), the {% generation %} tag, HF's
// tojson (ensure_ascii=False), raise_exception and strftime_now. Values follow Python: truthiness, str() and repr()
// of lists and dicts, float formatting, slicing, %-formatting, dict keys of any hashable type (1, 1.0 and True one
// key), the string and dict methods templates call. For loops have jinja2's loop object (changed, cycle, previtem,
// nextitem) and may be recursive.
// Not supported (an error naming the line): template inheritance and includes, {% call %}.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace patchllm::jinja {

struct Body;  // the parsed statements

class Template {
 public:
  // Parses `source`. Syntax errors throw FormatError "<origin> line N: ...".
  Template(const std::string& source, std::string origin);
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;
  // Renders with the top-level variables of `vars` (a JSON object; arrays and objects keep their order). Errors while
  // rendering (raise_exception, undefined values where a value is needed, wrong types) throw FormatError
  // "<origin> line N: ...", the line being the template's.
  std::string render(const nlohmann::ordered_json& vars) const;

 private:
  std::string _origin;
  std::unique_ptr<Body> _body;
};

}  // namespace patchllm::jinja
