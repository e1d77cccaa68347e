"""The official `openai` Python client against `wmoe serve`: one chat completion streamed and
one whole, which must give the same message (content, reasoning_content, tool calls) and
finish reason. Not run in CI (needs `pip install openai`); tests/serve.rs runs it in its
ignored test `openai_python_client_agrees`.

    python3 tools/openai_client_check.py http://127.0.0.1:8080/v1 [--tools]

With --tools the request offers a get_weather tool and the answer must hold reasoning and a
call (a server whose model writes them: a real LFM2 model, or the scripted test server).
"""

import sys

from openai import OpenAI

base_url = sys.argv[1]
with_tools = "--tools" in sys.argv[2:]
client = OpenAI(base_url=base_url, api_key="none")

tools = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}]
request = dict(
    model=client.models.list().data[0].id,
    messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    max_tokens=200 if with_tools else 32,
    temperature=0.7,
    seed=42,
)
if with_tools:
    request["tools"] = tools

whole = client.chat.completions.create(**request)
message = whole.choices[0].message
want = {
    "content": message.content,
    "reasoning_content": getattr(message, "reasoning_content", None),
    "tool_calls": [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []],
    "finish_reason": whole.choices[0].finish_reason,
}

content, reasoning, calls, finish, usage = None, None, {}, None, None
stream = client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **request)
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    if not chunk.choices:
        continue
    choice = chunk.choices[0]
    delta = choice.delta
    if delta.content:
        content = (content or "") + delta.content
    r = getattr(delta, "reasoning_content", None)
    if r:
        reasoning = (reasoning or "") + r
    for c in delta.tool_calls or []:
        id_, name, args = calls.get(c.index, (None, "", ""))
        calls[c.index] = (c.id or id_, name + (c.function.name or ""), args + (c.function.arguments or ""))
    if choice.finish_reason:
        finish = choice.finish_reason
got = {
    "content": content,
    "reasoning_content": reasoning,
    "tool_calls": [calls[i] for i in sorted(calls)],
    "finish_reason": finish,
}

print("whole:   ", want)
print("streamed:", got)
print("usage:   ", usage)
assert got == want, "the streamed message differs from the whole one"
assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens
if with_tools:
    assert want["reasoning_content"] and want["tool_calls"], "expected reasoning and a tool call"
    assert want["finish_reason"] == "tool_calls"
print("ok")
