// Jinja2 for chat templates: template lexer (whitespace control, trim_blocks, lstrip_blocks), expression parser,
// tree-walking evaluator with Python value semantics. See jinja.h for what is covered.
#include "tokenizer/jinja.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <ctime>
#include <functional>
#include <map>
#include <optional>
#include <unordered_map>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace patchllm::jinja {
namespace {

// Bounds that keep a hostile or broken template from exhausting the stack, memory or time.
constexpr int kMaxNesting = 200;                 // parser recursion (expressions and blocks)
constexpr int kMaxCallDepth = 100;               // macro recursion
constexpr int kMaxEvalDepth = 1500;              // expressions and blocks inside each other (macros multiply)
constexpr size_t kMaxOutput = size_t(64) << 20;  // rendered bytes
constexpr int64_t kMaxSteps = 2'000'000;         // loop iterations and range() elements, in all
constexpr size_t kMaxItems = 1'000'000;          // elements of one list
constexpr int kMaxDepth = 256;                   // lists and dicts inside each other (recursion in repr, ==, tojson)

// An error while rendering; Template::render adds the origin and the line.
struct Fail {
  std::string msg;
};
[[noreturn]] void fail(std::string msg) { throw Fail{std::move(msg)}; }

// ---------------------------------------------------------------------------------------------------------------
// Values
struct State;
struct Value;
using List = std::vector<Value>;
struct Dict;
using Kwargs = std::vector<std::pair<std::string, Value>>;
struct Func {
  std::string name;
  std::function<Value(State&, List&, Kwargs&)> call;
  std::shared_ptr<Dict> attrs;  // a for loop's `loop`: a callable object with attributes (index, cycle, ...)
};

struct Value {
  enum Kind { kUndefined, kNone, kBool, kInt, kFloat, kStr, kList, kDict, kFunc } kind = kUndefined;
  bool b = false;
  bool tuple = false;  // a list that came from a tuple (items(), dictsort, `(a, b)`): repr() uses parentheses
  int depth = 0;       // lists / dicts: 1 + the deepest element's depth (bounded by kMaxDepth)
  int64_t i = 0;
  double f = 0;
  std::string s;  // the string; for an undefined value, why it is undefined (jinja's UndefinedError message)
  std::shared_ptr<List> list;
  std::shared_ptr<Dict> dict;
  std::shared_ptr<Func> fn;

  static Value undefined(std::string why) {
    Value v;
    v.s = std::move(why);
    return v;
  }
  static Value none() { return with(kNone); }
  static Value boolean(bool x) {
    Value v = with(kBool);
    v.b = x;
    return v;
  }
  static Value integer(int64_t x) {
    Value v = with(kInt);
    v.i = x;
    return v;
  }
  static Value real(double x) {
    Value v = with(kFloat);
    v.f = x;
    return v;
  }
  static Value str(std::string x) {
    Value v = with(kStr);
    v.s = std::move(x);
    return v;
  }
  static Value of_list(List x);
  static Value of_tuple(List x) {
    Value v = of_list(std::move(x));
    v.tuple = true;
    return v;
  }
  static Value of_dict(std::shared_ptr<Dict> d);
  static Value func(std::string name, std::function<Value(State&, List&, Kwargs&)> call) {
    Value v = with(kFunc);
    v.fn = std::make_shared<Func>(Func{std::move(name), std::move(call), nullptr});
    return v;
  }
  bool is_undefined() const { return kind == kUndefined; }
  bool is_number() const { return kind == kInt || kind == kFloat || kind == kBool; }
  double num() const { return kind == kFloat ? f : kind == kInt ? double(i) : double(b); }

 private:
  static Value with(Kind k) {
    Value v;
    v.kind = k;
    return v;
  }
};

bool key_equal(const Value& a, const Value& b);

// Insertion-ordered, as Python dicts (and so tojson output) are. Keys are any hashable value (see unhashable()) and
// compare as Python's do: 1, 1.0 and True are one key, and the first one given stays.
struct Dict {
  std::vector<std::pair<Value, Value>> items;
  bool is_namespace = false;  // namespace(): the only object `set obj.attr = ...` may change
  const Value* find(const Value& k) const {
    for (const auto& [key, v] : items)
      if (key_equal(key, k)) return &v;
    return nullptr;
  }
  const Value* find(const std::string& k) const {
    for (const auto& [key, v] : items)
      if (key.kind == Value::kStr && key.s == k) return &v;
    return nullptr;
  }
  void set(Value k, Value v) {
    for (auto& [key, old] : items)
      if (key_equal(key, k)) {
        old = std::move(v);
        return;
      }
    items.emplace_back(std::move(k), std::move(v));
  }
  void set(const std::string& k, Value v) { set(Value::str(k), std::move(v)); }
};

Value Value::of_list(List x) {
  if (x.size() > kMaxItems) fail(patchllm::str("a list of more than ", kMaxItems, " items"));
  Value v = with(kList);
  for (const Value& e : x) v.depth = std::max(v.depth, e.depth + 1);
  if (v.depth == 0) v.depth = 1;
  if (v.depth > kMaxDepth) fail(patchllm::str("lists and dicts nested deeper than ", kMaxDepth));
  v.list = std::make_shared<List>(std::move(x));
  return v;
}

Value Value::of_dict(std::shared_ptr<Dict> d) {
  Value v = with(kDict);
  for (const auto& kv : d->items) v.depth = std::max({v.depth, kv.first.depth + 1, kv.second.depth + 1});
  if (v.depth == 0) v.depth = 1;
  if (v.depth > kMaxDepth) fail(patchllm::str("lists and dicts nested deeper than ", kMaxDepth));
  v.dict = std::move(d);
  return v;
}

// A namespace is the one mutable value; it may not hold another namespace, so no value can contain itself and the
// depth recorded when a list or dict is built stays within 2 x kMaxDepth (recursion stays bounded). Nor may it hold
// a loop object, whose items and loop.changed() state could hold the namespace (a reference cycle).
bool holds_namespace(const Value& v) {
  if (v.kind == Value::kList)
    return std::any_of(v.list->begin(), v.list->end(), [](const Value& e) { return holds_namespace(e); });
  if (v.kind == Value::kDict)
    return v.dict->is_namespace || std::any_of(v.dict->items.begin(), v.dict->items.end(), [](const auto& kv) {
             return holds_namespace(kv.first) || holds_namespace(kv.second);
           });
  return v.kind == Value::kFunc && v.fn->attrs;
}

// Strings built by the template (concatenation, replace, join, indent, repr) stay below the output bound.
void check_size(size_t bytes) {
  if (bytes > kMaxOutput) fail(str("a string longer than ", kMaxOutput >> 20, " MiB"));
}

const char* type_name(const Value& v) {
  switch (v.kind) {
    case Value::kUndefined: return "Undefined";
    case Value::kNone: return "NoneType";
    case Value::kBool: return "bool";
    case Value::kInt: return "int";
    case Value::kFloat: return "float";
    case Value::kStr: return "str";
    case Value::kList: return v.tuple ? "tuple" : "list";
    case Value::kDict: return v.dict->is_namespace ? "Namespace" : "dict";
    case Value::kFunc: return "function";
  }
  return "?";
}

[[noreturn]] void fail_undefined(const Value& v) { fail(v.s.empty() ? "undefined value" : v.s); }

bool truthy(const Value& v) {
  switch (v.kind) {
    case Value::kUndefined:
    case Value::kNone: return false;
    case Value::kBool: return v.b;
    case Value::kInt: return v.i != 0;
    case Value::kFloat: return v.f != 0;
    case Value::kStr: return !v.s.empty();
    case Value::kList: return !v.list->empty();
    case Value::kDict: return !v.dict->items.empty();
    case Value::kFunc: return true;
  }
  return false;
}

// Code points of a string (an invalid byte counts as one), for len(), indexing and slicing as Python sees a str.
std::vector<std::string> chars_of(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    const size_t n = std::max<size_t>(1, utf8_char_len(s, i));
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

// Python's float repr: the shortest round-trip digits, fixed notation for exponents -4 ... 15, else d.ddde+XX.
std::string py_float(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  const size_t e = sci.find('e');
  std::string mant = sci.substr(0, e);
  const int exp = std::stoi(sci.substr(e + 1));
  const bool neg = mant[0] == '-';
  if (neg) mant.erase(0, 1);
  std::string digits;
  for (char c : mant)
    if (c != '.') digits += c;
  std::string out;
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      out = "0." + std::string(size_t(-exp - 1), '0') + digits;
    } else if (size_t(exp) + 1 >= digits.size()) {
      out = digits + std::string(exp + 1 - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    out += eb;
  }
  return neg ? "-" + out : out;
}

std::string py_repr_str(const std::string& s) {
  const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char q = dq ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == q)
      out += std::string("\\") + char(c);
    else if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else if (c == '\t')
      out += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    } else {
      out += char(c);
    }
  }
  return out + q;
}

std::string repr(const Value& v);
// Python str(): what {{ v }} prints.
std::string to_str(const Value& v) {
  switch (v.kind) {
    case Value::kUndefined: return "";
    case Value::kNone: return "None";
    case Value::kBool: return v.b ? "True" : "False";
    case Value::kInt: return std::to_string(v.i);
    case Value::kFloat: return py_float(v.f);
    case Value::kStr: return v.s;
    case Value::kList: {
      std::string out = v.tuple ? "(" : "[";
      for (size_t k = 0; k < v.list->size(); ++k) {
        out += (k ? ", " : "") + repr((*v.list)[k]);
        check_size(out.size());
      }
      if (v.tuple && v.list->size() == 1) out += ",";
      return out + (v.tuple ? ")" : "]");
    }
    case Value::kDict: {
      std::string out = v.dict->is_namespace ? "<Namespace {" : "{";
      bool first = true;
      for (const auto& [key, x] : v.dict->items) {
        out += (first ? "" : ", ") + repr(key) + ": " + repr(x);
        check_size(out.size());
        first = false;
      }
      return out + (v.dict->is_namespace ? "}>" : "}");
    }
    case Value::kFunc:
      if (v.fn->attrs) {  // jinja2's LoopContext.__repr__
        const Value *i = v.fn->attrs->find("index"), *n = v.fn->attrs->find("length");
        return str("<LoopContext ", i ? to_str(*i) : "", "/", n ? to_str(*n) : "", ">");
      }
      return "<function " + v.fn->name + ">";
  }
  return "";
}
std::string repr(const Value& v) {
  if (v.kind == Value::kUndefined) return "Undefined";
  return v.kind == Value::kStr ? py_repr_str(v.s) : to_str(v);
}

int compare(const Value& a, const Value& b);

void json_escape(const std::string& s, bool ensure_ascii, std::string& out) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = s[i];
    if (c == '"')
      out += "\\\"";
    else if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else if (c == '\t')
      out += "\\t";
    else if (c == '\b')
      out += "\\b";
    else if (c == '\f')
      out += "\\f";
    else if (c < 0x20 || (ensure_ascii && c >= 0x80)) {
      const size_t n = c < 0x80 ? 0 : utf8_char_len(s, i);
      uint32_t cp = c;
      if (n > 0) {
        size_t j = i;
        cp = utf8_next(s, j);
        i += n - 1;
      }
      char b[16];
      if (cp >= 0x10000) {
        cp -= 0x10000;
        std::snprintf(b, sizeof b, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
      } else {
        std::snprintf(b, sizeof b, "\\u%04x", cp);
      }
      out += b;
    } else {
      out += char(c);
    }
    ++i;
  }
  out += '"';
}

struct JsonStyle {
  int indent = -1;  // -1: one line
  std::string item_sep = ", ", key_sep = ": ";
  bool sort_keys = false, ensure_ascii = false;
};
// Python json.dumps.
void to_json(const Value& v, const JsonStyle& st, int level, std::string& out) {
  auto newline = [&](int lv) {
    if (st.indent >= 0) out += "\n" + std::string(size_t(st.indent) * lv, ' ');
  };
  switch (v.kind) {
    case Value::kNone: out += "null"; return;
    case Value::kBool: out += v.b ? "true" : "false"; return;
    case Value::kInt: out += std::to_string(v.i); return;
    case Value::kFloat:
      out += std::isnan(v.f) ? "NaN" : std::isinf(v.f) ? (v.f > 0 ? "Infinity" : "-Infinity") : py_float(v.f);
      return;
    case Value::kStr: json_escape(v.s, st.ensure_ascii, out); return;
    case Value::kList:
      if (v.list->empty()) {
        out += "[]";
        return;
      }
      out += "[";
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += st.item_sep;
        newline(level + 1);
        to_json((*v.list)[k], st, level + 1, out);
        check_size(out.size());
      }
      newline(level);
      out += "]";
      return;
    case Value::kDict: {
      if (v.dict->items.empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<Value, Value>*> items;
      for (const auto& kv : v.dict->items) items.push_back(&kv);
      // json.dumps sorts by the keys as they are (so 9 before 10), then writes them as strings.
      if (st.sort_keys)
        std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return compare(a->first, b->first) < 0; });
      out += "{";
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) out += st.item_sep;
        newline(level + 1);
        const Value& key = items[k]->first;
        switch (key.kind) {
          case Value::kStr: json_escape(key.s, st.ensure_ascii, out); break;
          case Value::kInt:
          case Value::kFloat:
          case Value::kBool:
          case Value::kNone: out += '"', to_json(key, st, level, out), out += '"'; break;
          default: fail(str("keys must be str, int, float, bool or None, not ", type_name(key)));
        }
        out += st.key_sep;
        to_json(items[k]->second, st, level + 1, out);
        check_size(out.size());
      }
      newline(level);
      out += "}";
      return;
    }
    case Value::kUndefined: fail("Object of type Undefined is not JSON serializable");
    case Value::kFunc: fail("Object of type function is not JSON serializable");
  }
}

Value from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value::none();
    case nlohmann::ordered_json::value_t::boolean: return Value::boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value::integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      return u > uint64_t(INT64_MAX) ? Value::real(double(u)) : Value::integer(int64_t(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return Value::real(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value::str(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List l;
      for (const auto& e : j) l.push_back(from_json(e));
      return Value::of_list(std::move(l));
    }
    case nlohmann::ordered_json::value_t::object: {
      auto d = std::make_shared<Dict>();
      for (const auto& [k, e] : j.items()) d->items.emplace_back(Value::str(k), from_json(e));
      return Value::of_dict(d);
    }
    default: return Value::none();  // binary / discarded: not produced by the JSON parser
  }
}

bool equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind != Value::kFloat && b.kind != Value::kFloat)
      return (a.kind == Value::kInt ? a.i : a.b) == (b.kind == Value::kInt ? b.i : b.b);
    return a.num() == b.num();
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::kUndefined:
    case Value::kNone: return true;
    case Value::kStr: return a.s == b.s;
    case Value::kList:
      if (a.list->size() != b.list->size()) return false;
      for (size_t k = 0; k < a.list->size(); ++k)
        if (!equal((*a.list)[k], (*b.list)[k])) return false;
      return true;
    case Value::kDict:
      if (a.dict->is_namespace || b.dict->is_namespace) return a.dict == b.dict;  // Python objects: identity
      if (a.dict->items.size() != b.dict->items.size()) return false;
      for (const auto& [k, v] : a.dict->items) {
        const Value* o = b.dict->find(k);
        if (!o || !equal(v, *o)) return false;
      }
      return true;
    case Value::kFunc: return a.fn == b.fn;
    default: return false;
  }
}

// Python's hash(): lists and dicts have none, a tuple has one if its items have; namespaces and functions hash by
// identity, undefined as jinja2's Undefined does. Returns the unhashable type's name, or null.
const char* unhashable(const Value& v) {
  if (v.kind == Value::kList) {
    if (!v.tuple) return "list";
    for (const Value& e : *v.list)
      if (const char* t = unhashable(e)) return t;
  }
  if (v.kind == Value::kDict && !v.dict->is_namespace) return "dict";
  return nullptr;
}
void require_hashable(const Value& v) {
  if (const char* t = unhashable(v)) fail(str("unhashable type: '", t, "'"));
}

// Dict keys compare with ==, except that a list (never a key) matches nothing, not even a tuple of the same items.
bool key_equal(const Value& a, const Value& b) {
  if (a.kind != Value::kList && b.kind != Value::kList) return equal(a, b);
  if (a.kind != b.kind || !a.tuple || !b.tuple || a.list->size() != b.list->size()) return false;
  for (size_t k = 0; k < a.list->size(); ++k)
    if (!key_equal((*a.list)[k], (*b.list)[k])) return false;
  return true;
}

// Python's <, for numbers, strings and lists; -1, 0, 1.
int compare(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) return a.num() < b.num() ? -1 : a.num() > b.num() ? 1 : 0;
  if (a.kind == Value::kStr && b.kind == Value::kStr) return a.s < b.s ? -1 : a.s > b.s ? 1 : 0;
  if (a.kind == Value::kList && b.kind == Value::kList) {
    for (size_t k = 0; k < std::min(a.list->size(), b.list->size()); ++k) {
      if (equal((*a.list)[k], (*b.list)[k])) continue;
      return compare((*a.list)[k], (*b.list)[k]);
    }
    return a.list->size() < b.list->size() ? -1 : a.list->size() > b.list->size() ? 1 : 0;
  }
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  fail(str("'<' not supported between instances of '", type_name(a), "' and '", type_name(b), "'"));
}

bool contains(const Value& container, const Value& x) {
  switch (container.kind) {
    case Value::kStr:
      if (x.kind != Value::kStr) fail(str("'in <string>' requires string as left operand, not ", type_name(x)));
      return container.s.find(x.s) != std::string::npos;
    case Value::kList:
      for (const Value& e : *container.list)
        if (equal(e, x)) return true;
      return false;
    case Value::kDict:
      require_hashable(x);  // Python's TypeError, as for a dict literal's key
      return container.dict->find(x) != nullptr;
    case Value::kUndefined: return false;  // jinja2's Undefined iterates as empty
    default: fail(str("argument of type '", type_name(container), "' is not iterable"));
  }
}

// The items a for loop (or a filter) walks: a list's elements, a dict's keys, a string's characters; undefined is
// empty, as in jinja2.
List iterate(const Value& v) {
  switch (v.kind) {
    case Value::kList: return *v.list;
    case Value::kDict: {
      List out;
      for (const auto& kv : v.dict->items) out.push_back(kv.first);
      return out;
    }
    case Value::kStr: {
      List out;
      for (auto& c : chars_of(v.s)) out.push_back(Value::str(std::move(c)));
      return out;
    }
    case Value::kUndefined: return {};
    default: fail(str("'", type_name(v), "' object is not iterable"));
  }
}

int64_t length(const Value& v) {
  switch (v.kind) {
    case Value::kStr: return int64_t(chars_of(v.s).size());
    case Value::kList: return int64_t(v.list->size());
    case Value::kDict: return int64_t(v.dict->items.size());
    case Value::kUndefined: return 0;
    default: fail(str("object of type '", type_name(v), "' has no len()"));
  }
}

int64_t as_int(const Value& v, const char* what) {
  if (v.kind == Value::kInt) return v.i;
  if (v.kind == Value::kBool) return v.b;
  if (v.is_undefined()) fail_undefined(v);
  fail(str(what, " must be an integer, not ", type_name(v)));
}

// ---------------------------------------------------------------------------------------------------------------
// Python string methods (on bytes for ASCII case changes; whitespace as str.split() sees it in ASCII)
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string py_strip(const std::string& s, const Value* chars, bool left, bool right) {
  auto in_set = [&](char c) {
    return chars && chars->kind == Value::kStr ? chars->s.find(c) != std::string::npos : is_space(c);
  };
  size_t a = 0, b = s.size();
  if (left)
    while (a < b && in_set(s[a])) ++a;
  if (right)
    while (b > a && in_set(s[b - 1])) --b;
  return s.substr(a, b - a);
}

List py_split(const std::string& s, const Value* sep, int64_t maxsplit) {
  List out;
  if (!sep || sep->kind == Value::kNone) {
    size_t i = 0;
    while (true) {
      while (i < s.size() && is_space(s[i])) ++i;
      if (i >= s.size()) break;
      if (maxsplit >= 0 && int64_t(out.size()) == maxsplit) {
        size_t e = s.size();
        while (e > i && is_space(s[e - 1])) --e;
        out.push_back(Value::str(s.substr(i, e - i)));
        break;
      }
      size_t j = i;
      while (j < s.size() && !is_space(s[j])) ++j;
      out.push_back(Value::str(s.substr(i, j - i)));
      i = j;
    }
    return out;
  }
  if (sep->kind != Value::kStr) fail("split(): the separator must be a string");
  if (sep->s.empty()) fail("split(): empty separator");
  size_t i = 0;
  while (true) {
    const size_t j = s.find(sep->s, i);
    if (j == std::string::npos || (maxsplit >= 0 && int64_t(out.size()) == maxsplit)) {
      out.push_back(Value::str(s.substr(i)));
      return out;
    }
    out.push_back(Value::str(s.substr(i, j - i)));
    i = j + sep->s.size();
  }
}

std::string py_replace(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  std::string out;
  if (from.empty()) {  // Python inserts `to` between characters and at both ends
    const auto cs = chars_of(s);
    int64_t n = 0;
    for (const auto& c : cs) {
      if (count < 0 || n < count) out += to, ++n;
      out += c;
      check_size(out.size());
    }
    if (count < 0 || n < count) out += to;
    return out;
  }
  size_t i = 0;
  int64_t n = 0;
  while (count < 0 || n < count) {
    const size_t j = s.find(from, i);
    if (j == std::string::npos) break;
    out += s.substr(i, j - i) + to;
    check_size(out.size());
    i = j + from.size();
    ++n;
  }
  return out + s.substr(i);
}

std::string ascii_case(std::string s, int mode) {  // 0 lower, 1 upper, 2 title, 3 capitalize
  bool start = true;
  for (size_t k = 0; k < s.size(); ++k) {
    char& c = s[k];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (mode == 0 || (mode == 3 && k > 0))
      c = char(std::tolower(static_cast<unsigned char>(c)));
    else if (mode == 1)
      c = char(std::toupper(static_cast<unsigned char>(c)));
    else if (mode == 2)
      c = char(start ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c)));
    else if (mode == 3)
      c = char(std::toupper(static_cast<unsigned char>(c)));
    start = !alpha;
  }
  return s;
}

// Python's ascii(): repr() with the non-ASCII characters escaped.
std::string py_ascii(const Value& v) {
  const std::string r = repr(v);
  std::string out;
  for (size_t i = 0; i < r.size();) {
    const size_t n = utf8_char_len(r, i);
    if (n <= 1) {  // ASCII, or an invalid byte: kept
      out += r[i++];
      continue;
    }
    const uint32_t cp = utf8_next(r, i);
    char b[16];
    std::snprintf(b, sizeof b, cp < 0x100 ? "\\x%02x" : cp < 0x10000 ? "\\u%04x" : "\\U%08x", cp);
    out += b;
  }
  return out;
}

// Python's printf-style formatting, `fmt % args` (the % operator on a string, and the format filter), as CPython's
// PyUnicode_Format does it, errors included. args is a tuple of values, a mapping for %(name)s (a dict, or what
// PyMapping_Check also accepts: a list, jinja2's Undefined), or one value.
std::string py_percent(const std::string& fmt, const Value& given) {
  const bool tuple = given.kind == Value::kList && given.tuple;
  const bool mapping = !tuple && ((given.kind == Value::kDict && !given.dict->is_namespace) ||
                                  given.kind == Value::kList || given.kind == Value::kUndefined);
  Value args = given;  // %(name)... replaces it by the mapping's item
  int64_t arglen = tuple ? int64_t(given.list->size()) : -1, argidx = tuple ? 0 : -2;
  auto next_arg = [&]() -> Value {
    if (argidx >= arglen) fail("not enough arguments for format string");
    ++argidx;
    return arglen < 0 ? args : (*args.list)[size_t(argidx - 1)];
  };
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  std::string out;
  size_t i = 0;
  auto get = [&]() -> char {
    if (i >= fmt.size()) fail("incomplete format");
    return fmt[i++];
  };
  while (i < fmt.size()) {
    const size_t pct = fmt.find('%', i);
    out.append(fmt, i, pct == std::string::npos ? std::string::npos : pct - i);
    if (pct == std::string::npos) break;
    i = pct + 1;
    char c = get();
    if (c == '%') {
      out += '%';
      continue;
    }
    if (c == '(') {
      if (!mapping) fail("format requires a mapping");
      const size_t start = i;
      for (int open = 1; open > 0;) {
        if (i >= fmt.size()) fail("incomplete format key");
        open += fmt[i] == '(' ? 1 : fmt[i] == ')' ? -1 : 0;
        ++i;
      }
      const std::string key = fmt.substr(start, i - 1 - start);
      if (given.kind == Value::kUndefined) fail_undefined(given);
      if (given.kind == Value::kList) fail("list indices must be integers or slices, not str");
      const Value* item = given.dict->find(key);
      if (!item) fail(py_repr_str(key));  // Python's KeyError
      args = *item, arglen = -1, argidx = -2;
      c = get();
    }
    bool ljust = false, plus = false, blank = false, alt = false, zero = false;
    for (;; c = get()) {
      if (c == '-')
        ljust = true;
      else if (c == '+')
        plus = true;
      else if (c == ' ')
        blank = true;
      else if (c == '#')
        alt = true;
      else if (c == '0')
        zero = true;
      else
        break;
    }
    // Width and precision: digits, or * for the next argument. Beyond the output bound nothing could render.
    auto star = [&]() {
      const Value v = next_arg();
      if (v.kind != Value::kInt && v.kind != Value::kBool) fail("* wants int");
      const int64_t x = v.kind == Value::kInt ? v.i : v.b;
      check_size(size_t(x < 0 ? -std::max<int64_t>(x, -int64_t(kMaxOutput) - 1) : x));
      return x;
    };
    int64_t width = -1, prec = -1;
    if (c == '*') {
      width = star();
      if (width < 0) ljust = true, width = -width;
      c = get();
    } else if (digit(c)) {
      for (width = c - '0'; digit(c = get());) {
        width = width * 10 + (c - '0');
        check_size(size_t(width));
      }
    }
    if (c == '.') {
      prec = 0;
      c = get();
      if (c == '*') {
        prec = std::max<int64_t>(star(), 0);
        c = get();
      } else if (digit(c)) {
        for (prec = c - '0'; digit(c = get());) {
          prec = prec * 10 + (c - '0');
          if (prec > INT32_MAX) fail("precision too big");
        }
      }
    }
    if (c == 'h' || c == 'l' || c == 'L') c = get();
    const Value v = next_arg();
    std::string body;      // the converted value, before padding
    bool numeric = false;  // a number: the sign and 0 flags apply
    switch (c) {
      case 's': body = to_str(v); break;
      case 'r': body = repr(v); break;
      case 'a': body = py_ascii(v); break;
      case 'd':
      case 'i':
      case 'u':
      case 'o':
      case 'x':
      case 'X': {
        const bool based = c == 'o' || c == 'x' || c == 'X';
        if (v.is_undefined() && !based) fail_undefined(v);  // int(Undefined) raises; Undefined has no __index__
        if (!v.is_number() || (based && v.kind == Value::kFloat))
          fail(str("%", c, " format: ", based ? "an integer" : "a real number", " is required, not ", type_name(v)));
        std::string digits;
        bool neg = false;
        if (v.kind == Value::kFloat) {  // int(x): any size, so printed from the double
          if (std::isnan(v.f)) fail("cannot convert float NaN to integer");
          if (std::isinf(v.f)) fail("cannot convert float infinity to integer");
          const double t = std::trunc(v.f);
          neg = t < 0;
          char b[400];
          std::snprintf(b, sizeof b, "%.0f", std::fabs(t));
          digits = b;
        } else {
          const int64_t x = v.kind == Value::kInt ? v.i : v.b;
          neg = x < 0;
          uint64_t m = neg ? 0 - uint64_t(x) : uint64_t(x);
          const int base = c == 'o' ? 8 : based ? 16 : 10;
          do digits.insert(digits.begin(), "0123456789abcdef"[m % base]);
          while (m /= base);
        }
        if (prec > int64_t(digits.size())) {
          check_size(size_t(prec));
          digits.insert(0, size_t(prec) - digits.size(), '0');
        }
        body = std::string(neg ? "-" : "") + (alt && based ? std::string("0") + (c == 'o' ? 'o' : 'x') : "") + digits;
        if (c == 'X') body = ascii_case(body, 1);
        numeric = true;
        break;
      }
      case 'e':
      case 'E':
      case 'f':
      case 'F':
      case 'g':
      case 'G': {
        if (v.is_undefined()) fail_undefined(v);
        if (!v.is_number()) fail(str("must be real number, not ", type_name(v)));
        const double x = v.num();
        const bool upper = c == 'E' || c == 'F' || c == 'G';
        if (std::isnan(x) || std::isinf(x)) {  // Python's spelling: no sign on nan
          body = std::isnan(x) ? "nan" : x < 0 ? "-inf" : "inf";
          if (upper) body = ascii_case(body, 1);
        } else {
          const int p = int(prec < 0 ? 6 : prec);
          check_size(size_t(p));
          const std::string f = std::string("%") + (alt ? "#" : "") + ".*" + c;  // C's printf spells floats as Python
          body.resize(size_t(std::snprintf(nullptr, 0, f.c_str(), p, x)));
          std::snprintf(body.data(), body.size() + 1, f.c_str(), p, x);
        }
        numeric = true;
        break;
      }
      case 'c':
        if (v.kind == Value::kStr && chars_of(v.s).size() == 1) {
          body = v.s;
        } else if (v.kind == Value::kInt || v.kind == Value::kBool) {
          const int64_t x = v.kind == Value::kInt ? v.i : v.b;
          if (x < 0 || x > 0x10FFFF) fail("%c arg not in range(0x110000)");
          utf8_append(body, uint32_t(x));
        } else {
          fail("%c requires int or char");
        }
        break;
      default: {
        const size_t at = i - 1;
        size_t j = at;
        const uint32_t cp = utf8_char_len(fmt, at) > 0 ? utf8_next(fmt, j) : static_cast<unsigned char>(fmt[at]);
        char hex[16];
        std::snprintf(hex, sizeof hex, "%x", cp);
        fail(str("unsupported format character '", cp >= 31 && cp <= 126 ? char(cp) : '?', "' (0x", hex, ") at index ",
                 chars_of(fmt.substr(0, at)).size()));
      }
    }
    // Padding, as CPython's unicode_format_arg_output: the sign and a 0x / 0o prefix go before zeros, after spaces.
    const char fill = numeric && zero ? '0' : ' ';
    const auto chars = chars_of(body);
    int64_t len = int64_t(chars.size());
    if ((c == 's' || c == 'r' || c == 'a') && prec >= 0 && len > prec) len = prec;
    size_t at = 0;  // next character of body to write
    char sign = 0;
    if (numeric) {
      if (body[0] == '-' || body[0] == '+')
        sign = body[0], --len, ++at;
      else if (plus)
        sign = '+';
      else if (blank)
        sign = ' ';
    }
    if (width < len) width = len;
    std::string res;
    if (sign) {
      if (fill != ' ') res += sign;
      if (width > len) --width;
    }
    const bool prefix = alt && (c == 'x' || c == 'X' || c == 'o');
    if (prefix) {
      if (fill != ' ') res += body.substr(at, 2), at += 2;
      width = std::max<int64_t>(width - 2, 0);
      len -= 2;
    }
    if (width > len && !ljust) {
      res.append(size_t(width - len), fill);
      width = len;
    }
    if (fill == ' ') {
      if (sign) res += sign;
      if (prefix) res += body.substr(at, 2), at += 2;
    }
    for (int64_t k = 0; k < len; ++k) res += chars[at + size_t(k)];
    if (width > len) res.append(size_t(width - len), ' ');
    out += res;
    check_size(out.size());
  }
  if (argidx < arglen && !mapping) fail("not all arguments converted during string formatting");
  return out;
}

// Python slicing of n items: the indices it selects.
std::vector<int64_t> slice_indices(int64_t n, const Value& start, const Value& stop, const Value& step) {
  const int64_t st = step.kind == Value::kNone || step.is_undefined() ? 1 : as_int(step, "slice step");
  if (st == 0) fail("slice step cannot be zero");
  auto norm = [&](const Value& v, int64_t dflt) {
    if (v.kind == Value::kNone || v.is_undefined()) return dflt;
    int64_t x = as_int(v, "slice index");
    if (x < 0) x += n;
    if (st > 0) return std::clamp<int64_t>(x, 0, n);
    return std::clamp<int64_t>(x, -1, n - 1);
  };
  const int64_t a = norm(start, st > 0 ? 0 : n - 1), b = norm(stop, st > 0 ? n : -1);
  std::vector<int64_t> out;
  for (int64_t k = a; st > 0 ? k < b : k > b; k += st) out.push_back(k);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Template source -> pieces (text, {{ expression }}, {% statement %}), with jinja's whitespace rules.
struct Piece {
  enum Kind { kText, kVar, kBlock } kind;
  std::string text;  // the text, or the tag's inside
  int line;
};

struct Token {
  enum Kind { kName, kInt, kFloat, kStr, kOp, kEnd } kind;
  std::string text;  // name, operator, or decoded string
  int64_t i = 0;
  double f = 0;
};

std::vector<Piece> split_template(const std::string& src, const std::string& origin) {
  std::vector<Piece> out;
  size_t pos = 0;
  int line = 1;
  bool strip_next = false, trim_newline = false;
  auto count_lines = [&](size_t a, size_t b) {
    line += int(std::count(src.begin() + long(a), src.begin() + long(b), '\n'));
  };
  while (pos <= src.size()) {
    size_t k = pos;
    while (true) {
      k = src.find('{', k);
      if (k == std::string::npos || k + 1 >= src.size()) {
        k = std::string::npos;
        break;
      }
      const char c = src[k + 1];
      if (c == '{' || c == '%' || c == '#') break;
      ++k;
    }
    const size_t end = k == std::string::npos ? src.size() : k;
    size_t a = pos, b = end;
    if (strip_next) {
      while (a < b && is_space(src[a])) ++a;
    } else if (trim_newline) {
      if (a < b && src[a] == '\n')
        ++a;
      else if (a + 1 < b && src[a] == '\r' && src[a + 1] == '\n')
        a += 2;
    }
    const int text_line = line;
    if (k != std::string::npos) {
      const char kind = src[k + 1];
      const char marker = k + 2 < src.size() ? src[k + 2] : '\0';
      if (marker == '-') {
        while (b > a && is_space(src[b - 1])) --b;
      } else if (kind != '{' && marker != '+') {  // lstrip_blocks
        size_t j = b;
        while (j > a && (src[j - 1] == ' ' || src[j - 1] == '\t')) --j;
        if (j == 0 || src[j - 1] == '\n') b = j;
      }
    }
    if (b > a) out.push_back({Piece::kText, src.substr(a, b - a), text_line});
    count_lines(pos, end);
    if (k == std::string::npos) break;
    const char kind = src[k + 1];
    const int tag_line = line;
    size_t body = k + 2;
    if (body < src.size() && (src[body] == '-' || src[body] == '+')) ++body;
    // Find the closing delimiter outside string literals and brackets (jinja2's lexer skips an end token while
    // brackets are open, so {{ {'a': {'b': 1}} }} is one tag).
    const std::string close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    size_t e = body;
    char quote = 0;
    int open = 0;
    for (; e < src.size(); ++e) {
      const char c = src[e];
      if (kind == '#') {
        if (src.compare(e, 2, close) == 0) break;
        continue;
      }
      if (quote) {
        if (c == '\\')
          ++e;
        else if (c == quote)
          quote = 0;
      } else if (c == '\'' || c == '"') {
        quote = c;
      } else if (open <= 0 && src.compare(e, 2, close) == 0) {
        break;
      } else if (c == '(' || c == '[' || c == '{') {
        ++open;
      } else if (c == ')' || c == ']' || c == '}') {
        --open;
      }
    }
    if (e >= src.size())
      throw FormatError(str(origin, " line ", tag_line, ": unclosed '", src.substr(k, 2), "' (no '", close, "')"));
    size_t inner_end = e;
    strip_next = false, trim_newline = false;
    if (inner_end > body && src[inner_end - 1] == '-') {
      --inner_end, strip_next = true;
    } else if (inner_end > body && src[inner_end - 1] == '+') {
      --inner_end;
    } else if (kind != '{') {
      trim_newline = true;  // trim_blocks
    }
    std::string inner = src.substr(body, inner_end - body);
    count_lines(k, e + 2);
    pos = e + 2;
    if (kind == '#') continue;
    if (kind == '%') {
      // {% raw %} ... {% endraw %}: the text between, verbatim.
      const std::string t = py_strip(inner, nullptr, true, true);
      if (t == "raw") {
        size_t r = pos;
        while (true) {
          r = src.find("{%", r);
          if (r == std::string::npos)
            throw FormatError(str(origin, " line ", tag_line, ": {% raw %} without {% endraw %}"));
          size_t q = r + 2;
          const bool strip_before = q < src.size() && src[q] == '-';
          if (strip_before || (q < src.size() && src[q] == '+')) ++q;
          while (q < src.size() && is_space(src[q])) ++q;
          if (src.compare(q, 6, "endraw") == 0) {
            size_t z = q + 6;
            while (z < src.size() && is_space(src[z])) ++z;
            bool strip_after = false;
            if (z < src.size() && (src[z] == '-' || src[z] == '+')) strip_after = src[z] == '-', ++z;
            if (src.compare(z, 2, "%}") == 0) {
              std::string raw = src.substr(pos, r - pos);
              if (trim_newline && !raw.empty() && raw[0] == '\n') raw.erase(0, 1);
              if (strip_before)
                while (!raw.empty() && is_space(raw.back())) raw.pop_back();
              if (!raw.empty()) out.push_back({Piece::kText, raw, line});
              count_lines(pos, z + 2);
              pos = z + 2;
              strip_next = strip_after, trim_newline = !strip_after;
              break;
            }
          }
          r += 2;
        }
        continue;
      }
    }
    out.push_back({kind == '{' ? Piece::kVar : Piece::kBlock, std::move(inner), tag_line});
  }
  return out;
}

// Inside a tag: names, numbers, strings (Python escapes), operators.
std::vector<Token> tokenize(const std::string& s, const std::string& where) {
  std::vector<Token> out;
  size_t i = 0;
  auto bad = [&](const std::string& m) { throw FormatError(str(where, ": ", m)); };
  while (i < s.size()) {
    const char c = s[i];
    if (is_space(c)) {
      ++i;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      out.push_back({Token::kName, s.substr(i, j - i)});
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      bool is_float = false;
      if (j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
        is_float = true;
        ++j;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      }
      if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
        size_t q = j + 1;
        if (q < s.size() && (s[q] == '+' || s[q] == '-')) ++q;
        if (q < s.size() && std::isdigit(static_cast<unsigned char>(s[q]))) {
          is_float = true;
          j = q;
          while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
        }
      }
      std::string num;
      for (size_t k = i; k < j; ++k)
        if (s[k] != '_') num += s[k];
      Token t{is_float ? Token::kFloat : Token::kInt, num};
      if (is_float) {
        t.f = std::strtod(num.c_str(), nullptr);
      } else {
        auto r = std::from_chars(num.data(), num.data() + num.size(), t.i);
        if (r.ec != std::errc()) bad("integer literal out of range: " + num);
      }
      out.push_back(t);
      i = j;
    } else if (c == '\'' || c == '"') {
      std::string v;
      size_t j = i + 1;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] != '\\' || j + 1 >= s.size()) {
          v += s[j];
          continue;
        }
        const char e = s[++j];
        switch (e) {
          case 'n': v += '\n'; break;
          case 't': v += '\t'; break;
          case 'r': v += '\r'; break;
          case 'b': v += '\b'; break;
          case 'f': v += '\f'; break;
          case 'v': v += '\v'; break;
          case 'a': v += '\a'; break;
          case '0': v += '\0'; break;
          case '\\': v += '\\'; break;
          case '\'': v += '\''; break;
          case '"': v += '"'; break;
          case '\n': break;  // line continuation
          case 'x':
          case 'u':
          case 'U': {
            const size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            if (j + n >= s.size()) bad("truncated \\" + std::string(1, e) + " escape");
            uint32_t cp = 0;
            for (size_t k = 1; k <= n; ++k) {
              const char h = s[j + k];
              if (!std::isxdigit(static_cast<unsigned char>(h))) bad("bad \\" + std::string(1, e) + " escape");
              cp = cp * 16 +
                   uint32_t(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
            }
            if (cp > 0x10FFFF) bad("escape past U+10FFFF");
            utf8_append(v, cp);
            j += n;
            break;
          }
          default: v += '\\', v += e;  // Python keeps unknown escapes
        }
      }
      if (j >= s.size()) bad("unterminated string literal");
      out.push_back({Token::kStr, std::move(v)});
      i = j + 1;
    } else {
      static const char* const ops[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "|",
                                        ".",  ",",  ":",  "(",  ")",  "[",  "]", "{", "}", "<", ">", "="};
      bool found = false;
      for (const char* op : ops) {
        const size_t n = std::strlen(op);
        if (s.compare(i, n, op) == 0) {
          out.push_back({Token::kOp, op});
          i += n;
          found = true;
          break;
        }
      }
      if (!found) bad(str("unexpected character '", c, "'"));
    }
  }
  out.push_back({Token::kEnd, ""});
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Syntax tree and evaluation
using Frame = std::unordered_map<std::string, Value>;
struct State {
  std::vector<std::shared_ptr<Frame>> frames;  // innermost last; frames[0] holds the template's variables
  const Frame* globals = nullptr;
  std::string* out = nullptr;
  int line = 0;
  int depth = 0;       // macro calls in progress
  int eval_depth = 0;  // Expr evaluations in progress (the C++ stack they take)
  int64_t steps = 0;
  // What f writes, as a string: set blocks, filter blocks, macro calls and recursive loop calls render this way.
  template <typename F>
  std::string capture(F&& f) {
    std::string buf, *saved = out;
    out = &buf;
    f();
    out = saved;
    return buf;
  }
  void step(int64_t n = 1) {
    steps += n;
    if (steps > kMaxSteps) fail(str("more than ", kMaxSteps, " loop iterations"));
  }
  Value lookup(const std::string& name) const {
    for (auto it = frames.rbegin(); it != frames.rend(); ++it) {
      auto f = (*it)->find(name);
      if (f != (*it)->end()) return f->second;
    }
    auto g = globals->find(name);
    if (g != globals->end()) return g->second;
    return Value::undefined("'" + name + "' is undefined");
  }
  void assign(const std::string& name, Value v) { (*frames.back())[name] = std::move(v); }
  void emit(const std::string& s) {
    *out += s;
    if (out->size() > kMaxOutput) fail(str("output larger than ", kMaxOutput >> 20, " MiB"));
  }
};

struct Expr {
  int line = 0;
  virtual ~Expr() = default;
  virtual Value eval(State& st) const = 0;
  Value operator()(State& st) const {
    st.line = line;
    if (++st.eval_depth > kMaxEvalDepth) fail(str("expressions nested deeper than ", kMaxEvalDepth));
    Value v = eval(st);
    --st.eval_depth;
    return v;
  }
};
using ExprPtr = std::unique_ptr<Expr>;

struct Literal : Expr {
  Value v;
  Value eval(State&) const override { return v; }
};
struct Name : Expr {
  std::string name;
  Value eval(State& st) const override { return st.lookup(name); }
};
struct ListExpr : Expr {
  std::vector<ExprPtr> items;
  bool tuple = false;
  Value eval(State& st) const override {
    List l;
    for (const auto& e : items) l.push_back((*e)(st));
    return tuple ? Value::of_tuple(std::move(l)) : Value::of_list(std::move(l));
  }
};
struct DictExpr : Expr {
  std::vector<std::pair<ExprPtr, ExprPtr>> items;
  Value eval(State& st) const override {
    auto d = std::make_shared<Dict>();
    for (const auto& [k, v] : items) {
      Value key = (*k)(st);
      Value val = (*v)(st);
      st.line = line;
      require_hashable(key);
      d->set(std::move(key), std::move(val));
    }
    return Value::of_dict(d);
  }
};

Value call_value(State& st, const Value& f, List& args, Kwargs& kwargs) {
  if (f.kind == Value::kFunc) return f.fn->call(st, args, kwargs);
  if (f.is_undefined()) fail_undefined(f);
  fail(str("'", type_name(f), "' object is not callable"));
}

// Argument access for builtins: positional k, else keyword `name`, else undefined.
const Value* arg(const List& args, const Kwargs& kwargs, size_t k, const char* name) {
  if (k < args.size()) return &args[k];
  for (const auto& [n, v] : kwargs)
    if (n == name) return &v;
  return nullptr;
}

Value method(const Value& obj, const std::string& name);

// jinja2's object_type_repr: how its undefined-value messages name an object.
std::string object_type_repr(const Value& v) {
  if (v.kind == Value::kNone) return "None";
  if (v.kind == Value::kFunc && v.fn->attrs) return "jinja2.runtime.LoopContext object";
  return str(type_name(v), " object");
}

// obj.name: jinja2 tries the attribute (a method) first, then the item.
Value get_attr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) fail_undefined(obj);
  if (obj.kind == Value::kFunc && obj.fn->attrs) {
    if (const Value* v = obj.fn->attrs->find(name)) return *v;
  }
  Value m = method(obj, name);
  if (!m.is_undefined()) return m;
  if (obj.kind == Value::kDict) {
    if (const Value* v = obj.dict->find(name)) return *v;
  }
  return Value::undefined(str("'", object_type_repr(obj), "' has no attribute '", name, "'"));
}

// obj[key]: the item first, then the attribute. An unhashable key finds nothing (jinja2 catches Python's TypeError).
Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) fail_undefined(obj);
  if (obj.kind == Value::kDict && !unhashable(key)) {
    if (const Value* v = obj.dict->find(key)) return *v;
  } else if ((obj.kind == Value::kList || obj.kind == Value::kStr) &&
             (key.kind == Value::kInt || key.kind == Value::kBool)) {
    int64_t k = key.kind == Value::kInt ? key.i : key.b;
    if (obj.kind == Value::kList) {
      const int64_t n = int64_t(obj.list->size());
      if (k < 0) k += n;
      if (k >= 0 && k < n) return (*obj.list)[size_t(k)];
    } else {
      const auto cs = chars_of(obj.s);
      const int64_t n = int64_t(cs.size());
      if (k < 0) k += n;
      if (k >= 0 && k < n) return Value::str(cs[size_t(k)]);
    }
    return Value::undefined(str(type_name(obj), " object has no element ", key.kind == Value::kInt ? key.i : key.b));
  }
  if (key.kind == Value::kStr) return get_attr(obj, key.s);
  return Value::undefined(str(object_type_repr(obj), " has no element ", repr(key)));
}

struct GetAttr : Expr {
  ExprPtr obj;
  std::string name;
  Value eval(State& st) const override {
    Value o = (*obj)(st);
    st.line = line;
    return get_attr(o, name);
  }
};
struct GetItem : Expr {
  ExprPtr obj, key;
  Value eval(State& st) const override {
    Value o = (*obj)(st);
    Value k = (*key)(st);
    st.line = line;
    return get_item(o, k);
  }
};
struct Slice : Expr {
  ExprPtr obj, start, stop, step;  // any may be null
  Value eval(State& st) const override {
    Value o = (*obj)(st);
    auto opt = [&](const ExprPtr& e) { return e ? (*e)(st) : Value::none(); };
    Value a = opt(start), b = opt(stop), c = opt(step);
    st.line = line;
    if (o.is_undefined()) fail_undefined(o);
    if (o.kind == Value::kList) {
      List l;
      for (int64_t k : slice_indices(int64_t(o.list->size()), a, b, c)) l.push_back((*o.list)[size_t(k)]);
      return Value::of_list(std::move(l));
    }
    if (o.kind == Value::kStr) {
      const auto cs = chars_of(o.s);
      std::string s;
      for (int64_t k : slice_indices(int64_t(cs.size()), a, b, c)) s += cs[size_t(k)];
      return Value::str(std::move(s));
    }
    fail(str("'", type_name(o), "' object is not subscriptable"));
  }
};

// The arguments of a call or a filter, evaluated in order.
struct CallArgs {
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  void eval(State& st, List& a, Kwargs& kw) const {
    for (const auto& e : args) a.push_back((*e)(st));
    for (const auto& [n, e] : kwargs) kw.emplace_back(n, (*e)(st));
  }
};

struct Call : Expr {
  ExprPtr callee;
  CallArgs call;
  Value eval(State& st) const override {
    Value f = (*callee)(st);
    List a;
    Kwargs kw;
    call.eval(st, a, kw);
    st.line = line;
    return call_value(st, f, a, kw);
  }
};

using FilterFn = std::function<Value(State&, const Value&, List&, Kwargs&)>;
using TestFn = std::function<bool(State&, const Value&, List&)>;
const std::map<std::string, FilterFn>& filters();
const std::map<std::string, TestFn>& tests();

// An unknown filter or test (fn null) fails when evaluated: the parser lets that happen only where jinja2 defers the
// error to run time (inside an if statement or a conditional expression), so a branch not taken renders.
struct FilterExpr : Expr {
  ExprPtr value;
  const FilterFn* fn = nullptr;
  std::string name;
  CallArgs call;
  Value eval(State& st) const override {
    if (!fn) fail(str("No filter named '", name, "' found."));  // jinja2's TemplateRuntimeError
    Value v = (*value)(st);
    List a;
    Kwargs kw;
    call.eval(st, a, kw);
    st.line = line;
    return (*fn)(st, v, a, kw);
  }
};
struct TestExpr : Expr {
  ExprPtr value;
  const TestFn* fn = nullptr;
  std::string name;
  std::vector<ExprPtr> args;
  bool negate = false;
  Value eval(State& st) const override {
    if (!fn) fail(str("No test named '", name, "' found."));
    Value v = (*value)(st);
    List a;
    for (const auto& e : args) a.push_back((*e)(st));
    st.line = line;
    return Value::boolean((*fn)(st, v, a) != negate);
  }
};

struct Not : Expr {
  ExprPtr e;
  Value eval(State& st) const override { return Value::boolean(!truthy((*e)(st))); }
};
Value arith(const std::string& op, const Value& a, const Value& b);

struct Neg : Expr {
  ExprPtr e;
  bool minus = true;
  Value eval(State& st) const override {
    Value v = (*e)(st);
    st.line = line;
    if (v.kind == Value::kInt || v.kind == Value::kBool)  // 0 - v: arith's overflow check covers -INT64_MIN
      return minus ? arith("-", Value::integer(0), v) : Value::integer(v.kind == Value::kInt ? v.i : v.b);
    if (v.kind == Value::kFloat) return Value::real(minus ? -v.f : v.f);
    if (v.is_undefined()) fail_undefined(v);
    fail(str("bad operand type for unary ", minus ? "-" : "+", ": '", type_name(v), "'"));
  }
};
struct AndOr : Expr {
  ExprPtr a, b;
  bool is_and = true;
  Value eval(State& st) const override {
    Value x = (*a)(st);
    if (truthy(x) != is_and) return x;  // Python returns the deciding operand
    return (*b)(st);
  }
};
struct CondExpr : Expr {
  ExprPtr cond, yes, no;  // no may be null: undefined
  Value eval(State& st) const override {
    if (truthy((*cond)(st))) return (*yes)(st);
    return no ? (*no)(st) : Value::undefined("the conditional expression's else branch is undefined");
  }
};

Value arith(const std::string& op, const Value& a, const Value& b) {
  if (op == "%" && a.kind == Value::kStr) return Value::str(py_percent(a.s, b));  // str.__mod__ takes any operand
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  const bool ints =
      (a.kind == Value::kInt || a.kind == Value::kBool) && (b.kind == Value::kInt || b.kind == Value::kBool);
  const int64_t x = a.kind == Value::kInt ? a.i : a.b, y = b.kind == Value::kInt ? b.i : b.b;
  if (op == "+") {
    if (a.kind == Value::kStr && b.kind == Value::kStr) {
      check_size(a.s.size() + b.s.size());
      return Value::str(a.s + b.s);
    }
    if (a.kind == Value::kList && b.kind == Value::kList) {
      List l = *a.list;
      l.insert(l.end(), b.list->begin(), b.list->end());
      return Value::of_list(std::move(l));
    }
  }
  if (op == "*") {
    const Value* seq = a.kind == Value::kStr || a.kind == Value::kList   ? &a
                       : b.kind == Value::kStr || b.kind == Value::kList ? &b
                                                                         : nullptr;
    const Value* cnt = seq == &a ? &b : &a;
    if (seq && (cnt->kind == Value::kInt || cnt->kind == Value::kBool)) {
      const int64_t n = std::max<int64_t>(0, cnt->kind == Value::kInt ? cnt->i : cnt->b);
      const int64_t unit = seq->kind == Value::kStr ? int64_t(seq->s.size()) : int64_t(seq->list->size());
      const int64_t bound = seq->kind == Value::kStr ? int64_t(kMaxOutput) : int64_t(kMaxItems);
      if (unit > 0 && n > bound / unit) fail("repetition too large");
      if (seq->kind == Value::kStr) {
        std::string s;
        for (int64_t k = 0; k < n; ++k) s += seq->s;
        return Value::str(std::move(s));
      }
      List l;
      for (int64_t k = 0; k < n; ++k) l.insert(l.end(), seq->list->begin(), seq->list->end());
      return Value::of_list(std::move(l));
    }
  }
  if (!a.is_number() || !b.is_number())
    fail(str("unsupported operand type(s) for ", op, ": '", type_name(a), "' and '", type_name(b), "'"));
  if (op == "/") {
    if (b.num() == 0) fail("division by zero");
    return Value::real(a.num() / b.num());
  }
  if (ints) {
    auto ovf = [](bool o) {
      if (o) fail("integer overflow");
    };
    int64_t r = 0;
    if (op == "+")
      ovf(__builtin_add_overflow(x, y, &r));
    else if (op == "-")
      ovf(__builtin_sub_overflow(x, y, &r));
    else if (op == "*")
      ovf(__builtin_mul_overflow(x, y, &r));
    else if (op == "//" || op == "%") {
      if (y == 0) fail("integer division or modulo by zero");
      if (x == INT64_MIN && y == -1) fail("integer overflow");
      int64_t q = x / y, m = x % y;
      if (m != 0 && ((m < 0) != (y < 0))) --q, m += y;  // Python floors
      r = op == "//" ? q : m;
    } else if (op == "**") {
      if (y < 0) return Value::real(std::pow(double(x), double(y)));
      r = 1;
      for (int64_t k = 0; k < y; ++k) {
        ovf(__builtin_mul_overflow(r, x, &r));
        if (r == 0 || r == 1) break;
        if (r == -1) {
          r = (y - k - 1) % 2 == 0 ? -1 : 1;
          break;
        }
      }
    }
    return Value::integer(r);
  }
  const double p = a.num(), q = b.num();
  if (op == "+") return Value::real(p + q);
  if (op == "-") return Value::real(p - q);
  if (op == "*") return Value::real(p * q);
  if (op == "**") return Value::real(std::pow(p, q));
  if (q == 0) fail("float division by zero");
  const double m = std::fmod(p, q);
  const double mod = (m != 0 && ((m < 0) != (q < 0))) ? m + q : m;
  if (op == "%") return Value::real(mod);
  return Value::real(std::floor(p / q));
}

struct Binary : Expr {
  std::string op;
  ExprPtr a, b;
  Value eval(State& st) const override {
    Value x = (*a)(st), y = (*b)(st);
    st.line = line;
    if (op == "~") {
      std::string l = to_str(x), r = to_str(y);
      check_size(l.size() + r.size());
      return Value::str(l + r);
    }
    return arith(op, x, y);
  }
};

// a < b <= c ...: Python's chained comparison.
struct Compare : Expr {
  ExprPtr first;
  std::vector<std::pair<std::string, ExprPtr>> rest;
  Value eval(State& st) const override {
    Value left = (*first)(st);
    for (const auto& [op, e] : rest) {
      Value right = (*e)(st);
      st.line = line;
      bool ok;
      if (op == "==")
        ok = equal(left, right);
      else if (op == "!=")
        ok = !equal(left, right);
      else if (op == "in")
        ok = contains(right, left);
      else if (op == "not in")
        ok = !contains(right, left);
      else {
        const int c = compare(left, right);
        ok = op == "<" ? c < 0 : op == "<=" ? c <= 0 : op == ">" ? c > 0 : c >= 0;
      }
      if (!ok) return Value::boolean(false);
      left = std::move(right);
    }
    return Value::boolean(true);
  }
};

// Statements
enum class Flow { kNormal, kBreak, kContinue };
struct Stmt {
  int line = 0;
  virtual ~Stmt() = default;
  virtual Flow exec(State& st) const = 0;
};
using StmtPtr = std::unique_ptr<Stmt>;

}  // namespace

struct Body {
  std::vector<StmtPtr> stmts;
  Flow exec(State& st) const {
    // Bodies inside bodies count with the expressions: a recursive macro nests both.
    if (++st.eval_depth > kMaxEvalDepth) fail(str("blocks and expressions nested deeper than ", kMaxEvalDepth));
    for (const auto& s : stmts) {
      st.line = s->line;
      const Flow f = s->exec(st);
      if (f != Flow::kNormal) {
        --st.eval_depth;
        return f;
      }
    }
    --st.eval_depth;
    return Flow::kNormal;
  }
};
namespace {
// {% filter f %}body{% endfilter %}: the body rendered to a string, then filtered (the filters wrap this node).
struct BodyExpr : Expr {
  Body body;
  Value eval(State& st) const override {
    return Value::str(st.capture([&] { body.exec(st); }));
  }
};

struct TextStmt : Stmt {
  std::string text;
  Flow exec(State& st) const override {
    st.emit(text);
    return Flow::kNormal;
  }
};
struct OutputStmt : Stmt {
  ExprPtr e;
  Flow exec(State& st) const override {
    st.emit(to_str((*e)(st)));
    return Flow::kNormal;
  }
};
struct IfStmt : Stmt {
  std::vector<std::pair<ExprPtr, Body>> branches;  // else: a null condition
  Flow exec(State& st) const override {
    for (const auto& [cond, body] : branches) {
      if (cond && !truthy((*cond)(st))) continue;
      return body.exec(st);
    }
    return Flow::kNormal;
  }
};

void bind_targets(State& st, const std::vector<std::string>& names, const Value& v) {
  if (names.size() == 1) {
    st.assign(names[0], v);
    return;
  }
  List items = iterate(v);
  if (items.size() != names.size()) fail(str("cannot unpack ", items.size(), " values into ", names.size(), " names"));
  for (size_t k = 0; k < names.size(); ++k) st.assign(names[k], items[k]);
}

// Every iteration runs in a fresh frame, so a `set` inside the loop body is not seen by the next iteration or after
// the loop (jinja2's scoping; templates carry state across iterations in a namespace()). In a recursive loop the body
// may call loop(items): the same loop over those items one level deeper, in the scope where the loop started,
// rendered to a string. Those calls count with macro calls against kMaxCallDepth.
struct ForStmt : Stmt {
  using Scope = std::vector<std::weak_ptr<Frame>>;  // weak: a loop object kept somewhere must not keep frames alive
  std::vector<std::string> targets;
  ExprPtr iter, filter;
  bool recursive = false;
  Body body, else_body;
  Flow exec(State& st) const override {
    Value seq = (*iter)(st);
    st.line = line;
    auto scope = std::make_shared<Scope>();
    if (recursive) scope->assign(st.frames.begin(), st.frames.end());
    return run(st, seq, 0, scope);
  }

  // One level of the loop: the items of `seq`, depth0 recursive calls deep.
  Flow run(State& st, const Value& seq, int64_t depth0, const std::shared_ptr<const Scope>& scope) const {
    if (seq.kind == Value::kNone) fail("'NoneType' object is not iterable");
    List items = iterate(seq);
    if (filter) {
      List kept;
      for (auto& v : items) {
        st.frames.push_back(std::make_shared<Frame>());
        bind_targets(st, targets, v);
        const bool keep = truthy((*filter)(st));
        st.frames.pop_back();
        if (keep) kept.push_back(std::move(v));
      }
      items = std::move(kept);
    }
    // loop.changed()'s last arguments, shared by this level's iterations and owned by this call: they may hold this
    // level's loop object, which holds loop.changed, so that holds them weakly (no reference cycle).
    auto last = std::make_shared<std::optional<Value>>();
    const Value changed = Value::func("loop.changed", [weak = std::weak_ptr(last)](State&, List& a, Kwargs&) {
      const auto prev = weak.lock();
      if (!prev) fail("loop.changed() called after its loop ended");
      Value now = Value::of_tuple(a);
      if (*prev && equal(**prev, now)) return Value::boolean(false);
      *prev = std::move(now);
      return Value::boolean(true);
    });
    std::function<Value(State&, List&, Kwargs&)> call = [](State&, List&, Kwargs&) -> Value {
      fail("The loop must have the 'recursive' marker to be called recursively.");
    };
    if (recursive)
      call = [this, scope, depth0](State& s, List& a, Kwargs& kw) { return recurse(s, a, kw, depth0, scope); };
    const int64_t n = int64_t(items.size());
    for (int64_t k = 0; k < n; ++k) {
      st.step();
      st.frames.push_back(std::make_shared<Frame>());
      auto attrs = std::make_shared<Dict>();
      auto put = [&](const char* name, Value v) { attrs->items.emplace_back(Value::str(name), std::move(v)); };
      put("index", Value::integer(k + 1));
      put("index0", Value::integer(k));
      put("revindex", Value::integer(n - k));
      put("revindex0", Value::integer(n - k - 1));
      put("first", Value::boolean(k == 0));
      put("last", Value::boolean(k == n - 1));
      put("length", Value::integer(n));
      put("depth", Value::integer(depth0 + 1));
      put("depth0", Value::integer(depth0));
      put("previtem", k > 0 ? items[size_t(k - 1)] : Value::undefined("there is no previous item"));
      put("nextitem", k + 1 < n ? items[size_t(k + 1)] : Value::undefined("there is no next item"));
      put("cycle", Value::func("loop.cycle", [k](State&, List& a, Kwargs&) {
            if (a.empty()) fail("no items for cycling given");
            return a[size_t(k) % a.size()];
          }));
      put("changed", changed);
      Value loop = Value::func("loop", call);
      loop.fn->attrs = std::move(attrs);
      st.assign("loop", std::move(loop));
      bind_targets(st, targets, items[size_t(k)]);
      const Flow f = body.exec(st);
      st.frames.pop_back();
      if (f == Flow::kBreak) break;
    }
    if (n == 0) return else_body.exec(st);
    return Flow::kNormal;
  }

  // loop(iterable) in a recursive loop's body (Python's argument rules and messages).
  Value recurse(State& st, List& a, Kwargs& kw, int64_t depth0, const std::shared_ptr<const Scope>& scope) const {
    const char* fn = "LoopContext.__call__()";
    if (a.size() > 1) fail(str(fn, " takes 2 positional arguments but ", a.size() + 1, " were given"));
    for (const auto& [name, v] : kw) {
      if (name != "iterable") fail(str(fn, " got an unexpected keyword argument '", name, "'"));
      if (!a.empty()) fail(str(fn, " got multiple values for argument 'iterable'"));
    }
    const Value* seq = arg(a, kw, 0, "iterable");
    if (!seq) fail(str(fn, " missing 1 required positional argument: 'iterable'"));
    if (++st.depth > kMaxCallDepth) fail(str("loop recursion deeper than ", kMaxCallDepth));
    std::vector<std::shared_ptr<Frame>> frames;
    for (const auto& w : *scope) {
      frames.push_back(w.lock());
      if (!frames.back()) fail("loop() called after its loop ended");
    }
    std::swap(frames, st.frames);
    std::string text = st.capture([&] { run(st, *seq, depth0 + 1, scope); });
    std::swap(frames, st.frames);
    --st.depth;
    return Value::str(std::move(text));
  }
};

struct SetStmt : Stmt {
  std::vector<std::string> targets;  // or:
  std::string ns, attr;              // set ns.attr = ...
  ExprPtr value;
  Body block;  // {% set x %}...{% endset %} when value is null
  Flow exec(State& st) const override {
    Value v;
    if (value) {
      v = (*value)(st);
    } else {
      v = Value::str(st.capture([&] { block.exec(st); }));
    }
    st.line = line;
    if (!ns.empty()) {
      Value obj = st.lookup(ns);
      if (obj.kind != Value::kDict || !obj.dict->is_namespace)
        fail(str("cannot assign attribute on non-namespace object '", ns, "'"));
      if (holds_namespace(v)) fail("a namespace cannot hold a namespace or a loop object");
      if (v.depth + 1 > kMaxDepth) fail(str("lists and dicts nested deeper than ", kMaxDepth));
      obj.dict->set(attr, std::move(v));
    } else {
      bind_targets(st, targets, v);
    }
    return Flow::kNormal;
  }
};

struct MacroStmt : Stmt {
  std::string name;
  std::vector<std::pair<std::string, ExprPtr>> params;  // default may be null
  Body body;
  Flow exec(State& st) const override {
    const MacroStmt* self = this;
    std::weak_ptr<Frame> root = st.frames.front();  // weak: the macro is a value in that frame (no cycle)
    st.assign(
        name, Value::func(name, [self, root](State& s, List& args, Kwargs& kwargs) {
          if (args.size() > self->params.size())
            fail(str("macro '", self->name, "' takes ", self->params.size(), " arguments"));
          if (++s.depth > kMaxCallDepth) fail(str("macro recursion deeper than ", kMaxCallDepth));
          auto frame = std::make_shared<Frame>();
          std::vector<std::shared_ptr<Frame>> saved = {root.lock(), frame};
          if (!saved[0]) fail(str("macro '", self->name, "' called after its template ended"));
          std::swap(saved, s.frames);
          for (size_t k = 0; k < self->params.size(); ++k) {
            const auto& [pname, dflt] = self->params[k];
            const Value* given = arg(args, kwargs, k, pname.c_str());
            (*frame)[pname] = given ? *given : dflt ? (*dflt)(s) : Value::undefined("'" + pname + "' is undefined");
          }
          for (const auto& [n, v] : kwargs) {
            bool known = false;
            for (const auto& p : self->params) known |= p.first == n;
            if (!known) fail(str("macro '", self->name, "' takes no keyword argument '", n, "'"));
          }
          std::string text = s.capture([&] { self->body.exec(s); });
          std::swap(saved, s.frames);
          --s.depth;
          return Value::str(std::move(text));
        }));
    return Flow::kNormal;
  }
};

struct LoopControl : Stmt {
  Flow flow;
  Flow exec(State&) const override { return flow; }
};
struct BlockStmt : Stmt {  // {% generation %}: the body as it is
  Body body;
  Flow exec(State& st) const override { return body.exec(st); }
};

// ---------------------------------------------------------------------------------------------------------------
// Parser
class Parser {
 public:
  Parser(std::vector<Piece> pieces, std::string origin) : _pieces(std::move(pieces)), _origin(std::move(origin)) {}

  std::unique_ptr<Body> parse() {
    auto body = std::make_unique<Body>();
    std::string end = parse_body(*body, {});
    (void)end;
    for (const Unknown& u : _unknown)
      if (!u.soft) {
        _line = u.line;
        error(u.what);
      }
    return body;
  }

 private:
  std::vector<Piece> _pieces;
  std::string _origin;
  size_t _p = 0;  // next piece
  std::vector<Token> _t;
  size_t _k = 0;  // next token of the current tag
  int _line = 0;
  int _nesting = 0;
  int _loops = 0;  // enclosing for loops (break / continue are allowed inside one)
  // jinja2's "soft frame": inside an if statement or a conditional expression an unknown filter or test is an error
  // only when evaluated; a for loop's body, a macro or a block starts a hard frame again. _unknown holds the lines
  // and names seen so far, with whether they were soft; a hard one fails the parse (parse()).
  bool _soft = false;
  struct Unknown {
    int line;
    std::string what;
    bool soft;
  };
  std::vector<Unknown> _unknown;
  struct SoftScope {
    Parser& p;
    bool saved;
    SoftScope(Parser& pp, bool soft) : p(pp), saved(pp._soft) { p._soft = soft; }
    ~SoftScope() { p._soft = saved; }
  };

  [[noreturn]] void error(const std::string& m) const { throw FormatError(str(_origin, " line ", _line, ": ", m)); }

  struct Nest {
    Parser& p;
    explicit Nest(Parser& pp) : p(pp) {
      if (++p._nesting > kMaxNesting) p.error(str("nested deeper than ", kMaxNesting));
    }
    ~Nest() { --p._nesting; }
  };

  void start_tag(const Piece& piece) {
    _line = piece.line;
    _t = tokenize(piece.text, str(_origin, " line ", piece.line));
    _k = 0;
  }
  const Token& peek(size_t ahead = 0) const { return _t[std::min(_k + ahead, _t.size() - 1)]; }
  bool is_op(const char* op, size_t ahead = 0) const {
    return peek(ahead).kind == Token::kOp && peek(ahead).text == op;
  }
  bool is_name(const char* n, size_t ahead = 0) const {
    return peek(ahead).kind == Token::kName && peek(ahead).text == n;
  }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    ++_k;
    return true;
  }
  bool skip_name(const char* n) {
    if (!is_name(n)) return false;
    ++_k;
    return true;
  }
  void expect_op(const char* op) {
    if (!skip_op(op)) error(str("expected '", op, "', got ", describe(peek())));
  }
  std::string expect_name() {
    if (peek().kind != Token::kName) error(str("expected a name, got ", describe(peek())));
    return _t[_k++].text;
  }
  void expect_end() {
    if (peek().kind != Token::kEnd) error(str("unexpected ", describe(peek())));
  }
  static std::string describe(const Token& t) {
    return t.kind == Token::kEnd ? "end of tag" : t.kind == Token::kStr ? "a string" : "'" + t.text + "'";
  }
  template <typename T>
  std::unique_ptr<T> node() {
    auto n = std::make_unique<T>();
    n->line = _line;
    return n;
  }

  // Statements until one of `ends` (returned, with the tag's tokens positioned after its name), or the template's
  // end (returns "").
  std::string parse_body(Body& body, const std::vector<std::string>& ends) {
    Nest nest(*this);
    while (_p < _pieces.size()) {
      const Piece& piece = _pieces[_p++];
      _line = piece.line;
      if (piece.kind == Piece::kText) {
        auto t = node<TextStmt>();
        t->text = piece.text;
        body.stmts.push_back(std::move(t));
        continue;
      }
      start_tag(piece);
      if (piece.kind == Piece::kVar) {
        auto o = node<OutputStmt>();
        o->e = parse_tuple_or_expr();
        expect_end();
        body.stmts.push_back(std::move(o));
        continue;
      }
      const std::string tag = expect_name();
      if (std::find(ends.begin(), ends.end(), tag) != ends.end()) return tag;
      body.stmts.push_back(parse_statement(tag, ends));
    }
    if (!ends.empty()) error(str("unexpected end of template, expected {% ", ends.back(), " %}"));
    return "";
  }

  StmtPtr parse_statement(const std::string& tag, const std::vector<std::string>& outer) {
    const int line = _line;
    if (tag == "if") {
      SoftScope soft(*this, true);
      auto s = node<IfStmt>();
      ExprPtr cond = parse_expr();
      expect_end();
      while (true) {
        Body b;
        const std::string end = parse_body(b, {"elif", "else", "endif"});
        s->branches.emplace_back(std::move(cond), std::move(b));
        if (end == "endif") break;
        if (end == "else") {
          expect_end();
          Body e;
          parse_body(e, {"endif"});
          expect_end();
          s->branches.emplace_back(nullptr, std::move(e));
          return s;
        }
        cond = parse_expr();
        expect_end();
      }
      expect_end();
      return s;
    }
    if (tag == "for") {
      auto s = node<ForStmt>();
      do s->targets.push_back(expect_name());
      while (skip_op(","));
      if (!skip_name("in")) error("expected 'in' in the for loop");
      s->iter = parse_or();
      SoftScope hard(*this, false);
      if (skip_name("if")) s->filter = parse_expr();
      s->recursive = skip_name("recursive");
      expect_end();
      ++_loops;
      std::string end = parse_body(s->body, {"else", "endfor"});
      --_loops;
      if (end == "else") {
        expect_end();
        parse_body(s->else_body, {"endfor"});
      }
      expect_end();
      return s;
    }
    if (tag == "set") {
      auto s = node<SetStmt>();
      std::string first = expect_name();
      if (skip_op(".")) {
        s->ns = first;
        s->attr = expect_name();
      } else {
        s->targets.push_back(first);
        while (skip_op(",")) s->targets.push_back(expect_name());
      }
      if (skip_op("=")) {
        s->value = parse_tuple_or_expr();
        expect_end();
        return s;
      }
      if (s->targets.size() != 1 || !s->ns.empty()) error("a block set takes one name");
      expect_end();
      SoftScope hard(*this, false);
      parse_body(s->block, {"endset"});
      expect_end();
      return s;
    }
    if (tag == "macro") {
      auto s = node<MacroStmt>();
      s->name = expect_name();
      expect_op("(");
      while (!skip_op(")")) {
        std::string p = expect_name();
        ExprPtr d;
        if (skip_op("=")) d = parse_expr();
        s->params.emplace_back(std::move(p), std::move(d));
        if (!is_op(")")) expect_op(",");
      }
      expect_end();
      const int loops = _loops;
      _loops = 0;
      SoftScope hard(*this, false);
      parse_body(s->body, {"endmacro"});
      _loops = loops;
      if (peek().kind == Token::kName && peek().text == s->name) ++_k;
      expect_end();
      return s;
    }
    if (tag == "break" || tag == "continue") {
      if (_loops == 0) error(str("'", tag, "' outside a for loop"));
      expect_end();
      auto s = node<LoopControl>();
      s->flow = tag == "break" ? Flow::kBreak : Flow::kContinue;
      return s;
    }
    if (tag == "filter") {           // {% filter a(x)|b %}...{% endfilter %}
      SoftScope hard(*this, false);  // jinja2 checks a filter block's filters in an inner (hard) frame
      auto b = node<BodyExpr>();
      Body* body = &b->body;
      ExprPtr e = parse_filter_call(std::move(b));
      while (skip_op("|")) e = parse_filter_call(std::move(e));
      expect_end();
      parse_body(*body, {"endfilter"});
      expect_end();
      auto o = node<OutputStmt>();
      o->e = std::move(e);
      return o;
    }
    if (tag == "generation") {
      expect_end();
      auto s = node<BlockStmt>();
      parse_body(s->body, {"endgeneration"});
      expect_end();
      return s;
    }
    (void)line;
    for (const auto& e : outer)
      if (e == tag) error(str("unexpected {% ", tag, " %}"));
    static const char* const known_end[] = {"endif",         "endfor",    "endset", "endmacro",
                                            "endgeneration", "endfilter", "elif",   "else"};
    for (const char* e : known_end)
      if (tag == e) error(str("unexpected {% ", tag, " %}"));
    error(str("unsupported tag '", tag, "'"));
  }

  // ---- expressions (jinja2's grammar and precedence)
  ExprPtr parse_tuple_or_expr() {
    ExprPtr e = parse_expr();
    if (!is_op(",")) return e;
    auto l = node<ListExpr>();
    l->tuple = true;
    l->items.push_back(std::move(e));
    while (skip_op(",")) {
      if (peek().kind == Token::kEnd) break;
      l->items.push_back(parse_expr());
    }
    return l;
  }

  ExprPtr parse_expr() {
    Nest nest(*this);
    const size_t unknown_before = _unknown.size();
    ExprPtr e = parse_or();
    while (skip_name("if")) {
      for (size_t i = unknown_before; i < _unknown.size(); ++i) _unknown[i].soft = true;
      SoftScope soft(*this, true);
      auto c = node<CondExpr>();
      c->cond = parse_or();
      c->yes = std::move(e);
      if (skip_name("else")) c->no = parse_expr();
      e = std::move(c);
    }
    return e;
  }
  ExprPtr parse_or() {
    ExprPtr e = parse_and();
    while (skip_name("or")) {
      auto n = node<AndOr>();
      n->is_and = false;
      n->a = std::move(e);
      n->b = parse_and();
      e = std::move(n);
    }
    return e;
  }
  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (skip_name("and")) {
      auto n = node<AndOr>();
      n->a = std::move(e);
      n->b = parse_not();
      e = std::move(n);
    }
    return e;
  }
  ExprPtr parse_not() {
    Nest nest(*this);
    if (skip_name("not")) {
      auto n = node<Not>();
      n->e = parse_not();
      return n;
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    ExprPtr e = parse_math1();
    std::unique_ptr<Compare> c;
    while (true) {
      std::string op;
      if (peek().kind == Token::kOp && (peek().text == "==" || peek().text == "!=" || peek().text == "<" ||
                                        peek().text == "<=" || peek().text == ">" || peek().text == ">=")) {
        op = _t[_k++].text;
      } else if (skip_name("in")) {
        op = "in";
      } else if (is_name("not") && is_name("in", 1)) {
        _k += 2;
        op = "not in";
      } else {
        break;
      }
      if (!c) {
        c = node<Compare>();
        c->first = std::move(e);
      }
      c->rest.emplace_back(op, parse_math1());
    }
    if (c) return c;
    return e;
  }
  ExprPtr binary(const std::string& op, ExprPtr a, ExprPtr b) {
    auto n = node<Binary>();
    n->op = op;
    n->a = std::move(a);
    n->b = std::move(b);
    return n;
  }
  ExprPtr parse_math1() {
    ExprPtr e = parse_concat();
    while (is_op("+") || is_op("-")) {
      const std::string op = _t[_k++].text;
      e = binary(op, std::move(e), parse_concat());
    }
    return e;
  }
  ExprPtr parse_concat() {
    ExprPtr e = parse_math2();
    while (skip_op("~")) e = binary("~", std::move(e), parse_math2());
    return e;
  }
  ExprPtr parse_math2() {
    ExprPtr e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const std::string op = _t[_k++].text;
      e = binary(op, std::move(e), parse_pow());
    }
    return e;
  }
  ExprPtr parse_pow() {
    ExprPtr e = parse_unary(true);
    while (skip_op("**")) e = binary("**", std::move(e), parse_unary(true));
    return e;
  }
  ExprPtr parse_unary(bool with_filter) {
    Nest nest(*this);
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      auto n = node<Neg>();
      n->minus = _t[_k++].text == "-";
      n->e = parse_unary(false);
      e = std::move(n);
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filters(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    Nest nest(*this);
    const Token t = peek();
    if (t.kind == Token::kName) {
      ++_k;
      auto lit = node<Literal>();
      if (t.text == "true" || t.text == "True")
        lit->v = Value::boolean(true);
      else if (t.text == "false" || t.text == "False")
        lit->v = Value::boolean(false);
      else if (t.text == "none" || t.text == "None")
        lit->v = Value::none();
      else {
        auto n = node<Name>();
        n->name = t.text;
        return n;
      }
      return lit;
    }
    if (t.kind == Token::kStr) {
      std::string s;
      while (peek().kind == Token::kStr) s += _t[_k++].text;  // adjacent literals concatenate
      auto lit = node<Literal>();
      lit->v = Value::str(std::move(s));
      return lit;
    }
    if (t.kind == Token::kInt || t.kind == Token::kFloat) {
      ++_k;
      auto lit = node<Literal>();
      lit->v = t.kind == Token::kInt ? Value::integer(t.i) : Value::real(t.f);
      return lit;
    }
    if (skip_op("(")) {
      if (skip_op(")")) {
        auto l = node<ListExpr>();  // ()
        l->tuple = true;
        return l;
      }
      ExprPtr e = parse_expr();
      if (is_op(",")) {
        auto l = node<ListExpr>();
        l->tuple = true;
        l->items.push_back(std::move(e));
        while (skip_op(",")) {
          if (is_op(")")) break;
          l->items.push_back(parse_expr());
        }
        e = std::move(l);
      }
      expect_op(")");
      return e;
    }
    if (skip_op("[")) {
      auto l = node<ListExpr>();
      while (!skip_op("]")) {
        l->items.push_back(parse_expr());
        if (!is_op("]")) expect_op(",");
      }
      return l;
    }
    if (skip_op("{")) {
      auto d = node<DictExpr>();
      while (!skip_op("}")) {
        ExprPtr k = parse_expr();
        expect_op(":");
        d->items.emplace_back(std::move(k), parse_expr());
        if (!is_op("}")) expect_op(",");
      }
      return d;
    }
    error(str("unexpected ", describe(t)));
  }

  void parse_call_args(std::vector<ExprPtr>& args, std::vector<std::pair<std::string, ExprPtr>>& kwargs) {
    // after '('
    while (!skip_op(")")) {
      if (is_op("*") || is_op("**")) error("*args and **kwargs are not supported");
      if (peek().kind == Token::kName && is_op("=", 1)) {
        std::string n = _t[_k].text;
        _k += 2;
        kwargs.emplace_back(std::move(n), parse_expr());
      } else {
        if (!kwargs.empty()) error("positional argument after a keyword argument");
        args.push_back(parse_expr());
      }
      if (!is_op(")")) expect_op(",");
    }
  }

  ExprPtr parse_call(ExprPtr callee) {  // after '('
    auto c = node<Call>();
    c->callee = std::move(callee);
    parse_call_args(c->call.args, c->call.kwargs);
    return c;
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      if (skip_op(".")) {
        auto g = node<GetAttr>();
        g->obj = std::move(e);
        if (peek().kind == Token::kInt) {  // x.0 is x[0]
          auto gi = node<GetItem>();
          gi->obj = std::move(g->obj);
          auto lit = node<Literal>();
          lit->v = Value::integer(_t[_k++].i);
          gi->key = std::move(lit);
          e = std::move(gi);
          continue;
        }
        g->name = expect_name();
        e = std::move(g);
      } else if (skip_op("[")) {
        ExprPtr a, b, c;
        bool is_slice = false;
        if (!is_op(":")) a = parse_expr();
        if (skip_op(":")) {
          is_slice = true;
          if (!is_op("]") && !is_op(":")) b = parse_expr();
          if (skip_op(":") && !is_op("]")) c = parse_expr();
        }
        expect_op("]");
        if (is_slice) {
          auto s = node<Slice>();
          s->obj = std::move(e);
          s->start = std::move(a), s->stop = std::move(b), s->step = std::move(c);
          e = std::move(s);
        } else {
          auto g = node<GetItem>();
          g->obj = std::move(e);
          g->key = std::move(a);
          e = std::move(g);
        }
      } else if (skip_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  // A filter's name and arguments (after the '|'), applied to e.
  ExprPtr parse_filter_call(ExprPtr e) {
    auto f = node<FilterExpr>();
    f->name = expect_name();
    auto it = filters().find(f->name);
    if (it != filters().end())
      f->fn = &it->second;
    else
      _unknown.push_back({_line, str("no filter named '", f->name, "'"), _soft});
    f->value = std::move(e);
    if (skip_op("(")) parse_call_args(f->call.args, f->call.kwargs);
    return f;
  }

  ExprPtr parse_filters(ExprPtr e) {
    while (true) {
      if (skip_op("|")) {
        e = parse_filter_call(std::move(e));
      } else if (skip_name("is")) {
        auto t = node<TestExpr>();
        t->negate = skip_name("not");
        std::string name =
            peek().kind == Token::kOp && (peek().text == "==" || peek().text == "!=" || peek().text == "<" ||
                                          peek().text == ">" || peek().text == "<=" || peek().text == ">=")
                ? _t[_k++].text
                : expect_name();
        auto it = tests().find(name);
        t->name = name;
        if (it != tests().end())
          t->fn = &it->second;
        else
          _unknown.push_back({_line, str("no test named '", name, "'"), _soft});
        t->value = std::move(e);
        if (skip_op("(")) {
          std::vector<std::pair<std::string, ExprPtr>> kw;
          parse_call_args(t->args, kw);
          if (!kw.empty()) error("tests take no keyword arguments here");
        } else if ((peek().kind == Token::kName || peek().kind == Token::kStr || peek().kind == Token::kInt ||
                    peek().kind == Token::kFloat || is_op("[") || is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and") && !is_name("if")) {
          if (is_name("is")) error("tests cannot be chained with 'is'");
          t->args.push_back(parse_postfix(parse_primary()));
        }
        e = std::move(t);
      } else if (skip_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }
};

// ---------------------------------------------------------------------------------------------------------------
// Builtins: methods, filters, tests, globals
Value make_method(const std::string& name, std::function<Value(List&, Kwargs&)> f) {
  return Value::func(name, [f = std::move(f)](State&, List& a, Kwargs& kw) { return f(a, kw); });
}

Value method(const Value& obj, const std::string& name) {
  if (obj.kind == Value::kStr) {
    const std::string s = obj.s;
    if (name == "strip" || name == "lstrip" || name == "rstrip")
      return make_method(name, [s, name](List& a, Kwargs& kw) {
        const Value* chars = arg(a, kw, 0, "chars");
        return Value::str(py_strip(s, chars, name != "rstrip", name != "lstrip"));
      });
    if (name == "split")
      return make_method(name, [s](List& a, Kwargs& kw) {
        const Value* m = arg(a, kw, 1, "maxsplit");
        return Value::of_list(py_split(s, arg(a, kw, 0, "sep"), m ? as_int(*m, "maxsplit") : -1));
      });
    if (name == "startswith" || name == "endswith")
      return make_method(name, [s, name](List& a, Kwargs&) {
        if (a.empty()) fail(name + "() takes a prefix");
        List cands = a[0].kind == Value::kList ? *a[0].list : List{a[0]};
        for (const Value& c : cands) {
          if (c.kind != Value::kStr) fail(name + "() takes strings");
          const bool hit = name == "startswith"
                               ? s.compare(0, c.s.size(), c.s) == 0
                               : s.size() >= c.s.size() && s.compare(s.size() - c.s.size(), c.s.size(), c.s) == 0;
          if (hit) return Value::boolean(true);
        }
        return Value::boolean(false);
      });
    if (name == "lower" || name == "upper" || name == "title" || name == "capitalize")
      return make_method(name, [s, name](List&, Kwargs&) {
        return Value::str(ascii_case(s, name == "lower" ? 0 : name == "upper" ? 1 : name == "title" ? 2 : 3));
      });
    if (name == "replace")
      return make_method(name, [s](List& a, Kwargs&) {
        if (a.size() < 2 || a[0].kind != Value::kStr || a[1].kind != Value::kStr) fail("replace() takes two strings");
        return Value::str(py_replace(s, a[0].s, a[1].s, a.size() > 2 ? as_int(a[2], "count") : -1));
      });
    if (name == "find" || name == "count")
      return make_method(name, [s, name](List& a, Kwargs&) {
        if (a.empty() || a[0].kind != Value::kStr) fail(name + "() takes a string");
        if (name == "find") {
          const size_t p = s.find(a[0].s);
          return Value::integer(p == std::string::npos ? -1 : int64_t(chars_of(s.substr(0, p)).size()));
        }
        if (a[0].s.empty()) return Value::integer(int64_t(chars_of(s).size()) + 1);
        int64_t n = 0;
        for (size_t p = s.find(a[0].s); p != std::string::npos; p = s.find(a[0].s, p + a[0].s.size())) ++n;
        return Value::integer(n);
      });
    if (name == "join")
      return make_method(name, [s](List& a, Kwargs&) {
        if (a.size() != 1) fail("join() takes one argument");
        std::string out;
        bool first = true;
        for (const Value& v : iterate(a[0])) {
          if (v.kind != Value::kStr) fail(str("join(): expected str instance, ", type_name(v), " found"));
          out += (first ? "" : s) + v.s;
          check_size(out.size());
          first = false;
        }
        return Value::str(std::move(out));
      });
    if (name == "format")  // str.format: {} / {0} / {name} fields and {{ }}; no format specs or conversions
      return make_method(name, [s](List& a, Kwargs& kw) {
        std::string out;
        size_t next = 0;
        bool numbered = false, automatic = false;
        for (size_t i = 0; i < s.size(); ++i) {
          const char c = s[i];
          if ((c == '{' || c == '}') && i + 1 < s.size() && s[i + 1] == c) {
            out += c;
            ++i;
            continue;
          }
          if (c == '}') fail("Single '}' encountered in format string");
          if (c != '{') {
            out += c;
            continue;
          }
          const size_t end = s.find('}', i);
          if (end == std::string::npos) fail("Single '{' encountered in format string");
          const std::string field = s.substr(i + 1, end - i - 1);
          if (field.find_first_of(":!.[{") != std::string::npos)
            fail(str("format(): the field '{", field, "}' is not supported (only {}, {N} and {name})"));
          const Value* v = nullptr;
          if (field.empty() || std::isdigit(static_cast<unsigned char>(field[0]))) {
            size_t k = next;
            if (field.empty()) {
              automatic = true;
              ++next;
            } else {
              numbered = true;
              if (field.size() > 9 || field.find_first_not_of("0123456789") != std::string::npos)
                fail(str("format(): bad field '{", field, "}'"));
              k = std::stoul(field);
            }
            // jinja2's sandbox formats through string.Formatter: its messages, not str.format's.
            if (automatic && numbered)
              fail("cannot switch from manual field specification to automatic field numbering");
            if (k >= a.size()) fail("tuple index out of range");
            v = &a[k];
          } else {
            for (const auto& [key, val] : kw)
              if (key == field) v = &val;
            if (!v) fail(str("'", field, "'"));  // Python: KeyError: 'name'
          }
          out += to_str(*v);
          check_size(out.size());
          i = end;
        }
        return Value::str(std::move(out));
      });
    if (name == "splitlines")
      return make_method(name, [s](List&, Kwargs&) {
        List out;
        size_t i = 0;
        while (i < s.size()) {
          size_t j = s.find_first_of("\r\n", i);
          if (j == std::string::npos) {
            out.push_back(Value::str(s.substr(i)));
            break;
          }
          out.push_back(Value::str(s.substr(i, j - i)));
          i = j + ((s[j] == '\r' && j + 1 < s.size() && s[j + 1] == '\n') ? 2 : 1);
        }
        return Value::of_list(std::move(out));
      });
    return Value::undefined("");
  }
  if (obj.kind == Value::kDict && !obj.dict->is_namespace) {
    const auto d = obj.dict;
    if (name == "items" || name == "keys" || name == "values")
      return make_method(name, [d, name](List&, Kwargs&) {
        List out;
        for (const auto& [k, v] : d->items) {
          if (name == "items")
            out.push_back(Value::of_tuple({k, v}));
          else
            out.push_back(name == "keys" ? k : v);
        }
        return Value::of_list(std::move(out));
      });
    if (name == "get")
      return make_method(name, [d](List& a, Kwargs&) {
        if (a.empty() || a.size() > 2) fail("get() takes one or two arguments");
        require_hashable(a[0]);
        if (const Value* v = d->find(a[0])) return *v;
        return a.size() > 1 ? a[1] : Value::none();
      });
  }
  return Value::undefined("");
}

std::string require_str(const Value& v, const char* what) {
  if (v.kind == Value::kStr) return v.s;
  if (v.is_undefined()) fail_undefined(v);
  fail(str(what, " expects a string, not ", type_name(v)));
}

// attribute="a.b" (or an integer index), as jinja2's make_attrgetter: each dotted part an item, digits an index.
Value attr_path(const Value& v, const Value& attribute) {
  if (attribute.kind == Value::kInt) return get_item(v, attribute);
  Value cur = v;
  const Value dot = Value::str(".");
  for (const Value& part : py_split(require_str(attribute, "attribute"), &dot, -1)) {
    const bool index = !part.s.empty() && part.s.size() < 18 &&
                       std::all_of(part.s.begin(), part.s.end(), [](char c) { return c >= '0' && c <= '9'; });
    cur = get_item(cur, index ? Value::integer(std::stoll(part.s)) : part);
  }
  return cur;
}

Value filter_select(State& st, const Value& v, List& a, Kwargs&, bool keep, bool by_attr) {
  List out;
  if (!truthy(v)) return Value::of_list({});  // jinja2: `if value:` first, so none | selectattr(...) is empty
  size_t k = 0;
  Value attribute;
  if (by_attr) {
    if (a.empty()) fail("selectattr/rejectattr take an attribute");
    attribute = a[0];
    k = 1;
  }
  const TestFn* test = nullptr;
  List targs;
  if (k < a.size()) {
    const std::string name = require_str(a[k], "the test name");
    auto it = tests().find(name);
    if (it == tests().end()) fail(str("no test named '", name, "'"));
    test = &it->second;
    targs.assign(a.begin() + long(k) + 1, a.end());
  }
  for (const Value& item : iterate(v)) {
    const Value x = by_attr ? attr_path(item, attribute) : item;
    const bool pass = test ? (*test)(st, x, targs) : truthy(x);
    if (pass == keep) out.push_back(item);
  }
  return Value::of_list(std::move(out));
}

const std::map<std::string, FilterFn>& filters() {
  static const std::map<std::string, FilterFn> table = [] {
    std::map<std::string, FilterFn> m;
    // HF's tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False): json.dumps.
    m["tojson"] = [](State&, const Value& v, List& a, Kwargs& kw) {
      JsonStyle s;
      if (const Value* e = arg(a, kw, 0, "ensure_ascii")) s.ensure_ascii = truthy(*e);
      if (const Value* ind = arg(a, kw, 1, "indent"); ind && ind->kind != Value::kNone) {
        s.indent = int(std::clamp<int64_t>(as_int(*ind, "indent"), 0, 64));
        s.item_sep = ",";
      }
      if (const Value* sep = arg(a, kw, 2, "separators"); sep && sep->kind != Value::kNone) {
        if (sep->kind != Value::kList || sep->list->size() != 2) fail("separators must be a pair of strings");
        s.item_sep = require_str((*sep->list)[0], "separators"), s.key_sep = require_str((*sep->list)[1], "separators");
      }
      if (const Value* k = arg(a, kw, 3, "sort_keys")) s.sort_keys = truthy(*k);
      std::string out;
      to_json(v, s, 0, out);
      return Value::str(std::move(out));
    };
    // jinja2's format: `str(value) % args`, or % kwargs (a mapping); not both.
    m["format"] = [](State&, const Value& v, List& a, Kwargs& kw) {
      if (!a.empty() && !kw.empty()) fail("can't handle positional and keyword arguments at the same time");
      Value args = Value::of_tuple(a);
      if (!kw.empty()) {
        auto d = std::make_shared<Dict>();
        for (const auto& [k, x] : kw) d->set(k, x);
        args = Value::of_dict(d);
      }
      return Value::str(py_percent(to_str(v), args));
    };
    m["trim"] = [](State&, const Value& v, List& a, Kwargs& kw) {
      return Value::str(py_strip(require_str(v, "trim"), arg(a, kw, 0, "chars"), true, true));
    };
    m["length"] = m["count"] = [](State&, const Value& v, List&, Kwargs&) { return Value::integer(length(v)); };
    m["string"] = [](State&, const Value& v, List&, Kwargs&) { return Value::str(to_str(v)); };
    m["safe"] = [](State&, const Value& v, List&, Kwargs&) { return v; };
    m["upper"] = [](State&, const Value& v, List&, Kwargs&) { return Value::str(ascii_case(to_str(v), 1)); };
    m["lower"] = [](State&, const Value& v, List&, Kwargs&) { return Value::str(ascii_case(to_str(v), 0)); };
    m["title"] = [](State&, const Value& v, List&, Kwargs&) { return Value::str(ascii_case(to_str(v), 2)); };
    m["capitalize"] = [](State&, const Value& v, List&, Kwargs&) { return Value::str(ascii_case(to_str(v), 3)); };
    m["default"] = m["d"] = [](State&, const Value& v, List& a, Kwargs& kw) {
      const Value* dv = arg(a, kw, 0, "default_value");
      const Value* boolean = arg(a, kw, 1, "boolean");
      const bool use = v.is_undefined() || (boolean && truthy(*boolean) && !truthy(v));
      return use ? (dv ? *dv : Value::str("")) : v;
    };
    m["first"] = [](State&, const Value& v, List&, Kwargs&) {
      List l = iterate(v);
      return l.empty() ? Value::undefined("first(): empty sequence") : l.front();
    };
    m["last"] = [](State&, const Value& v, List&, Kwargs&) {
      List l = iterate(v);
      return l.empty() ? Value::undefined("last(): empty sequence") : l.back();
    };
    m["list"] = [](State&, const Value& v, List&, Kwargs&) { return Value::of_list(iterate(v)); };
    m["reverse"] = [](State&, const Value& v, List&, Kwargs&) {
      if (v.kind == Value::kStr) {
        auto cs = chars_of(v.s);
        std::string s;
        for (auto it = cs.rbegin(); it != cs.rend(); ++it) s += *it;
        return Value::str(std::move(s));
      }
      List l = iterate(v);
      std::reverse(l.begin(), l.end());
      return Value::of_list(std::move(l));
    };
    m["join"] = [](State&, const Value& v, List& a, Kwargs& kw) {
      const Value* sep = arg(a, kw, 0, "d");
      const Value* attribute = arg(a, kw, 1, "attribute");
      const std::string d = sep ? to_str(*sep) : "";
      std::string out;
      bool first = true;
      for (const Value& x : iterate(v)) {
        out += (first ? "" : d) + to_str(attribute ? attr_path(x, *attribute) : x);
        check_size(out.size());
        first = false;
      }
      return Value::str(std::move(out));
    };
    m["replace"] = [](State&, const Value& v, List& a, Kwargs& kw) {
      const Value* from = arg(a, kw, 0, "old");
      const Value* to = arg(a, kw, 1, "new");
      const Value* count = arg(a, kw, 2, "count");
      if (!from || !to) fail("replace takes old and new");
      return Value::str(py_replace(to_str(v), to_str(*from), to_str(*to),
                                   count && count->kind != Value::kNone ? as_int(*count, "count") : -1));
    };
    m["items"] = [](State&, const Value& v, List&, Kwargs&) {
      if (v.is_undefined()) return Value::of_list({});
      if (v.kind != Value::kDict) fail(str("items expects a mapping, not ", type_name(v)));
      List out;
      for (const auto& [k, x] : v.dict->items) out.push_back(Value::of_tuple({k, x}));
      return Value::of_list(std::move(out));
    };
    m["int"] = [](State&, const Value& v, List& a, Kwargs& kw) {
      const Value* dv = arg(a, kw, 0, "default");
      const Value fallback = dv ? *dv : Value::integer(0);
      if (v.kind == Value::kInt || v.kind == Value::kBool) return Value::integer(v.kind == Value::kInt ? v.i : v.b);
      if (v.kind == Value::kFloat)
        return std::isfinite(v.f) && std::fabs(v.f) < 9.2e18 ? Value::integer(int64_t(v.f)) : fallback;
      if (v.kind == Value::kStr) {
        const std::string t = py_strip(v.s, nullptr, true, true);
        int64_t x = 0;
        auto r = std::from_chars(t.data(), t.data() + t.size(), x);
        if (r.ec == std::errc() && r.ptr == t.data() + t.size()) return Value::integer(x);
        char* end = nullptr;
        const double f = std::strtod(t.c_str(), &end);
        if (!t.empty() && end == t.c_str() + t.size() && std::isfinite(f) && std::fabs(f) < 9.2e18)
          return Value::integer(int64_t(f));
      }
      return fallback;
    };
    m["float"] = [](State&, const Value& v, List& a, Kwargs& kw) {
      const Value* dv = arg(a, kw, 0, "default");
      if (v.is_number()) return Value::real(v.num());
      if (v.kind == Value::kStr) {
        const std::string t = py_strip(v.s, nullptr, true, true);
        char* end = nullptr;
        const double f = std::strtod(t.c_str(), &end);
        if (!t.empty() && end == t.c_str() + t.size()) return Value::real(f);
      }
      return dv ? *dv : Value::real(0);
    };
    m["abs"] = [](State&, const Value& v, List&, Kwargs&) {
      if (v.kind == Value::kInt) {
        if (v.i == INT64_MIN) fail("integer overflow");
        return Value::integer(std::abs(v.i));
      }
      if (v.kind == Value::kBool) return Value::integer(v.b);
      if (v.kind == Value::kFloat) return Value::real(std::fabs(v.f));
      fail(str("bad operand type for abs(): '", type_name(v), "'"));
    };
    m["round"] = [](State&, const Value& v, List& a, Kwargs& kw) {
      const Value* p = arg(a, kw, 0, "precision");
      const Value* how = arg(a, kw, 1, "method");
      if (!v.is_number()) fail(str("round expects a number, not ", type_name(v)));
      const double scale = std::pow(10.0, double(p ? as_int(*p, "precision") : 0));
      const std::string mth = how ? require_str(*how, "method") : "common";
      const double x = v.num() * scale;
      double r;
      if (mth == "common")
        r = std::nearbyint(x);  // Python's round(): half to even
      else if (mth == "ceil")
        r = std::ceil(x);
      else if (mth == "floor")
        r = std::floor(x);
      else
        fail("method must be common, ceil or floor");
      return Value::real(r / scale);
    };
    m["sum"] = [](State&, const Value& v, List& a, Kwargs& kw) {
      const Value* attribute = arg(a, kw, 0, "attribute");
      const Value* start = arg(a, kw, 1, "start");
      Value acc = start ? *start : Value::integer(0);
      for (const Value& x : iterate(v))
        acc = arith("+", acc, attribute && attribute->kind != Value::kNone ? attr_path(x, *attribute) : x);
      return acc;
    };
    auto minmax = [](bool want_max) {
      return [want_max](State&, const Value& v, List& a, Kwargs& kw) {
        const Value* attribute = arg(a, kw, 1, "attribute");
        List l = iterate(v);
        if (l.empty()) return Value::undefined("no items in the sequence");
        Value best = l[0];
        for (size_t k = 1; k < l.size(); ++k) {
          const Value x = attribute ? attr_path(l[k], *attribute) : l[k];
          const Value y = attribute ? attr_path(best, *attribute) : best;
          if (want_max ? compare(x, y) > 0 : compare(x, y) < 0) best = l[k];
        }
        return best;
      };
    };
    m["max"] = minmax(true);
    m["min"] = minmax(false);
    m["unique"] = [](State&, const Value& v, List& a, Kwargs& kw) {  // strings compare case-insensitively by default
      const Value* cs = arg(a, kw, 0, "case_sensitive");
      const Value* attribute = arg(a, kw, 1, "attribute");
      const bool sensitive = cs && truthy(*cs);
      auto key = [&](const Value& x) {
        Value k = attribute && attribute->kind != Value::kNone ? attr_path(x, *attribute) : x;
        if (!sensitive && k.kind == Value::kStr) k.s = ascii_case(k.s, 0);
        return k;
      };
      List out, keys;
      for (const Value& x : iterate(v)) {
        const Value k = key(x);
        if (std::none_of(keys.begin(), keys.end(), [&](const Value& y) { return equal(k, y); }))
          out.push_back(x), keys.push_back(k);
      }
      return Value::of_list(std::move(out));
    };
    m["sort"] = [](State&, const Value& v, List& a, Kwargs& kw) {
      const Value* rev = arg(a, kw, 0, "reverse");
      const Value* cs = arg(a, kw, 1, "case_sensitive");
      const Value* attribute = arg(a, kw, 2, "attribute");
      const bool sensitive = cs && truthy(*cs);
      List l = iterate(v);
      auto key = [&](const Value& x) {
        Value k = attribute && attribute->kind != Value::kNone ? attr_path(x, *attribute) : x;
        if (!sensitive && k.kind == Value::kStr) k.s = ascii_case(k.s, 0);
        return k;
      };
      std::stable_sort(l.begin(), l.end(), [&](const Value& x, const Value& y) { return compare(key(x), key(y)) < 0; });
      if (rev && truthy(*rev)) std::reverse(l.begin(), l.end());
      return Value::of_list(std::move(l));
    };
    m["map"] = [](State& st, const Value& v, List& a, Kwargs& kw) {
      List out;
      if (!truthy(v)) return Value::of_list({});  // as select: a falsy value maps to nothing, arguments unchecked
      const Value* attribute = arg({}, kw, 0, "attribute");
      const Value* dflt = arg({}, kw, 0, "default");
      if (attribute) {
        for (const Value& x : iterate(v)) {
          Value y = attr_path(x, *attribute);
          out.push_back(y.is_undefined() && dflt ? *dflt : y);
        }
        return Value::of_list(std::move(out));
      }
      if (a.empty()) fail("map needs a filter name or attribute=");
      const std::string name = require_str(a[0], "map");
      auto it = filters().find(name);
      if (it == filters().end()) fail(str("no filter named '", name, "'"));
      List rest(a.begin() + 1, a.end());
      for (const Value& x : iterate(v)) {
        List ar = rest;
        Kwargs k2 = kw;
        out.push_back(it->second(st, x, ar, k2));
      }
      return Value::of_list(std::move(out));
    };
    m["select"] = [](State& st, const Value& v, List& a, Kwargs& kw) {
      return filter_select(st, v, a, kw, true, false);
    };
    m["reject"] = [](State& st, const Value& v, List& a, Kwargs& kw) {
      return filter_select(st, v, a, kw, false, false);
    };
    m["selectattr"] = [](State& st, const Value& v, List& a, Kwargs& kw) {
      return filter_select(st, v, a, kw, true, true);
    };
    m["rejectattr"] = [](State& st, const Value& v, List& a, Kwargs& kw) {
      return filter_select(st, v, a, kw, false, true);
    };
    m["attr"] = [](State&, const Value& v, List& a, Kwargs&) {
      if (a.size() != 1) fail("attr takes one name");
      return get_attr(v, require_str(a[0], "attr"));
    };
    m["indent"] = [](State&, const Value& v, List& a, Kwargs& kw) {
      const Value* w = arg(a, kw, 0, "width");
      const Value* first = arg(a, kw, 1, "first");
      const Value* blank = arg(a, kw, 2, "blank");
      const std::string ind = w && w->kind == Value::kStr
                                  ? w->s
                                  : std::string(size_t(std::clamp<int64_t>(w ? as_int(*w, "width") : 4, 0, 1024)), ' ');
      const Value nl = Value::str("\n");
      List lines = py_split(to_str(v) + "\n", &nl, -1);
      lines.pop_back();  // jinja2 appends a newline and splitlines() drops what follows the last one
      std::string rv;
      for (size_t k = 0; k < lines.size(); ++k) {
        const std::string& l = lines[k].s;
        if (k == 0)
          rv = l;
        else
          rv += "\n" + ((blank && truthy(*blank)) || !l.empty() ? ind + l : l);
      }
      if (first && truthy(*first)) rv = ind + rv;
      return Value::str(std::move(rv));
    };
    m["escape"] = m["e"] = [](State&, const Value& v, List&, Kwargs&) {
      std::string out;
      for (char c : to_str(v)) {
        switch (c) {
          case '&': out += "&amp;"; break;
          case '<': out += "&lt;"; break;
          case '>': out += "&gt;"; break;
          case '"': out += "&#34;"; break;
          case '\'': out += "&#39;"; break;
          default: out += c;
        }
      }
      return Value::str(std::move(out));
    };
    m["dictsort"] = [](State&, const Value& v, List& a, Kwargs& kw) {
      if (v.kind != Value::kDict) fail("dictsort expects a mapping");
      const Value* cs = arg(a, kw, 0, "case_sensitive");
      const Value* by = arg(a, kw, 1, "by");
      const Value* rev = arg(a, kw, 2, "reverse");
      const bool by_value = by && by->kind == Value::kStr && by->s == "value";
      const bool sensitive = cs && truthy(*cs);
      List l;
      for (const auto& [k, x] : v.dict->items) l.push_back(Value::of_tuple({k, x}));
      auto key = [&](const Value& p) {
        Value k = (*p.list)[by_value ? 1 : 0];
        if (!sensitive && k.kind == Value::kStr) k.s = ascii_case(k.s, 0);
        return k;
      };
      std::stable_sort(l.begin(), l.end(), [&](const Value& x, const Value& y) { return compare(key(x), key(y)) < 0; });
      if (rev && truthy(*rev)) std::reverse(l.begin(), l.end());
      return Value::of_list(std::move(l));
    };
    return m;
  }();
  return table;
}

const std::map<std::string, TestFn>& tests() {
  static const std::map<std::string, TestFn> table = [] {
    std::map<std::string, TestFn> m;
    auto one = [](List& a, const char* name) -> const Value& {
      if (a.size() != 1) fail(str("test '", name, "' takes one argument"));
      return a[0];
    };
    m["defined"] = [](State&, const Value& v, List&) { return !v.is_undefined(); };
    m["undefined"] = [](State&, const Value& v, List&) { return v.is_undefined(); };
    m["none"] = [](State&, const Value& v, List&) { return v.kind == Value::kNone; };
    m["boolean"] = [](State&, const Value& v, List&) { return v.kind == Value::kBool; };
    m["true"] = [](State&, const Value& v, List&) { return v.kind == Value::kBool && v.b; };
    m["false"] = [](State&, const Value& v, List&) { return v.kind == Value::kBool && !v.b; };
    m["integer"] = [](State&, const Value& v, List&) { return v.kind == Value::kInt; };
    m["float"] = [](State&, const Value& v, List&) { return v.kind == Value::kFloat; };
    m["number"] = [](State&, const Value& v, List&) { return v.is_number(); };
    m["string"] = [](State&, const Value& v, List&) { return v.kind == Value::kStr; };
    m["mapping"] = [](State&, const Value& v, List&) { return v.kind == Value::kDict; };
    m["sequence"] = [](State&, const Value& v, List&) {
      return v.kind == Value::kStr || v.kind == Value::kList || v.kind == Value::kDict;
    };
    m["iterable"] = m["sequence"];
    m["callable"] = [](State&, const Value& v, List&) { return v.kind == Value::kFunc; };
    m["lower"] = [](State&, const Value& v, List&) { return v.kind == Value::kStr && ascii_case(v.s, 0) == v.s; };
    m["upper"] = [](State&, const Value& v, List&) { return v.kind == Value::kStr && ascii_case(v.s, 1) == v.s; };
    m["odd"] = [](State&, const Value& v, List&) { return as_int(v, "odd") % 2 != 0; };
    m["even"] = [](State&, const Value& v, List&) { return as_int(v, "even") % 2 == 0; };
    m["divisibleby"] = [one](State&, const Value& v, List& a) {
      const int64_t d = as_int(one(a, "divisibleby"), "divisibleby");
      if (d == 0) fail("integer division or modulo by zero");
      return d == -1 || as_int(v, "divisibleby") % d == 0;
    };
    m["eq"] = m["equalto"] = m["=="] = [one](State&, const Value& v, List& a) { return equal(v, one(a, "eq")); };
    m["ne"] = m["!="] = [one](State&, const Value& v, List& a) { return !equal(v, one(a, "ne")); };
    m["lt"] = m["lessthan"] = m["<"] = [one](State&, const Value& v, List& a) { return compare(v, one(a, "lt")) < 0; };
    m["le"] = m["<="] = [one](State&, const Value& v, List& a) { return compare(v, one(a, "le")) <= 0; };
    m["gt"] = m["greaterthan"] =
        m[">"] = [one](State&, const Value& v, List& a) { return compare(v, one(a, "gt")) > 0; };
    m["ge"] = m[">="] = [one](State&, const Value& v, List& a) { return compare(v, one(a, "ge")) >= 0; };
    m["in"] = [one](State&, const Value& v, List& a) { return contains(one(a, "in"), v); };
    m["sameas"] = [one](State&, const Value& v, List& a) {
      const Value& o = one(a, "sameas");
      if (v.kind != o.kind) return false;
      if (v.kind == Value::kList) return v.list == o.list;
      if (v.kind == Value::kDict) return v.dict == o.dict;
      if (v.kind == Value::kFunc) return v.fn == o.fn;
      return equal(v, o);
    };
    return m;
  }();
  return table;
}

const Frame& globals() {
  static const Frame g = [] {
    Frame f;
    f["range"] = Value::func("range", [](State& st, List& a, Kwargs&) {
      if (a.empty() || a.size() > 3) fail("range() takes 1 to 3 arguments");
      int64_t start = 0, stop, step = 1;
      if (a.size() == 1)
        stop = as_int(a[0], "range()");
      else
        start = as_int(a[0], "range()"), stop = as_int(a[1], "range()");
      if (a.size() == 3) step = as_int(a[2], "range()");
      if (step == 0) fail("range() arg 3 must not be zero");
      List out;
      for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
        st.step();
        out.push_back(Value::integer(k));
        if ((step > 0 && k > INT64_MAX - step) || (step < 0 && k < INT64_MIN - step)) break;
      }
      return Value::of_list(std::move(out));
    });
    f["namespace"] = Value::func("namespace", [](State&, List& a, Kwargs& kw) {
      auto d = std::make_shared<Dict>();
      d->is_namespace = true;
      for (const Value& x : a) {
        if (x.kind != Value::kDict) fail("namespace() takes a mapping or keyword arguments");
        for (const auto& [k, v] : x.dict->items) d->set(k, v);
      }
      for (const auto& [k, v] : kw) d->set(k, v);
      for (const auto& kv : d->items)
        if (holds_namespace(kv.first) || holds_namespace(kv.second))
          fail("a namespace cannot hold a namespace or a loop object");
      return Value::of_dict(d);
    });
    f["dict"] = Value::func("dict", [](State&, List& a, Kwargs& kw) {
      auto d = std::make_shared<Dict>();
      for (const Value& x : a) {
        if (x.kind != Value::kDict) fail("dict() takes a mapping or keyword arguments");
        for (const auto& [k, v] : x.dict->items) d->set(k, v);
      }
      for (const auto& [k, v] : kw) d->set(k, v);
      return Value::of_dict(d);
    });
    // HF's globals: raise_exception(message) stops rendering with the template's message; strftime_now(format)
    // is the local time, as datetime.now().strftime.
    f["raise_exception"] = Value::func("raise_exception", [](State&, List& a, Kwargs&) -> Value {
      fail(a.empty() ? std::string("raise_exception() called") : to_str(a[0]));
    });
    f["strftime_now"] = Value::func("strftime_now", [](State&, List& a, Kwargs&) {
      if (a.size() != 1 || a[0].kind != Value::kStr) fail("strftime_now() takes a format string");
      const std::time_t now = std::time(nullptr);
      std::tm tm{};
      localtime_r(&now, &tm);
      char buf[256];
      const size_t n = std::strftime(buf, sizeof buf, a[0].s.c_str(), &tm);
      return Value::str(std::string(buf, n));
    });
    return f;
  }();
  return g;
}

}  // namespace

Template::Template(const std::string& source, std::string origin) : _origin(std::move(origin)) {
  // jinja2's keep_trailing_newline=False: one newline at the very end of the source is dropped.
  std::string src = source;
  if (!src.empty() && src.back() == '\n') {
    src.pop_back();
    if (!src.empty() && src.back() == '\r') src.pop_back();
  }
  _body = Parser(split_template(src, _origin), _origin).parse();
}
Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

std::string Template::render(const nlohmann::ordered_json& vars) const {
  PATCHLLM_CHECK(vars.is_object(), InvalidArgument, _origin, ": template variables must be a JSON object");
  State st;
  auto root = std::make_shared<Frame>();
  for (const auto& [k, v] : vars.items()) (*root)[k] = from_json(v);
  st.frames.push_back(root);
  st.globals = &globals();
  std::string out;
  st.out = &out;
  try {
    _body->exec(st);
  } catch (const Fail& f) {
    throw FormatError(str(_origin, " line ", st.line, ": ", f.msg));
  }
  return out;
}

}  // namespace patchllm::jinja
