from __future__ import annotations

import heapq
import inspect
import json
import textwrap
from typing import Any

import pytest

from llmroute_proxy.routing.tokens import contains_code, estimate_tokens, prompt_text

PROSE = [
    "The committee met on Tuesday to review the budget for the coming year. After a long discussion, "
    "the members agreed that the library would keep its opening hours, but the new reading room would "
    "have to wait until the spring. Several residents asked why the repairs to the roof had taken so "
    "long; the chair explained that the contractor had gone out of business in the middle of the work, "
    "and that a second company had to be found before anything else could happen.",
    "Dear Ms. Alvarez,\n\nThank you for your letter of 12 March. I am sorry to hear that the parcel arrived "
    "damaged. We have arranged for a replacement to be sent to you this week, and you do not need to return "
    "the original item. If anything else goes wrong, please call our customer service team, who will be "
    "happy to help.\n\nKind regards,\nThomas Becker\nHead of Customer Care",
    "Can you explain, in simple terms, why the sky looks blue during the day but turns red and orange at "
    "sunset? My daughter asked me this morning and I realised I only half remember what I learned at school. "
    "I would like an answer that a curious eight-year-old could follow, with one or two everyday examples.",
    "Mountains shape the weather around them. As moist air is pushed up a slope it cools, and the water it "
    "carries condenses into clouds and falls as rain or snow. By the time the air crosses the ridge it has "
    "lost much of its moisture, so the far side often lies in a rain shadow: a dry, sunny region where "
    "deserts and grasslands replace the forests of the wetter slopes. Travellers crossing a range in a single "
    "afternoon can see the landscape change from green valleys to brown hills within a few dozen kilometres.",
]

JAVASCRIPT = """\
import { readFile } from 'node:fs/promises';

export async function loadConfig(path) {
  const raw = await readFile(path, 'utf8');
  const config = JSON.parse(raw);
  if (!config.routes || config.routes.length === 0) {
    throw new Error(`no routes in ${path}`);
  }
  return config.routes.map((route) => ({ ...route, weight: route.weight ?? 1 }));
}
"""

SQL = """\
SELECT c.id, c.name, SUM(o.total) AS revenue
FROM customers c
JOIN orders o ON o.customer_id = c.id
WHERE o.created_at >= DATE '2024-01-01'
GROUP BY c.id, c.name
HAVING SUM(o.total) > 1000
ORDER BY revenue DESC
LIMIT 20;
"""


def _chat_request() -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant that answers in JSON."},
            {"role": "user", "content": "What is the weather in Berlin and in Paris tomorrow?"},
        ],
        "tools": [{
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the weather forecast for a city on a given date",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string", "description": "City name, e.g. Berlin"},
                        "date": {"type": "string", "format": "date"},
                        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    },
                    "required": ["city", "date"],
                },
            },
        }],
        "temperature": 0.2,
        "max_tokens": 512,
    }


def _records() -> list[dict[str, Any]]:
    return [{"id": 1000 + i, "name": f"customer-{i}", "email": f"user{i}@example.com", "active": i % 3 != 0,
             "balance": round(i * 13.37, 2), "tags": ["priority", "eu"] if i % 2 else ["standard"]}
            for i in range(40)]


def _calibration_texts() -> list[tuple[str, str]]:
    texts = [("prose", t) for t in PROSE]
    texts.append(("prose", " ".join(PROSE) * 3))
    texts += [("code", inspect.getsource(module)) for module in (textwrap, heapq, json.decoder)]
    texts += [("code", JAVASCRIPT), ("code", SQL)]
    texts += [("json", json.dumps(_chat_request())), ("json", json.dumps(_chat_request(), indent=2)),
              ("json", json.dumps(_records())), ("json", json.dumps(_records(), indent=2))]
    return texts


@pytest.mark.parametrize(("kind", "text"), _calibration_texts(),
                         ids=[f"{kind}-{i}" for i, (kind, _) in enumerate(_calibration_texts())])
def test_the_estimate_is_within_15_percent_of_o200k_base(kind: str, text: str) -> None:
    bpe_openai = pytest.importorskip("bpe_openai")
    true_count = len(bpe_openai.get_encoding("o200k_base").encode(text))
    assert abs(estimate_tokens(text) - true_count) <= 0.15 * true_count


def test_the_estimate_grows_in_proportion_to_the_text() -> None:
    unit = inspect.getsource(textwrap)[:1500] + PROSE[0]
    one = estimate_tokens(unit)
    for copies in (2, 5, 20, 100):
        assert estimate_tokens(unit * copies) == pytest.approx(one * copies, rel=0.08)


@pytest.mark.parametrize(("text", "expected"), [("", 0), ("hi", 1), ("ok.", 1)])
def test_tiny_texts_count_at_least_one_token_unless_empty(text: str, expected: int) -> None:
    assert estimate_tokens(text) == expected


def test_non_latin_text_costs_more_per_character_than_english() -> None:
    chinese = "这是一个用于测试分词器的中文句子。我们希望估计的令牌数量接近真实值。" * 10
    english = "This sentence is written in English to compare. " * 10
    assert estimate_tokens(chinese) / len(chinese) > 2 * estimate_tokens(english) / len(english)


def test_lone_surrogates_from_json_escapes_do_not_break_the_estimate() -> None:
    assert estimate_tokens("broken \ud800 surrogate") > 0
    assert contains_code("broken \ud800 surrogate") is False


CODE = [
    "```\nanything at all\n```",
    "Why does this fail?\n\ndef parse(line):\n    return line.split(',')\n",
    "class Cache:\n    pass",
    "import os\nprint(os.getcwd())",
    "from collections import OrderedDict\n",
    "#include <stdio.h>\nint main(void) { return 0; }",
    "#define MAX_LEN 128\n",
    "#!/bin/bash\necho hi",
    JAVASCRIPT,
    "function add(a, b) {\n  return a + b;\n}",
    "const add = (a, b) => a + b;\nconsole.log(add(1, 2));",
    "let total = 0;\nitems.forEach(i => total += i.price);",
    "for (int i = 0; i < n; i++) sum += a[i];",
    "for key, value in table.items():\n    print(key, value)",
    "func main() {\n\tfmt.Println(\"hi\")\n}",
    "pub fn parse(input: &str) -> Result<Ast, Error> {\n    todo!()\n}",
    "package main\n",
    SQL,
    "select * from users; -- why is it slow?\nSELECT id FROM users WHERE email = 'a@b.c'",
    "public class Main {\n    public static void main(String[] args) {\n        System.out.println(x);\n    }\n}",
    "x = compute(a, b);\ny = x * 2;",
    "self.count += 1\nif self.count == limit:\n    self.flush()",
]

PROSE_LOOKALIKES = [
    PROSE[0], PROSE[1], PROSE[2], PROSE[3],
    "Please select the items from the list that you want to keep.",
    "Import duties from China rose sharply; exporters complained.\nAnalysts expect a reversal.",
    "The class of 2020 graduated online. It was a strange year for everyone (and their families).",
    "In mathematics, a function (from a set X to a set Y) assigns each element of X exactly one element of Y.",
    "Let x be the number of apples. If you want, call me:\n    I am home after six.",
    "Shopping list:\n- milk;\n- bread;\n- eggs (free range);\n- coffee",
    "The licensee shall keep intact all notices;\nthe above copyright notice shall be included;\n"
    "and the software is provided as is, without warranty of any kind (express or implied).",
    "E = mc2 is the most famous equation in physics.",
    "We define success as shipping on time. The package arrived; the contents were fine.",
    "Meeting notes\n=============\n\nAttendees: Ana, Bo, Chen\nDecisions: move the launch to May",
    "I love you <3 see you at 5 -> dinner at 7",
    json.dumps(_chat_request(), indent=2),
    json.dumps(_records()),
    "for the record, I think the if statement in your email was confusing: please clarify.",
]


@pytest.mark.parametrize("text", CODE)
def test_code_is_recognised(text: str) -> None:
    assert contains_code(text) is True


@pytest.mark.parametrize("text", PROSE_LOOKALIKES)
def test_prose_and_data_are_not_taken_for_code(text: str) -> None:
    assert contains_code(text) is False


def test_a_long_prompt_that_is_mostly_code_counts_as_code() -> None:
    assert contains_code(PROSE[3] + "\n\n" + inspect.getsource(json.decoder) + "\n\n" + PROSE[0])


def test_a_fence_anywhere_in_a_long_prompt_counts_as_code() -> None:
    assert contains_code(PROSE[3] * 100 + "\n```\nx\n```\n" + PROSE[3] * 100)


@pytest.mark.parametrize("text", [
    "a" * 200_000,
    "(" * 200_000,
    "SELECT " + "a, " * 60_000,
    "if " * 60_000,
    "x = " * 60_000,
    ";\n" * 100_000,
    "import " + " " * 200_000,
    "class " + "a" * 200_000,
])
def test_pathological_input_is_answered_without_backtracking(text: str) -> None:
    assert contains_code(text) in (True, False)
    assert estimate_tokens(text) > 0


def test_prompt_text_joins_strings_text_parts_and_tool_call_arguments_and_skips_images() -> None:
    messages: list[Any] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [
            {"type": "text", "text": "what is in this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\": \"cats\"}"}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "three cats"},
        "not a message",
    ]
    text = prompt_text(messages)
    assert text.split("\n") == ["be brief", "what is in this picture?", "lookup", "{\"q\": \"cats\"}", "three cats"]
    assert "base64" not in text


def test_prompt_text_of_no_messages_is_empty() -> None:
    assert prompt_text([]) == ""
