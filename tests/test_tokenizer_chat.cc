// Chat templates: the Jinja interpreter against transformers' own chat-template environment (jinja2's sandbox with
// trim_blocks, lstrip_blocks, loopcontrols, HF's tojson / raise_exception), and ChatTemplate end to end (template
// found in a model directory, rendered, tokenized) against tokenizer.apply_chat_template(tokenize=True). Golden file:
// tests/data/tokenizer/chat_golden.json from tools/gen_chat_template_golden.py.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "test_util.h"
#include "tokenizer/jinja.h"
#include "tokenizer/tokenizer.h"

namespace patchllm {
namespace {

using ojson = nlohmann::ordered_json;

const ojson& golden() {
  static const ojson g = ojson::parse(file_read(test::source_dir() + "/tests/data/tokenizer/chat_golden.json"));
  return g;
}

std::string tail_after_type(const std::string& err) {  // "UndefinedError: 'x' is undefined" -> "'x' is undefined"
  const size_t p = err.find(": ");
  return p == std::string::npos ? err : err.substr(p + 2);
}

TEST(Jinja, RendersAsTransformersDoes) {
  int rendered = 0, refused = 0;
  for (const auto& c : golden()["jinja"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    const std::string tpl = c["template"];
    if (c.value("syntax", false)) {
      EXPECT_THROW(jinja::Template(tpl, name), FormatError) << "jinja2: " << c["error"];
      ++refused;
      continue;
    }
    jinja::Template t(tpl, name);
    if (c.contains("expected")) {
      EXPECT_EQ(t.render(c["vars"]), c["expected"].get<std::string>());
      ++rendered;
      continue;
    }
    // A template that fails while rendering: the same message as jinja2's, after our "<origin> line N: ".
    try {
      t.render(c["vars"]);
      ADD_FAILURE() << "rendered, but jinja2 failed with " << c["error"];
    } catch (const FormatError& e) {
      const std::string want = tail_after_type(c["error"]);
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what() << "\nwant: " << want;
      EXPECT_EQ(std::string(e.what()).rfind(name + " line ", 0), 0u) << e.what();
      ++refused;
    }
  }
  std::printf("[   INFO   ] %d cases rendered as jinja2 does, %d refused as jinja2 does\n", rendered, refused);
  EXPECT_GE(rendered, 30);
  EXPECT_GE(refused, 10);
}

TEST(Jinja, ErrorsNameTheLine) {
  const std::string tpl =
      "{% for m in messages %}\n{{ m.role }}\n{% if m.role == 'bot' %}\n"
      "{{ raise_exception('bad role ' ~ m.role) }}{% endif %}{% endfor %}";
  jinja::Template t(tpl, "cfg.json chat_template");
  ojson vars = {{"messages", ojson::array({{{"role", "user"}}, {{"role", "bot"}}})}};
  try {
    t.render(vars);
    FAIL() << "no error";
  } catch (const FormatError& e) {
    EXPECT_STREQ(e.what(), "cfg.json chat_template line 4: bad role bot");
  }
  try {
    jinja::Template bad("a\n\n{% if x %}\n{{ 1 + }}\n{% endif %}", "t.jinja");
    FAIL() << "parsed";
  } catch (const FormatError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("t.jinja line 4: ", 0), 0u) << e.what();
  }
}

// Hostile templates end in an error, not a crash or a hang.
TEST(Jinja, BoundsRecursionLoopsAndOutput) {
  const ojson none = ojson::object();
  EXPECT_THROW(jinja::Template("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}", "deep"),
               FormatError);
  EXPECT_THROW(jinja::Template("{{ " + std::string(5000, '-') + "1 }}", "deep"), FormatError);
  EXPECT_THROW(jinja::Template("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "rec").render(none),
               FormatError);
  // Recursion through deep expressions: each call nests 150 expressions, so the evaluation depth, not the macro
  // depth, is what stops it (before the C++ stack runs out).
  EXPECT_THROW(
      jinja::Template("{% macro f(n) %}{{ " + std::string(150, '-') + "f(n + 1) }}{% endmacro %}{{ f(0) }}", "deep rec")
          .render(none),
      FormatError);
  std::string ifs, ends;  // the same through nested blocks
  for (int k = 0; k < 40; ++k) ifs += "{% if true %}", ends += "{% endif %}";
  EXPECT_THROW(
      jinja::Template("{% macro f(n) %}" + ifs + "{{ f(n + 1) }}" + ends + "{% endmacro %}{{ f(0) }}", "deep blocks")
          .render(none),
      FormatError);
  EXPECT_THROW(
      jinja::Template("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "loop")
          .render(none),
      FormatError);
  EXPECT_THROW(jinja::Template("{{ 'x' * 1000000000000 }}", "big").render(none), FormatError);
  EXPECT_THROW(jinja::Template("{{ 9223372036854775807 + 1 }}", "ovf").render(none), FormatError);
  EXPECT_THROW(jinja::Template("{{ -(-9223372036854775807 - 1) }}", "ovf").render(none), FormatError);
  EXPECT_EQ(jinja::Template("{{ -(3) }} {{ +4 }} {{ -true }} {{ -2.5 }}", "neg").render(none), "-3 4 -1 -2.5");
  EXPECT_THROW(jinja::Template("{{ 1 // 0 }}", "div").render(none), FormatError);
  // The one mutable value, a namespace, cannot build unbounded nesting, cycles or sizes.
  const char* grow[] = {
      "{% set ns = namespace(l=[]) %}{% for i in range(300) %}{% set ns.l = [ns.l] %}{% endfor %}{{ ns.l }}",
      "{% set ns = namespace(s='xy') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
      "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
      "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s.replace('a', ns.s) %}{% endfor %}",
      "{% set ns = namespace() %}{% set ns.me = ns %}",
      "{% set a = namespace() %}{% set b = namespace(x=[a]) %}",
      "{{ [1] * 100000000 }}",
  };
  for (const char* t : grow) EXPECT_THROW(jinja::Template(t, "grow").render(none), FormatError) << t;
  // Recursive loops: depth (alone, through nested blocks, with macros) and breadth are bounded. No loop object goes
  // into a namespace (its items may hold that namespace: a cycle), nor a namespace into a dict key of one. %-format
  // widths and precisions stay within the output bound.
  const std::string loops[] = {
      "{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}",
      "{% for x in [1] recursive %}" + ifs + "{{ loop([1]) }}" + ends + "{% endfor %}",
      "{% for x in [1, 2, 3] recursive %}{{ loop([1, 2, 3]) }}{% endfor %}",
      "{% macro m(l) %}{% for x in l recursive %}{{ m([x]) }}{% endfor %}{% endmacro %}{{ m([1]) }}",
      "{% set ns = namespace() %}{% for x in [1] %}{% set ns.l = loop %}{% endfor %}",
      "{% set ns = namespace() %}{% for x in [1] %}{% set ns.l = {1: [loop]} %}{% endfor %}",
      "{% set a = namespace() %}{% set b = namespace(x={a: 1}) %}",
      "{{ '%999999999d' % 1 }}",
      "{{ '%.999999999f' % 1.5 }}",
      "{{ '%.*d' % (999999999, 1) }}",
      "{{ '%*s' % (-99999999999, 'x') }}",
  };
  for (const auto& t : loops) EXPECT_THROW(jinja::Template(t, "loops").render(none), FormatError) << t;
  EXPECT_EQ(jinja::Template("{% for x in [1] recursive %}{% if loop.depth < 90 %}{{ loop([x]) }}{% else %}"
                            "{{ loop.depth }}{% endif %}{% endfor %}|{{ '%.999999999s' % 'ab' }}",
                            "ok")
                .render(none),
            "90|ab");
  // The same forms within the bounds render.
  EXPECT_EQ(jinja::Template("{% set ns = namespace(l=[]) %}{% for i in range(3) %}{% set ns.l = [ns.l] %}{% endfor %}"
                            "{{ ns.l }}",
                            "ok")
                .render(none),
            "[[[[]]]]");
}

// A fresh model directory holding `tok_files` copied from `tok_dir`.
std::string model_dir(const std::string& tag, const std::string& tok_dir, const std::vector<std::string>& tok_files) {
  const std::string dir = test::temp_dir(tag);
  for (const auto& f : tok_files) file_write_atomic(dir + "/" + f, file_read(tok_dir + "/" + f));
  return dir;
}

TEST(ChatTemplate, RendersAndTokenizesAsApplyChatTemplate) {
  const ojson& g = golden();
  int checked = 0;
  for (const auto& c : g["chat"]) {
    const std::string style = c["style"], tok_name = c["tokenizer"];
    SCOPED_TRACE(style + " / " + c["conversation"].get<std::string>() +
                 (c["add_generation_prompt"].get<bool>() ? " + generation prompt" : ""));
    std::string dir;
    if (tok_name == "llama2-tokenizer") {
      // tokenizer.model only, template in chat_template.jinja: bos/eos texts come from the tokenizer.
      const std::string shared = test::shared_dir();
      if (shared.empty()) {
        std::printf("[ SKIPPED ] LLaMA-2 case: ../shared is absent\n");
        continue;
      }
      dir = model_dir("chat_" + style, shared + "/models/llama2-tokenizer", {"tokenizer.model"});
      file_write_atomic(dir + "/chat_template.jinja", g["templates"][style].get<std::string>());
    } else {
      dir = model_dir("chat_" + style, test::source_dir() + "/tests/data/tokenizer/" + tok_name, {"tokenizer.json"});
      ojson cfg =
          ojson::parse(file_read(test::source_dir() + "/tests/data/tokenizer/" + tok_name + "/tokenizer_config.json"));
      cfg["chat_template"] = g["templates"][style];
      file_write_atomic(dir + "/tokenizer_config.json", cfg.dump());
    }
    TokenizerPtr tok = tokenizer_load(dir);
    auto ct = ChatTemplate::load(dir, tok.get());
    ASSERT_TRUE(ct);
    if (c.contains("error")) {
      EXPECT_THROW(ct->render(c["messages"], c["add_generation_prompt"], c["extra"]), FormatError);
      continue;
    }
    const std::string text = ct->render(c["messages"], c["add_generation_prompt"], c["extra"]);
    EXPECT_EQ(text, c["text"].get<std::string>());
    EXPECT_EQ(tok->encode(text, false), c["ids"].get<std::vector<int>>());
    ++checked;
  }
  EXPECT_GE(checked, 10);
}

TEST(ChatTemplate, FindsTheTemplateAsTransformersDoes) {
  const std::string src = test::source_dir() + "/tests/data/tokenizer/bytelevel_qwen2";
  const std::string dir = model_dir("chat_load", src, {"tokenizer.json"});
  const std::string cfg_path = dir + "/tokenizer_config.json";
  const ojson msgs = ojson::array({{{"role", "user"}, {"content", "hi"}}});
  ojson cfg = ojson::parse(file_read(src + "/tokenizer_config.json"));

  file_write_atomic(cfg_path, cfg.dump());
  EXPECT_EQ(ChatTemplate::load(dir), nullptr);  // no template anywhere

  // The special tokens of tokenizer_config.json, strings or AddedToken objects, are template variables.
  cfg["eos_token"] = {{"content", "<|im_end|>"}, {"lstrip", false}};
  cfg["chat_template"] = "{{ eos_token }}|{{ pad_token }}|{{ bos_token is defined }}|{{ add_generation_prompt }}";
  file_write_atomic(cfg_path, cfg.dump());
  EXPECT_EQ(ChatTemplate::load(dir)->render(msgs, true), "<|im_end|>|<|endoftext|>|False|True");

  // HF's named templates: "default" is the one.
  cfg["chat_template"] =
      ojson::array({{{"name", "tool_use"}, {"template", "T"}}, {{"name", "default"}, {"template", "D"}}});
  file_write_atomic(cfg_path, cfg.dump());
  EXPECT_EQ(ChatTemplate::load(dir)->render(msgs, false), "D");
  cfg["chat_template"] = ojson::array({{{"name", "tool_use"}, {"template", "T"}}});
  file_write_atomic(cfg_path, cfg.dump());
  EXPECT_THROW(ChatTemplate::load(dir), FormatError);

  // chat_template.jinja beside it wins; an explicit file wins over both.
  cfg["chat_template"] = "config";
  file_write_atomic(cfg_path, cfg.dump());
  file_write_atomic(dir + "/chat_template.jinja", "jinja file\n");
  EXPECT_EQ(ChatTemplate::load(dir)->render(msgs, false), "jinja file");
  file_write_atomic(dir + "/mine.jinja", "{{ messages[0].content }}");
  EXPECT_EQ(ChatTemplate::load(dir, nullptr, dir + "/mine.jinja")->render(msgs, false), "hi");
  EXPECT_THROW(ChatTemplate::load(dir, nullptr, dir + "/absent.jinja"), FormatError);

  // Extra variables reach the template and may override the defaults (HF's **kwargs).
  EXPECT_EQ(ChatTemplate("{{ tools | length }} {{ date_string }}", "t")
                .render(msgs, false, {{"tools", ojson::array({1, 2})}, {"date_string", "5 Dec"}}),
            "2 5 Dec");

  // Bad input: one error naming the file.
  file_write_atomic(cfg_path, "{\"chat_template\": ");
  std::remove((dir + "/chat_template.jinja").c_str());
  try {
    ChatTemplate::load(dir);
    FAIL() << "loaded malformed JSON";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(cfg_path), std::string::npos) << e.what();
  }
  cfg["chat_template"] = "{% if %}";
  file_write_atomic(cfg_path, cfg.dump());
  try {
    ChatTemplate::load(dir);
    FAIL() << "parsed a broken template";
  } catch (const FormatError& e) {
    EXPECT_EQ(std::string(e.what()).rfind(cfg_path + " chat_template line 1: ", 0), 0u) << e.what();
  }
  ChatTemplate t("x", "t");
  EXPECT_THROW(t.render(ojson::object(), false), InvalidArgument);
  EXPECT_THROW(t.render(ojson::array({{{"content", "no role"}}}), false), InvalidArgument);
}

}  // namespace
}  // namespace patchllm
