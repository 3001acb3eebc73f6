#!/usr/bin/env python3
"""Golden file for tests/test_tokenizer_chat.cc, made with transformers' own chat-template environment.

  python3 -m venv /tmp/tokvenv && /tmp/tokvenv/bin/pip install "transformers<5" tokenizers sentencepiece protobuf jinja2
  /tmp/tokvenv/bin/python tools/gen_chat_template_golden.py [--shared ../shared] [--out tests/data/tokenizer]

Writes chat_golden.json:
  "jinja": templates written here, each exercising a part of Jinja2 that chat templates use, rendered by
           transformers.utils.chat_template_utils._compile_jinja_template (jinja2's ImmutableSandboxedEnvironment with
           trim_blocks, lstrip_blocks, loopcontrols, HF's tojson / raise_exception); each case has the expected text
           or, for a template that must fail, the error message.
  "chat":  conversations rendered and tokenized by tokenizer.apply_chat_template(..., tokenize=True) with chat
           templates in the styles of ChatML (Qwen2), LLaMA-3 and LLaMA-2 written here (not copied from any model)
           over the test tokenizers of tests/data/tokenizer (byte-level) and the LLaMA-2 SentencePiece tokenizer of
           ../shared (converted by transformers, as the C++ side converts it).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import jinja2
import transformers
from transformers.utils.chat_template_utils import _compile_jinja_template

# ---- feature cases: (name, template, variables)
MSGS = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! \u00e9t\u00e9 \U0001f600"},
    {"role": "user", "content": "  2+2?  "},
]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather \"now\"",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}]
CASES = [
    ("text_only", "plain text\nwith lines\n", {}),
    ("output_types", "{{ 1 }}|{{ 1.5 }}|{{ 2.0 }}|{{ 1e20 }}|{{ 1e-5 }}|{{ 0.1 + 0.2 }}|{{ true }}|{{ none }}|{{ 'a' }}|"
     "{{ [1, 'b', none, false, 2.5] }}|{{ {'k': 'v', 'n': [1]} }}|{{ undefined_name }}|{{ -7 // 2 }}|{{ -7 % 3 }}|"
     "{{ 7 / 2 }}|{{ 2 ** 10 }}|{{ 'x' * 3 }}|{{ [1] * 2 }}|{{ \"it's\" }}|{{ ['it\\'s', 'a\"b'] }}", {}),
    ("whitespace_control", "a  {{- ' b ' -}}  c\n  {%- if true -%}  d  {%- endif -%}\n e", {}),
    ("trim_and_lstrip_blocks", "line1\n    {% if true %}\n    inside\n    {% endif %}\nline2 {% if true %}x{% endif %}\n"
     "  {# comment #}\nend\n{%+ if true %}plus{% endif %}", {}),
    ("for_loop_vars", "{% for m in messages %}{{ loop.index }}/{{ loop.length }} {{ loop.index0 }} {{ loop.revindex }} "
     "{{ loop.first }} {{ loop.last }} {{ m.role }}{% if not loop.last %}, {% endif %}{% endfor %}", {"messages": MSGS}),
    ("for_prev_next_cycle", "{% for x in [1, 2, 3] %}[{{ loop.previtem }}|{{ loop.nextitem }}|{{ loop.cycle('a', 'b') }}]"
     "{% endfor %}", {}),
    ("for_filter_else", "{% for m in messages if m.role == 'user' %}{{ m.content | trim }};{% endfor %}"
     "{% for x in [] %}no{% else %}empty{% endfor %}", {"messages": MSGS}),
    ("for_unpack_items", "{% for k, v in d.items() %}{{ k }}={{ v }} {% endfor %}{% for k, v in d | items %}{{ k }} "
     "{% endfor %}{% for k in d %}{{ k }}{% endfor %}", {"d": {"z": 1, "a": [2], "m": None}}),
    ("loop_scope", "{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}"
     "{% for i in [1,2,3] %}{% if i == 1 %}{% set y = 5 %}{% endif %}[{{ y }}]{% endfor %}", {}),
    ("namespace", "{% set ns = namespace(found=false, n=0) %}{% for m in messages %}{% if m.role == 'user' %}"
     "{% set ns.found = true %}{% set ns.n = ns.n + 1 %}{% endif %}{% endfor %}{{ ns.found }} {{ ns.n }}",
     {"messages": MSGS}),
    ("break_continue", "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i > 5 %}{% break %}"
     "{% endif %}{{ i }}{% endfor %}", {}),
    ("if_elif_else", "{% for v in [0, 1, 2, '', 'a', none, [], [0]] %}{% if v == 1 %}one{% elif v %}truthy{% else %}"
     "falsy{% endif %} {% endfor %}", {}),
    ("tests", "{{ x is defined }} {{ y is defined }} {{ y is undefined }} {{ none is none }} {{ 'a' is string }} "
     "{{ 3 is number }} {{ 3 is integer }} {{ 3.0 is float }} {{ {} is mapping }} {{ [] is iterable }} "
     "{{ 4 is even }} {{ 3 is odd }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }} {{ 'a' is in 'cat' }} "
     "{{ true is boolean }} {{ x is not none }} {{ 'abc' is lower }} {{ 'ABC' is upper }} {{ 2 is eq 2 }} "
     "{{ 3 is gt 2 }} {{ 3 is sameas 3 }} {{ range is callable }}", {"x": 1}),
    ("operators", "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' in 'cat' }} {{ 'x' not in ['x'] }} {{ 'k' in {'k': 1} }} "
     "{{ not 0 }} {{ 0 or 'b' }} {{ 'a' and 'b' }} {{ '' and 'b' }} {{ 1 + 2 * 3 - 4 }} {{ 'a' ~ 1 ~ none }} "
     "{{ 'x' if false }}|{{ 'y' if 0 else 'z' }} {{ 1 == 1.0 }} {{ true == 1 }} {{ [1, 2] == [1, 2] }} {{ -2 ** 2 }} "
     "{{ 2 ** 3 ** 2 }} {{ 10 - 2 - 3 }} {{ (1 + 2) ~ 3 }} {{ 1 ~ 2 * 3 }}", {}),
    ("subscripts_slices", "{{ messages[0]['role'] }} {{ messages[-1].content }} {{ messages[1:3] | length }} "
     "{{ 'abcdef'[1:4] }} {{ 'abcdef'[::-1] }} {{ 'abcdef'[::2] }} {{ [1,2,3,4][-2:] }} {{ [1,2,3][5:] }} "
     "{{ '\u00e9t\u00e9'[1] }} {{ '\u00e9t\u00e9' | length }} {{ messages[9] is defined }} {{ d.x.y }} {{ d['x'].0 }}",
     {"messages": MSGS, "d": {"x": {"y": "deep"}}}),
    ("string_methods", "{{ '  pad  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ '  l'.lstrip() }}|{{ 'r  '.rstrip() }}|"
     "{{ 'a b  c'.split() }}|{{ 'a,b,,c'.split(',') }}|{{ 'a,b,c'.split(',', 1) }}|{{ 'Hello'.startswith('He') }}|"
     "{{ 'Hello'.endswith(('x', 'lo')) }}|{{ 'MiXed'.lower() }}|{{ 'MiXed'.upper() }}|{{ 'hello world'.title() }}|"
     "{{ 'hELLO'.capitalize() }}|{{ 'a-b-c'.replace('-', '+') }}|{{ 'a-b-c'.replace('-', '', 1) }}|"
     "{{ 'abcabc'.find('c') }}|{{ 'abcabc'.count('bc') }}|{{ ', '.join(['x', 'y']) }}|{{ 'l1\\nl2\\r\\nl3'.splitlines() }}",
     {}),
    ("dict_methods", "{{ d.keys() | list }} {{ d.values() | list }} {{ d.get('a') }} {{ d.get('zz', 'dflt') }} "
     "{{ d.get('zz') }} {{ d | length }}", {"d": {"a": 1, "b": "two"}}),
    ("filters_basic", "{{ '  t  ' | trim }}|{{ [3, 1, 2] | length }}|{{ 'abc' | upper }}|{{ 'ABC' | lower }}|"
     "{{ 'hi there' | title }}|{{ 'hi' | capitalize }}|{{ missing | default('dv') }}|{{ '' | default('dv', true) }}|"
     "{{ none | d('n') }}|{{ [4, 5, 6] | first }}|{{ [4, 5, 6] | last }}|{{ 'abc' | list }}|{{ [1, 2] | reverse | list }}|"
     "{{ 'abc' | reverse }}|{{ ['a', 'b'] | join('-') }}|{{ [1, 2] | join }}|{{ 'aXbX' | replace('X', 'y') }}|"
     "{{ '42' | int }}|{{ 'x' | int(7) }}|{{ 3.9 | int }}|{{ '2.5' | float }}|{{ -3 | abs }}|{{ 2.567 | round(2) }}|"
     "{{ 2.5 | round }}|{{ 2.1 | round(0, 'ceil') }}|{{ [1, 2, 3] | sum }}|{{ [3, 1, 2] | max }}|{{ [3, 1, 2] | min }}|"
     "{{ ['b', 'A', 'a', 'B'] | unique | list }}|{{ ['b', 'A', 'c'] | sort }}|{{ [2, 3, 1] | sort(reverse=true) }}|"
     "{{ 5 | string }}|{{ 'x' | safe }}|{{ '<a&b>' | e }}|{{ {'b': 1, 'a': 2} | dictsort }}", {}),
    ("filters_select_map", "{{ messages | map(attribute='role') | join(',') }}|"
     "{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | list }}|"
     "{{ messages | rejectattr('role', 'eq', 'user') | list | length }}|{{ [0, 1, 2, none] | select | list }}|"
     "{{ [1, 2, 3, 4] | select('odd') | list }}|{{ [1, 2, 3, 4] | reject('even') | list }}|"
     "{{ ['a', 'b'] | map('upper') | list }}|{{ messages | selectattr('tool_calls', 'defined') | list | length }}|"
     "{{ messages | sort(attribute='role') | map(attribute='role') | list }}|{{ messages | map(attribute='nope', default='-') | list }}",
     {"messages": MSGS}),
    ("tojson", "{{ tools | tojson }}\n{{ tools[0] | tojson(indent=4) }}\n{{ {'b': 1, 'a': [1, 2.5, none, true]} | tojson(sort_keys=true) }}\n"
     "{{ '\u00e9\"\\\\\\n\\t\U0001f600' | tojson }}|{{ '\u00e9' | tojson(ensure_ascii=true) }}|{{ [] | tojson }}|{{ {} | tojson(indent=2) }}|"
     "{{ {'a': 1} | tojson(separators=(',', ':')) }}|{{ 1.0 | tojson }}|{{ [[1, [2, {}]]] | tojson(indent=1) }}",
     {"tools": TOOLS}),
    ("indent", "{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}|{{ 'a\\n\\nb' | indent(2, blank=true) }}|"
     "{{ 'x\\ny' | indent('> ') }}", {}),
    ("set_forms", "{% set a, b = [1, 2] %}{{ a }}{{ b }} {% set t = (1, 'x') %}{{ t[1] }} {% set blk %}in {{ a }}{% endset %}"
     "[{{ blk }}] {% set d = {'k': a + b} %}{{ d.k }} {% set l = [a, b] + [3] %}{{ l }}", {}),
    ("macro", "{% macro fmt(m, prefix='> ', suffix='') %}{{ prefix }}{{ m.role }}: {{ m.content }}{{ suffix }}{% endmacro %}"
     "{% for m in messages %}{{ fmt(m) }}|{{ fmt(m, suffix='!') }}|{{ fmt(m, '* ') }}\n{% endfor %}", {"messages": MSGS}),
    ("macro_recursion", "{% macro render(v) %}{% if v is mapping %}{% for k, x in v.items() %}{{ k }}({{ render(x) }})"
     "{% endfor %}{% elif v is string %}'{{ v }}'{% elif v is iterable %}[{% for x in v %}{{ render(x) }}{% endfor %}]"
     "{% else %}{{ v }}{% endif %}{% endmacro %}{{ render(tools) }}", {"tools": TOOLS}),
    ("strings_and_escapes", "{{ 'a\\tb' }}|{{ \"q\\\"q\" }}|{{ 'u\\u00e9' }}|{{ 'x\\x41' }}|{{ 'ad' 'jacent' }}|{{ '{{ not a tag }}' }}|"
     "{{ '%}' }}", {}),
    ("raw_block", "{% raw %}{{ kept }} {% if %}{% endraw %}\n{{ 1 }}", {}),
    ("generation_block", "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}"
     "{% endgeneration %}{% else %}{{ m.content }}{% endif %}|{% endfor %}", {"messages": MSGS}),
    ("content_parts", "{% for m in messages %}{% if m.content is string %}{{ m.content }}{% else %}"
     "{% for p in m.content %}{% if p.type == 'text' %}{{ p.text }}{% elif p.type == 'image' %}<img>{% endif %}"
     "{% endfor %}{% endif %}\n{% endfor %}",
     {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it?"}]},
                   {"role": "assistant", "content": "a cat"}]}),
    ("dict_literal_order", "{% set d = {'z': 1, 'a': 2, 'm': 3} %}{{ d }} {{ d | tojson }} {% for k in d %}{{ k }}{% endfor %}",
     {}),
    ("integer_float_json", "{{ big }} {{ neg }} {{ fl }} {{ 10 / 4 }} {{ 1e16 }} {{ 123456789012345.0 }} {{ 0.0001 }} "
     "{{ 1.5e-7 }} {{ -0.5 }} {{ 3 // 2 * 1.0 }}", {"big": 9007199254740993, "neg": -5, "fl": 0.1}),
    ("undefined_forgiving", "{{ 'a' in nothing }} {{ nothing | length }} {{ nothing is none }} {{ nothing == nothing }} "
     "{{ nothing ~ 'a' }} {{ nothing or 'd' }} {{ 'x' if nothing else 'y' }} {{ nothing | default('z') | upper }} "
     "{% for x in nothing %}never{% endfor %}", {}),
    # templates that must fail: the expected value is the error text
    ("raise_exception", "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with user') }}"
     "{% endif %}ok", {"messages": MSGS}),
    ("undefined_in_arithmetic", "{{ missing + 1 }}", {}),
    ("undefined_attribute_of_undefined", "{{ d.nothing.deeper }}", {"d": {}}),
    ("undefined_to_json", "{{ nothing | tojson }}", {}),
    ("set_attr_on_non_namespace", "{% set d = {} %}{% set d.x = 1 %}", {}),
    ("add_int_and_str", "{{ 1 + 2 ~ 3 }}", {}),
    ("iterate_none", "{% for x in none %}{% endfor %}", {}),
]
# Syntax errors: jinja2 refuses these at compile time, and so must the C++ parser.
# Session 22: what real templates (DeepSeek-V3.2 / V4, Hunyuan, FireFunction) needed.
CASES += [
    ("unknown_filter_in_if_not_taken", "{% if false %}{{ x | from_json }}{% elif false %}{{ 1 is nope }}{% endif %}ok",
     {}),
    ("unknown_filter_in_if_taken", "{% if true %}{{ 1 | no_such }}{% endif %}", {}),
    ("unknown_test_in_if_taken", "{% if 1 is no_such %}x{% endif %}", {}),
    ("unknown_filter_in_cond_expr", "{{ (1 | no_such) if false else 2 }}|{{ 3 if true else (4 | nope) }}", {}),
    ("unknown_filter_in_cond_expr_taken", "{{ (1 | no_such) if true else 2 }}", {}),
    ("filter_block", "{% filter upper %}ab{{ 1 }}{% endfilter %}|{% filter trim|replace('A', 'b') %}  A a  {% endfilter %}"
     "|{% set x %}{% filter trim %}\n  in set\n{% endfilter %}{% endset %}{{ x }}", {}),
    ("str_format", "{{ '{}-{}'.format(1, 'a') }}|{{ '{1}{0}{1}'.format('x', 'y') }}|{{ '{a}={b}'.format(a=1, b=[2]) }}|"
     "{{ '{{}}{}'.format(none) }}|{{ 'no fields'.format(1) }}", {}),
    ("str_format_mixed", "{{ '{}{1}'.format(1, 2) }}", {}),
    ("str_format_index", "{{ '{2}'.format(1, 2) }}", {}),
    ("str_format_name", "{{ '{x}'.format(y=1) }}", {}),
    ("str_format_brace", "{{ 'a}b'.format() }}", {}),
    ("select_map_on_falsy", "{{ none | selectattr('type', 'equalto', 'x') | list }}|{{ none | map(attribute='a') | list }}|"
     "{{ '' | reject | list }}|{{ tools | rejectattr('t') | list | length }}|{{ none | map('nope') | list }}",
     {"tools": None}),
]

# Dict keys that are not strings (ByteDance Seed-OSS's template looks budgets up in {0: 0, 512: 128, ...}),
# loop.changed() and the loop object, recursive for loops, printf-style %-formatting.
TREE = [{"n": "a", "c": [{"n": "b", "c": [{"n": "c"}]}, {"n": "d", "c": []}]}, {"n": "e"}]
CASES += [
    ("dict_int_keys", "{% set d = {1: 'a', 2: 'b', 10: 'c'} %}{{ d }} {{ d[1] }} {{ d.2 }} {{ d[10] }} "
     "{{ d.items() | list }} {{ d.keys() | list }} {{ 1 in d }} {{ '1' in d }} {{ 3 not in d }} {{ d | tojson }} "
     "{{ d | length }} {% for k in d %}{{ k + 1 }},{% endfor %} {% for k, v in d | dictsort(reverse=true) %}{{ k }}={{ v }} "
     "{% endfor %}{{ d.get(2) }} {{ d.get(5, 'none') }} {{ d | items | list }} {{ d[5] is defined }} {{ d | list | sum }}",
     {}),
    ("dict_key_equality", "{{ {1: 'a', 1.0: 'b', true: 'c'} }} {{ {1.0: 'a', 1: 'b'} }} {{ {1: 'x'}[1.0] }} "
     "{{ {true: 'y'}[1] }} {{ {0: 'z'}[false] }} {{ {1: 'x'} == {1.0: 'x'} }} {{ 1.0 in {1: 0} }} {{ true in {1: 0} }} "
     "{{ {1: 1, 'a': 2}.get(true) }} {{ {1: 'a', 1.0: 'b'} | tojson }} {{ {'1': 'a', 1: 'b'} }}", {}),
    ("dict_other_keys", "{{ {none: 1, 1.5: 2, false: 3, (1, 'x'): 4, 'k': 5, -2: 6} }} "
     "{{ {none: 1, 1.5: 2, false: 3, 'k': 5, -2: 6, 1e20: 7, true: 8} | tojson }} {{ {(1, 'x'): 4}[(1, 'x')] }} "
     "{{ {none: 'n'}[none] }} {{ (1, 'x') in {(1, 'x'): 0} }} {{ {missing: 1} }} {{ [missing, (missing,)] }} "
     "{% for k, v in {2.5: 'f', none: 'n'}.items() %}{{ k }}:{{ v }} {% endfor %}{{ {1: 2} | dictsort }}", {}),
    ("dict_tojson_sort_keys", "{{ {10: 1, 9: 2, 100: 3} | tojson(sort_keys=true) }} "
     "{{ {2.5: 'a', 1: 'b', -1: 'c'} | tojson(sort_keys=true, indent=1) }} {{ {'b': {2: 1, 1: 2}} | tojson(sort_keys=true) }}",
     {}),
    ("dict_seed_oss_budget", "{%- set budget_reflections = {0: 0, 512: 128, 1024: 256, 2048: 512, 4096: 512, "
     "8192: 1024, 16384: 1024} -%}\n{%- for thinking_budget in budgets -%}\n"
     "{%- set ns = namespace(interval=None) -%}\n{%- for k, v in budget_reflections | dictsort -%}\n"
     "{%- if ns.interval is none and thinking_budget <= k -%}{%- set ns.interval = v -%}{%- endif -%}\n{%- endfor -%}\n"
     "{%- if ns.interval is none -%}{%- set ns.interval = budget_reflections[16384] -%}{%- endif -%}\n"
     "{{ thinking_budget }}:{{ ns.interval }},\n{%- endfor %}", {"budgets": [-1, 0, 1, 512, 513, 5000, 16384, 20000]}),
    ("dict_unhashable_key", "{{ {[1]: 2} }}", {}),
    ("dict_in_unhashable", "{{ [1] in {1: 2} }}", {}),
    ("dict_missing_int_key", "{{ {1: 2}[5] + 1 }}", {}),
    ("dict_tojson_tuple_key", "{{ {(1, 2): 3} | tojson }}", {}),
    ("dictsort_mixed_keys", "{{ {1: 1, 'a': 2} | dictsort }}", {}),
    ("loop_changed", "{% for x in [1, 1, 2, 3, 3, 1] %}{{ loop.changed(x) }},{% endfor %}|{% for m in messages %}"
     "{% if loop.changed(m.role) %}[{{ m.role }}]{% endif %}{% endfor %}|{% for x in [1, 1, 2] %}"
     "{{ loop.changed(x, loop.index // 2) }}{{ loop.changed() }};{% endfor %}|{% for x in ['a', 'b'] %}"
     "{% for y in [1, 1] %}{{ loop.changed(y) }}{% endfor %}{% endfor %}",
     {"messages": [{"role": "user"}, {"role": "user"}, {"role": "assistant"}, {"role": "user"}]}),
    ("loop_object", "{% for x in [1, 2] %}{{ loop }} {{ loop is mapping }} {{ loop is callable }} {{ loop['index'] }} "
     "{{ loop.length }} {{ loop.nope is defined }} {{ loop == loop }} {{ loop.cycle('a', 'b', 'c') }} "
     "{{ loop.previtem is defined }} {{ loop.nextitem }};{% endfor %}", {}),
    ("loop_not_recursive", "{% for x in [1, 2] %}{{ loop([x]) }}{% endfor %}", {}),
    ("loop_no_previous_item", "{% for x in [1, 2] %}{{ loop.previtem + 1 }}{% endfor %}", {}),
    ("for_recursive", "{% for x in tree recursive %}[{{ x.n }}:{{ loop.depth }}/{{ loop.depth0 }}/{{ loop.index }}/"
     "{{ loop.length }}{{ loop.cycle('+', '-') }}{{ loop.changed(1) }}{% if x.c %}{{ loop(x.c) }}{% endif %}]{% endfor %}",
     {"tree": TREE}),
    ("for_recursive_filter_else_scope", "{% set outer = 'o' %}{% for x in tree if x.n != 'b' recursive %}<{{ x.n }}"
     "{{ outer }}{% set outer = 'i' %}{{ loop(x.c) }}{{ outer }}>{% else %}E{% endfor %}{{ outer }}|"
     "{% for x in tree recursive %}{{ x.n }}{% if x.c %}{{ loop(x.c) }}{% endif %}{% if loop.first %}{% continue %}"
     "{% endif %}!{% if x.n == 'd' %}{% break %}{% endif %}{% endfor %}|{% for x in [1] recursive %}"
     "{{ loop(iterable=[]) }}ok{% endfor %}", {"tree": TREE}),
    ("for_recursive_nested", "{% for x in [[1, [2, [3]]], 4] recursive %}{% if x is iterable %}({{ loop(x) }})"
     "{% else %}{{ x }}@{{ loop.depth }}{% endif %}{% endfor %}|{% for k, v in schema | dictsort recursive %}{{ k }}"
     "{% if v is mapping %}({{ loop(v | dictsort) }}){% else %}={{ v }}{% endif %};{% endfor %}|"
     "{% macro walk(nodes, pfx) %}{% for x in nodes recursive %}{{ pfx }}{{ x.n }}{% for y in [1] %}{{ loop.depth }}"
     "{% endfor %}{% if x.c %}{{ loop(x.c) | upper }}{% endif %}{% endfor %}{% endmacro %}{{ walk(tree, '-') }}",
     {"tree": TREE, "schema": {"b": {"y": 1, "x": {"q": 2}}, "a": 3}}),
    ("for_recursive_not_iterable", "{% for x in [1] recursive %}{{ loop(5) }}{% endfor %}", {}),
    ("format_filter", "{{ '%s|%5.2f|%-6s|%05d|%x|%%|%r|%+d|%.3e' | format('a', 3.14159, 'ab', 42, 255, 'q', 7, 12345.678) }}"
     "\n{{ '%(name)s is %(age)d, %(age)05.1f' | format(name='Bob', age=42) }}|{{ '%s' | format(a=1) }}|{{ 5 | format }}|"
     "{{ '%s' | format([1, 'x']) }}|{{ '%s' | format((1, 2)) }}|{{ ['%s!', '<%s>'] | map('format', 'v') | join }}\n"
     "{{ '%d|%i|%u|%d|%d|%.3d|%.0d|%5.3x|%05.3d|% d|%+d|%-5d|' | format(3.99, -2.5, true, 1e20, -7, 5, 0, 10, 7, 5, -5, 3) }}"
     "\n{{ '%o|%#o|%x|%#x|%X|%#X|%+#010x|%-#8x|' | format(8, 8, 255, 255, 255, -255, 255, 255) }}\n"
     "{{ '%e|%E|%g|%G|%.3g|%#g|%#.0f|%F|%010.3f|%-9.2e|%+.1f' | format(12345.678, 0.00012, 1e20, 1e-5, 3.14159, 2.0, 3.0, "
     "inf | float, -2.5, 1.5, 0.05) }}|{{ '%f|%E|%05f' | format(nan | float, -(inf | float), inf | float) }}\n"
     "{{ '%5s|%-5s|%05s|%.0s|%.2s|%3.1s|%s|%r|%a|%c|%c|%3c|%-3c|' | format('a', 'b', 'c', 'd', '\u00e9t\u00e9', 'xyz', none, "
     "'\u00e9', '\u00e9', 233, 'z', 65, 'b') }}\n{{ '%*d|%-*d|%.*f|%*s' | format(5, 1, 3, 2, 2, 3.14159, -4, 'x') }}|"
     "{{ '%hd %ld %Lf' | format(1, 2, 3) }}|{{ '%s|%r|%s' | format(missing, missing, {1: missing}) }}|"
     "{{ 'abc' | format }}", {"inf": "inf", "nan": "nan"}),
    ("percent_operator", "{{ '%s-%s' % (1, 'a') }}|{{ '%s' % 'x' }}|{{ '%s' % [1, 2] }}|{{ '%d%%' % 50 }}|"
     "{{ '%(a)s/%(b)r' % {'a': 1, 'b': 'x'} }}|{{ '%s %(a)s' % {'a': 1} }}|{{ 'abc' % {} }}|{{ 'abc' % [] }}|"
     "{{ '%s' % missing }}|{{ 'abc' % missing }}|{{ '%.1f' % (2 / 3) }}|{{ ('%s' % 1) ~ 2 }}|{{ '%s' % none }}|"
     "{{ 7 % 3 }}|{{ ('%s and %s' % ('x', 'y')) | upper }}|{{ '%s' % ('x', 'y') | upper }}", {}),
    ("format_too_few_arguments", "{{ '%s %s' | format(1) }}", {}),
    ("format_too_many_arguments", "{{ '%s' | format(1, 2) }}", {}),
    ("format_args_and_kwargs", "{{ '%s' | format(1, a=1) }}", {}),
    ("format_missing_key", "{{ '%(a)s' | format(b=1) }}", {}),
    ("format_needs_mapping", "{{ '%(a)s' % (1,) }}", {}),
    ("format_bad_character", "{{ '\u00e9%y' % 1 }}", {}),
    ("format_incomplete", "{{ 'x%' % () }}", {}),
    ("format_incomplete_key", "{{ '%(a' % {} }}", {}),
    ("format_int_of_str", "{{ '%d' % 'x' }}", {}),
    ("format_hex_of_float", "{{ '%x' % 3.0 }}", {}),
    ("format_float_of_str", "{{ '%f' | format('x') }}", {}),
    ("format_star_not_int", "{{ '%*d' % ('a', 1) }}", {}),
    ("format_char_range", "{{ '%c' % -1 }}", {}),
    ("format_int_of_nan", "{{ '%d' % (v | float) }}", {"v": "nan"}),
    ("format_not_all_converted", "{{ 'abc' % 5 }}", {}),
    ("format_int_of_undefined", "{{ '%d' % missing }}", {}),
]

SYNTAX_ERRORS = [
    ("unclosed_if", "{% if true %}x"),
    ("unclosed_tag", "{{ 1 + "),
    ("unknown_filter", "{{ 1 | no_such_filter }}"),
    ("unknown_test", "{{ 1 is no_such_test }}"),
    ("break_outside_loop", "{% break %}"),
    ("stray_endfor", "{% endfor %}"),
    ("bad_token", "{{ 1 $ 2 }}"),
    ("unterminated_string", "{{ 'abc }}"),
    ("include", "{% include 'x.jinja' %}"),
    ("unknown_filter_in_loop_in_if", "{% if true %}{% for x in [1] %}{{ x | no_such }}{% endfor %}{% endif %}"),
    ("unknown_filter_in_macro_in_if", "{% if false %}{% macro m() %}{{ 1 | no_such }}{% endmacro %}{% endif %}"),
    ("unknown_filter_block_in_if", "{% if false %}{% filter no_such %}x{% endfilter %}{% endif %}"),
    ("unclosed_filter_block", "{% filter upper %}x"),
]

# ---- chat templates in the styles of three families (written here)
CHATML = """{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- else %}
    {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
{%- endif %}
{%- if tools %}
    {{- '<|im_start|>system\\n# Tools\\n<tools>' }}
    {%- for tool in tools %}
        {{- '\\n' + (tool | tojson) }}
    {%- endfor %}
    {{- '\\n</tools><|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'system' and loop.first %}
    {%- elif message.role == 'assistant' and message.tool_calls is defined %}
        {{- '<|im_start|>assistant' }}
        {%- for call in message.tool_calls %}
            {{- '\\n<tool_call>\\n{"name": "' + call.function.name + '", "arguments": ' + (call.function.arguments | tojson) + '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""
LLAMA3 = """{{- bos_token }}
{%- set ns = namespace(system='') %}
{%- if messages[0].role == 'system' %}
    {%- set ns.system = messages[0].content | trim %}
    {%- set messages = messages[1:] %}
{%- endif %}
{%- if ns.system %}
    {{- '<|begin_of_text|>system\\n\\n' + ns.system + '<|eot_id|>' }}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {{- message.role + '\\n\\n' + message.content | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- 'assistant\\n\\n' }}
{%- endif %}
"""
LLAMA2 = """{%- if messages[0]['role'] == 'system' %}
    {%- set loop_messages = messages[1:] %}
    {%- set system_message = '<<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}
{%- else %}
    {%- set loop_messages = messages %}
    {%- set system_message = '' %}
{%- endif %}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- set content = (system_message if loop.index0 == 0 else '') + message['content'] %}
    {%- if message['role'] == 'user' %}
        {{- bos_token + '[INST] ' + content.strip() + ' [/INST]' }}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + content.strip() + ' ' + eos_token }}
    {%- endif %}
{%- endfor %}
"""
CONVERSATIONS = {
    "plain": [{"role": "user", "content": "Write a haiku about the sea."}],
    "system_multi": MSGS[:3] + [{"role": "user", "content": "And in French?\nShort, please."}],
    "tool_call": [{"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "tool_calls": [{"type": "function", "function": {
                      "name": "get_weather", "arguments": {"city": "Paris"}}}]},
                  {"role": "tool", "content": "{\"temp\": 21}"}],
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "tokenizer"))
    args = ap.parse_args()
    jinja_cases = []
    for name, tpl, variables in CASES:
        case = {"name": name, "template": tpl, "vars": variables}
        try:
            case["expected"] = _compile_jinja_template(tpl).render(**variables)
        except Exception as e:  # TemplateError, or a Python error such as TypeError raised while rendering
            case["error"] = f"{type(e).__name__}: {e}"
        jinja_cases.append(case)
    for name, tpl in SYNTAX_ERRORS:
        try:
            _compile_jinja_template(tpl).render()
            sys.exit(f"{name}: jinja2 accepted it")
        except Exception as e:  # TemplateSyntaxError; 'break' outside a loop is Python's SyntaxError
            jinja_cases.append({"name": name, "template": tpl, "vars": {}, "error": f"{type(e).__name__}: {e}",
                                "syntax": True})

    chat_cases = []
    tok_dirs = [("chatml", "bytelevel_qwen2", CHATML), ("llama3", "bytelevel_llama3", LLAMA3)]
    llama2_model = os.path.join(args.shared, "models", "llama2-tokenizer", "tokenizer.model")
    for style, tok_dir, tpl in tok_dirs + [("llama2", None, LLAMA2)]:
        with tempfile.TemporaryDirectory() as tmp:
            if tok_dir:
                for f in ("tokenizer.json", "tokenizer_config.json"):
                    shutil.copy(os.path.join(args.out, tok_dir, f), tmp)
                tok = transformers.AutoTokenizer.from_pretrained(tmp)
            else:
                tok = transformers.LlamaTokenizerFast(vocab_file=llama2_model, legacy=True, from_slow=True,
                                                       add_prefix_space=True)  # as tools/gen_tokenizer_golden.py
            for conv_name, conv in CONVERSATIONS.items():
                if style != "chatml" and conv_name == "tool_call":
                    continue
                for gen in (False, True):
                    if style == "llama2" and gen:
                        continue
                    kwargs = {"tools": [TOOLS[0]]} if conv_name == "tool_call" else {}
                    case = {"style": style, "tokenizer": tok_dir or "llama2-tokenizer", "conversation": conv_name,
                            "messages": conv, "add_generation_prompt": gen, "extra": kwargs}
                    try:
                        case["text"] = tok.apply_chat_template(conv, chat_template=tpl, tokenize=False,
                                                               add_generation_prompt=gen, **kwargs)
                        case["ids"] = tok.apply_chat_template(conv, chat_template=tpl, tokenize=True,
                                                              add_generation_prompt=gen, **kwargs)
                    except jinja2.exceptions.TemplateError as e:
                        case["error"] = str(e)
                    chat_cases.append(case)
    out = {"generator": "tools/gen_chat_template_golden.py",
           "versions": {"transformers": transformers.__version__, "jinja2": jinja2.__version__},
           "templates": {"chatml": CHATML, "llama3": LLAMA3, "llama2": LLAMA2},
           "jinja": jinja_cases, "chat": chat_cases}
    path = os.path.join(args.out, "chat_golden.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"{path}: {len(jinja_cases)} jinja cases, {len(chat_cases)} chat cases")


if __name__ == "__main__":
    main()
