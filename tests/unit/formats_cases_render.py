"""Expected prompts for the Hermes renderers, written out in full.

The prompt texts below are typed here, not imported from the code under test, so a change in the
renderer shows up as a failing case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hermesd.models.chat import ChatOptions, Message, ToolCall
from hermesd.models.formats.hermes import Style

T = (
    "You are a deep thinking AI, you may use extremely long chains of thought to deeply consider "
    "the problem and deliberate with yourself via systematic reasoning processes to help come to a "
    "correct solution prior to answering. You should enclose your thoughts and internal monologue "
    "inside <think> </think> tags, and then provide your solution or response to the problem."
)
S = "You are Hermes, created by Nous Research."

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get weather by city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TOOLS_TEXT = (
    "# Tools\n\n"
    "You are a function calling AI model. You may call one or more functions to assist with the "
    "user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n\n"
    "<tools>\n"
    '{"type": "function", "function": {"name": "get_weather", "description": "Get weather by city", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}\n'
    "</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n\n"
    "<tool_call>\n"
    '{"name": "<function-name>", "arguments": <args-json-object>}\n'
    "</tool_call>"
)
CALL_PARIS = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
CALL_OSLO = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'

USER_ONLY = (Message("user", "Hi"),)
WITH_SYSTEM = (Message("system", "Be brief."), Message("user", "Hi"))
PRIOR_COT = (
    Message("user", "2+2?"),
    Message("assistant", "<think>\nadd\n</think>\n4"),
    Message("user", "3+3?"),
)
PRIOR_PLAIN = (Message("user", "Hi"), Message("assistant", "Hello!"), Message("user", "Bye"))
PRIOR_SEPARATE = (
    Message("user", "2+2?"),
    Message("assistant", "4", reasoning_content="add"),
    Message("user", "3+3?"),
)
WEATHER_Q = (Message("user", "Weather in Paris?"),)
TOOL_ROUND = (
    Message("user", "Paris and Oslo?"),
    Message(
        "assistant",
        "",
        tool_calls=(
            ToolCall("get_weather", '{"city":"Paris"}', "call_1"),
            ToolCall("get_weather", '{"city": "Oslo"}', "call_2"),
        ),
    ),
    Message("tool", "18C", tool_call_id="call_1"),
    Message("tool", "9C", tool_call_id="call_2"),
)
CONTENT_AND_CALL = (
    Message("user", "Paris?"),
    Message("assistant", "Checking.", tool_calls=(ToolCall("get_weather", '{"city": "Paris"}'),)),
    Message("tool", "18C"),
    Message("assistant", "It is 18C."),
    Message("user", "Thanks"),
)
TRAINING = (Message("user", "2+2?"), Message("assistant", "<think>\nadd\n</think>\n4"))

OFF = ChatOptions()
ON = ChatOptions(thinking=True)
ON_KEEP = ChatOptions(thinking=True, keep_cots=True)
TOOLS_OFF = ChatOptions(tools=(WEATHER_TOOL,))
TOOLS_ON = ChatOptions(thinking=True, tools=(WEATHER_TOOL,))
NO_GEN_ON = ChatOptions(thinking=True, add_generation_prompt=False)


@dataclass(frozen=True)
class RenderCase:
    id: str
    style: Style
    messages: tuple[Message, ...]
    options: ChatOptions
    expected: str
    bos_token: str | None = None
    tags: tuple[str, ...] = field(default=())


_SYS = "<|im_start|>system\n"
_END = "<|im_end|>\n"
_GEN = "<|im_start|>assistant\n"

CHATML_CASES = [
    RenderCase(
        "no system, thinking off",
        "chatml",
        USER_ONLY,
        OFF,
        f"{_SYS}{S}{_END}<|im_start|>user\nHi{_END}{_GEN}",
    ),
    RenderCase(
        "no system, thinking on", "chatml", USER_ONLY, ON, f"{_SYS}{T}{_END}<|im_start|>user\nHi{_END}{_GEN}"
    ),
    RenderCase(
        "caller system, thinking off",
        "chatml",
        WITH_SYSTEM,
        OFF,
        f"{_SYS}Be brief.{_END}<|im_start|>user\nHi{_END}{_GEN}",
    ),
    RenderCase(
        "caller system, thinking on",
        "chatml",
        WITH_SYSTEM,
        ON,
        f"{_SYS}{T}\n\nBe brief.{_END}<|im_start|>user\nHi{_END}{_GEN}",
    ),
    RenderCase(
        "prior cot stripped",
        "chatml",
        PRIOR_COT,
        ON,
        f"{_SYS}{T}{_END}<|im_start|>user\n2+2?{_END}<|im_start|>assistant\n<think> </think>\n4{_END}"
        f"<|im_start|>user\n3+3?{_END}{_GEN}",
    ),
    RenderCase(
        "prior cot kept with keep_cots",
        "chatml",
        PRIOR_COT,
        ON_KEEP,
        f"{_SYS}{T}{_END}<|im_start|>user\n2+2?{_END}<|im_start|>assistant\n<think>\nadd\n</think>\n4{_END}"
        f"<|im_start|>user\n3+3?{_END}{_GEN}",
    ),
    RenderCase(
        "prior cot untouched when thinking off",
        "chatml",
        PRIOR_COT,
        OFF,
        f"{_SYS}{S}{_END}<|im_start|>user\n2+2?{_END}<|im_start|>assistant\n<think>\nadd\n</think>\n4{_END}"
        f"<|im_start|>user\n3+3?{_END}{_GEN}",
    ),
    RenderCase(
        "prior turn without </think> left alone",
        "chatml",
        PRIOR_PLAIN,
        ON,
        f"{_SYS}{T}{_END}<|im_start|>user\nHi{_END}<|im_start|>assistant\nHello!{_END}"
        f"<|im_start|>user\nBye{_END}{_GEN}",
    ),
    RenderCase(
        "separate reasoning_content stripped",
        "chatml",
        PRIOR_SEPARATE,
        ON,
        f"{_SYS}{T}{_END}<|im_start|>user\n2+2?{_END}<|im_start|>assistant\n<think> </think>\n4{_END}"
        f"<|im_start|>user\n3+3?{_END}{_GEN}",
    ),
    RenderCase(
        "separate reasoning_content kept inline",
        "chatml",
        PRIOR_SEPARATE,
        ON_KEEP,
        f"{_SYS}{T}{_END}<|im_start|>user\n2+2?{_END}<|im_start|>assistant\n<think>\nadd\n</think>\n4{_END}"
        f"<|im_start|>user\n3+3?{_END}{_GEN}",
    ),
    RenderCase(
        "tools, thinking off",
        "chatml",
        WEATHER_Q,
        TOOLS_OFF,
        f"{_SYS}{S}\n\n{TOOLS_TEXT}{_END}<|im_start|>user\nWeather in Paris?{_END}{_GEN}",
    ),
    RenderCase(
        "tools, thinking on",
        "chatml",
        WEATHER_Q,
        TOOLS_ON,
        f"{_SYS}{T}\n\n{TOOLS_TEXT}{_END}<|im_start|>user\nWeather in Paris?{_END}{_GEN}",
    ),
    RenderCase(
        "tool calls and grouped responses",
        "chatml",
        TOOL_ROUND,
        TOOLS_OFF,
        f"{_SYS}{S}\n\n{TOOLS_TEXT}{_END}<|im_start|>user\nParis and Oslo?{_END}"
        f"<|im_start|>assistant\n{CALL_PARIS}\n{CALL_OSLO}{_END}"
        f"<|im_start|>user\n<tool_response>\n18C\n</tool_response>\n<tool_response>\n9C\n</tool_response>{_END}"
        f"{_GEN}",
    ),
    RenderCase(
        "content before a call, multi-turn",
        "chatml",
        CONTENT_AND_CALL,
        TOOLS_OFF,
        f"{_SYS}{S}\n\n{TOOLS_TEXT}{_END}<|im_start|>user\nParis?{_END}"
        f"<|im_start|>assistant\nChecking.\n{CALL_PARIS}{_END}"
        f"<|im_start|>user\n<tool_response>\n18C\n</tool_response>{_END}"
        f"<|im_start|>assistant\nIt is 18C.{_END}<|im_start|>user\nThanks{_END}{_GEN}",
    ),
    RenderCase(
        "final assistant turn kept for training",
        "chatml",
        TRAINING,
        NO_GEN_ON,
        f"{_SYS}{T}{_END}<|im_start|>user\n2+2?{_END}<|im_start|>assistant\n<think>\nadd\n</think>\n4{_END}",
    ),
]

_B = "<|begin_of_text|>"
_LSYS = "<|start_header_id|>system<|end_header_id|>\n\n"
_LSYS_TOOLS = "<|start_header_id|>system<|end_header_id|>\n"  # the official 70B tools branch: one newline
_LUSER = "<|start_header_id|>user<|end_header_id|>\n\n"
_LASS = "<|start_header_id|>assistant<|end_header_id|>\n\n"
_EOT = "<|eot_id|>"

LLAMA3_CASES = [
    RenderCase(
        "no system, thinking off", "llama3", USER_ONLY, OFF, f"{_B}{_LSYS}{S}{_EOT}{_LUSER}Hi{_EOT}{_LASS}"
    ),
    RenderCase(
        "no system, thinking on", "llama3", USER_ONLY, ON, f"{_B}{_LSYS}{T}{_EOT}{_LUSER}Hi{_EOT}{_LASS}"
    ),
    RenderCase(
        "caller system, thinking off",
        "llama3",
        WITH_SYSTEM,
        OFF,
        f"{_B}{_LSYS}Be brief.{_EOT}{_LUSER}Hi{_EOT}{_LASS}",
    ),
    RenderCase(
        "caller system, thinking on",
        "llama3",
        WITH_SYSTEM,
        ON,
        f"{_B}{_LSYS}{T}\n\nBe brief.{_EOT}{_LUSER}Hi{_EOT}{_LASS}",
    ),
    RenderCase(
        "prior cot stripped",
        "llama3",
        PRIOR_COT,
        ON,
        f"{_B}{_LSYS}{T}{_EOT}{_LUSER}2+2?{_EOT}{_LASS}<think> </think>\n4{_EOT}{_LUSER}3+3?{_EOT}{_LASS}",
    ),
    RenderCase(
        "prior cot kept with keep_cots",
        "llama3",
        PRIOR_COT,
        ON_KEEP,
        f"{_B}{_LSYS}{T}{_EOT}{_LUSER}2+2?{_EOT}{_LASS}<think>\nadd\n</think>\n4{_EOT}{_LUSER}3+3?{_EOT}{_LASS}",
    ),
    RenderCase(
        "prior turn without </think> left alone",
        "llama3",
        PRIOR_PLAIN,
        ON,
        f"{_B}{_LSYS}{T}{_EOT}{_LUSER}Hi{_EOT}{_LASS}Hello!{_EOT}{_LUSER}Bye{_EOT}{_LASS}",
    ),
    RenderCase(
        "tools, thinking on",
        "llama3",
        WEATHER_Q,
        TOOLS_ON,
        f"{_B}{_LSYS_TOOLS}{T}\n\n{TOOLS_TEXT}{_EOT}{_LUSER}Weather in Paris?{_EOT}{_LASS}",
    ),
    RenderCase(
        "tool calls and grouped responses",
        "llama3",
        TOOL_ROUND,
        TOOLS_OFF,
        f"{_B}{_LSYS_TOOLS}{S}\n\n{TOOLS_TEXT}{_EOT}{_LUSER}Paris and Oslo?{_EOT}"
        f"{_LASS}{CALL_PARIS}\n{CALL_OSLO}{_EOT}"
        f"{_LUSER}<tool_response>\n18C\n</tool_response>\n<tool_response>\n9C\n</tool_response>{_EOT}{_LASS}",
    ),
    RenderCase(
        "bos from the model",
        "llama3",
        USER_ONLY,
        OFF,
        f"<BOS>{_LSYS}{S}{_EOT}{_LUSER}Hi{_EOT}{_LASS}",
        bos_token="<BOS>",
    ),
]

_SB = "<seed:bos>"

SEED_CASES = [
    RenderCase(
        "no system, thinking off", "seed", USER_ONLY, OFF, f"{_SB}{_LSYS}{S}{_EOT}{_LUSER}Hi{_EOT}{_LASS}"
    ),
    RenderCase(
        "caller system, thinking on",
        "seed",
        WITH_SYSTEM,
        ON,
        f"{_SB}{_LSYS}{T}\n\nBe brief.{_EOT}{_LUSER}Hi{_EOT}{_LASS}",
    ),
    RenderCase(
        "prior cot stripped",
        "seed",
        PRIOR_SEPARATE,
        ON,
        f"{_SB}{_LSYS}{T}{_EOT}{_LUSER}2+2?{_EOT}{_LASS}<think> </think>\n4{_EOT}{_LUSER}3+3?{_EOT}{_LASS}",
    ),
    RenderCase(
        "tools, thinking off",
        "seed",
        WEATHER_Q,
        TOOLS_OFF,
        f"{_SB}{_LSYS}{S}\n\n{TOOLS_TEXT}{_EOT}{_LUSER}Weather in Paris?{_EOT}{_LASS}",
    ),
    RenderCase(
        "content before a call, multi-turn",
        "seed",
        CONTENT_AND_CALL,
        TOOLS_ON,
        f"{_SB}{_LSYS}{T}\n\n{TOOLS_TEXT}{_EOT}{_LUSER}Paris?{_EOT}"
        f"{_LASS}Checking.\n{CALL_PARIS}{_EOT}{_LUSER}<tool_response>\n18C\n</tool_response>{_EOT}"
        f"{_LASS}It is 18C.{_EOT}{_LUSER}Thanks{_EOT}{_LASS}",
    ),
    RenderCase(
        "final assistant turn kept for training",
        "seed",
        TRAINING,
        NO_GEN_ON,
        f"{_SB}{_LSYS}{T}{_EOT}{_LUSER}2+2?{_EOT}{_LASS}<think>\nadd\n</think>\n4{_EOT}",
    ),
    RenderCase(
        "bos from the model",
        "seed",
        USER_ONLY,
        OFF,
        f"<s>{_LSYS}{S}{_EOT}{_LUSER}Hi{_EOT}{_LASS}",
        bos_token="<s>",
    ),
]

RENDER_CASES = CHATML_CASES + LLAMA3_CASES + SEED_CASES
