#!/usr/bin/env python3
"""Chat-template fixtures: prompts rendered by Hugging Face transformers' apply_chat_template.

    pip install transformers jinja2          # no torch needed; tested: transformers 5.24.0, jinja2 3.1.6
    python3 tools/make_chat_fixtures.py      # writes assets/chat/template-fixtures.json

Every request below (an OpenAI chat request body: messages, tools, add_generation_prompt,
chat_template_kwargs) is rendered with both real templates in assets/chat-templates/ through
`PreTrainedTokenizerFast.apply_chat_template(..., tokenize=False)` of the bundled tiny model's
tokenizer (its tokenizer_config.json gives bos_token / eos_token / pad_token, the same strings
as LFM2-8B-A1B's and LFM2.5-8B-A1B's). The request's fields go to apply_chat_template as an
OpenAI server passes them: `tools` and `documents` as given, `add_generation_prompt` (default
true), and `chat_template_kwargs` as extra keyword arguments. A template that raises records
the exception instead of a prompt. `tests/chat.rs` renders each with wmoe and compares byte
for byte; CI needs no Python.
"""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import transformers
from transformers import PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = ["LFM2-8B-A1B", "LFM2.5-8B-A1B"]
OUT = REPO / "assets/chat/template-fixtures.json"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Météo actuelle d'une ville — 天气, with \"quotes\" and a \\ backslash",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. 'Zürich'"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
                "days": {"type": "integer", "minimum": 1, "maximum": 16},
                "precision": {"type": "number", "multipleOf": 0.1, "exclusiveMinimum": 1e-7},
                "big": {"type": "number", "maximum": 1e16, "minimum": -1.5e300, "example": 100.0},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}

SEARCH = {
    "type": "function",
    "function": {
        "name": "search.web",
        "description": "Search with filters\ttab, newline\nand a control \u0001 char 🎉",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "filters": {
                    "type": "object",
                    "properties": {
                        "site": {"type": ["string", "null"]},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "range": {
                            "type": "object",
                            "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
                        },
                    },
                },
                "limit": {"type": "integer", "default": None},
            },
            "required": ["query"],
        },
    },
}

CALL_ARGS = {
    "city": "Zürich",
    "days": 3,
    "precision": 0.5,
    "big": 1e16,
    "small": 1e-05,
    "flags": [True, False, None],
    "names": ["it's", 'say "hi"', "both ' and \"", "back\\slash", "line\nbreak"],
    "nested": {"k": None, "list": [1, 2.0, {"deep": "é"}]},
    "empty": {},
    "mixed": [1, "two", [3.25, -0.0], {"x": "y"}],
}


def call(name, arguments, id="call_0"):
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


def cases():
    """(name, request) pairs."""
    yield "user only", {"messages": [{"role": "user", "content": "Hello!"}]}
    yield "no generation prompt", {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
        ],
        "add_generation_prompt": False,
    }
    yield "multi-turn with system", {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant.\nBe brief."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "  And 3+3?  \n"},
        ],
    }
    yield "tools without system", {
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [WEATHER],
    }
    yield "tools with system, nested schemas, non-ASCII", {
        "messages": [
            {"role": "system", "content": "Use tools when needed."},
            {"role": "user", "content": "Cherche « rust wgpu » puis la météo à Zürich."},
        ],
        "tools": [WEATHER, SEARCH],
    }
    yield "tool call with object arguments and tool result", {
        "messages": [
            {"role": "user", "content": "Weather in Zürich for 3 days?"},
            {"role": "assistant", "content": "", "tool_calls": [call("get_weather", CALL_ARGS)]},
            {"role": "tool", "tool_call_id": "call_0", "content": "{\"temp\": 21.5, \"sky\": \"clear\"}"},
        ],
        "tools": [WEATHER],
    }
    yield "tool call with string arguments", {
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [call("get_weather", json.dumps({"city": "Paris", "days": 2}))],
            },
            {"role": "tool", "content": "sunny"},
        ],
    }
    yield "several tool calls, content before, null content dropped", {
        "messages": [
            {"role": "user", "content": "Two things"},
            {
                "role": "assistant",
                "content": "Let me check both.",
                "tool_calls": [
                    call("get_weather", {"city": "Oslo"}, "a"),
                    call("search.web", {"query": "wgpu", "filters": {"tags": ["gpu", "rust"]}}, "b"),
                ],
            },
            {"role": "tool", "content": "cold", "name": "get_weather"},
            {"role": "tool", "content": ["structured", {"hits": 3}]},
            {"role": "assistant", "content": "Oslo is cold; 3 hits.", "tool_calls": None},
            {"role": "user", "content": "Thanks"},
        ],
    }
    yield "assistant with tool calls and no content", {
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call("get_weather", {"city": "Rome"})]},
        ],
        "add_generation_prompt": False,
    }
    yield "reasoning in earlier and last turns", {
        "messages": [
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "First answer", "reasoning_content": "Earlier thought."},
            {"role": "user", "content": "Second question"},
            {"role": "assistant", "content": "Second answer", "reasoning_content": "Last thought.\nTwo lines."},
        ],
        "add_generation_prompt": False,
    }
    yield "thinking field and think tags in content", {
        "messages": [
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "<think>old reasoning</think>\n\n  Visible answer  "},
            {"role": "user", "content": "Q2"},
            {"role": "assistant", "thinking": "Fresh thinking", "content": "<think>kept?</think>Answer 2"},
        ],
        "add_generation_prompt": False,
    }
    yield "reasoning alias after a tool call", {
        "messages": [
            {"role": "user", "content": "Compute"},
            {"role": "assistant", "reasoning": "Need the tool.", "content": "", "tool_calls": [call("calc", {"expr": "1+1"})]},
            {"role": "tool", "content": "2"},
        ],
    }
    yield "preserve_thinking kwarg", {
        "messages": [
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "<think>r1</think>A1", "reasoning_content": "r1"},
            {"role": "user", "content": "Q2"},
        ],
        "chat_template_kwargs": {"preserve_thinking": True},
    }
    yield "chat_template_kwargs override bos_token", {
        "messages": [{"role": "user", "content": "No BOS please"}],
        "chat_template_kwargs": {"bos_token": "", "unused_flag": [1, 2]},
    }
    yield "list-of-parts content", {
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "System from parts."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look at this: "},
                    {"type": "image", "url": "https://example.com/cat.png"},
                    {"type": "text", "text": " and this."},
                    {"type": "audio", "id": 7},
                ],
            },
        ],
    }
    yield "control characters and emoji", {
        "messages": [
            {"role": "user", "content": "tab\there, bell\u0007, nul-free, emoji 🦀, RTL \u200f mark"},
            {"role": "assistant", "content": "ok\r\n"},
            {"role": "user", "content": ""},
        ],
    }
    yield "empty system content", {
        "messages": [
            {"role": "system", "content": ""},
            {"role": "user", "content": "hi"},
        ],
        "tools": [{"type": "function", "function": {"name": "noop", "parameters": {}}}],
    }
    yield "documents passed through", {
        "messages": [{"role": "user", "content": "Summarise"}],
        "documents": [{"title": "Doc", "text": "Body"}],
    }


def render(tok, template, request):
    kwargs = dict(request.get("chat_template_kwargs") or {})
    try:
        prompt = tok.apply_chat_template(
            request["messages"],
            tools=request.get("tools"),
            documents=request.get("documents"),
            chat_template=template,
            add_generation_prompt=request.get("add_generation_prompt", True),
            tokenize=False,
            **kwargs,
        )
        return {"prompt": prompt}
    except Exception as e:  # the template raised: recorded, wmoe must fail too
        return {"error": f"{type(e).__name__}: {e}"}


def main():
    tok = PreTrainedTokenizerFast.from_pretrained(REPO / "assets/models/tiny-moe")
    templates = {t: (REPO / f"assets/chat-templates/{t}.jinja").read_text() for t in TEMPLATES}
    out = {
        "generated_by": "tools/make_chat_fixtures.py",
        "transformers": transformers.__version__,
        "jinja2": jinja2.__version__,
        "special_tokens": "assets/models/tiny-moe/tokenizer_config.json",
        "templates": {t: f"assets/chat-templates/{t}.jinja" for t in TEMPLATES},
        "cases": [],
    }
    for name, request in cases():
        expected = {t: render(tok, src, request) for t, src in templates.items()}
        out["cases"].append({"name": name, "request": request, "expected": expected})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
    n = sum(len(c["expected"]) for c in out["cases"])
    errors = sum("error" in e for c in out["cases"] for e in c["expected"].values())
    print(f"wrote {OUT.relative_to(REPO)}: {len(out['cases'])} requests, {n} renders ({errors} raise)")


if __name__ == "__main__":
    main()
