"""The Responses API end to end: a real `hermesd serve` on the tiny models, driven by the official
`openai` client (`responses.create`, `responses.stream`, `previous_response_id`, a function tool
round trip) and by the OpenAI Agents SDK's default model running an agent with one function tool."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest

from tests.e2e.server_process import ServerProcess
from tests.fixtures.behaviours import (
    QUESTIONS,
    TERSE_SYSTEM,
    WEATHER_ANSWER,
    WEATHER_ARGUMENTS,
    WEATHER_QUESTION,
    WEATHER_REASONING,
    WEATHER_RESULT,
    WEATHER_TOOL,
)

pytestmark = pytest.mark.e2e

FN = WEATHER_TOOL["function"]
TOOL = {
    "type": "function",
    "name": FN["name"],
    "description": FN["description"],
    "parameters": FN["parameters"],
}


def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def model(server: ServerProcess) -> str:
    return str(client(server).models.list().data[0].id)


def summary(response: Any) -> dict[str, Any]:
    """What a response says, without its ids."""
    out: dict[str, Any] = {
        "status": response.status,
        "text": response.output_text,
        "reasoning": "",
        "calls": [],
    }
    for item in response.output:
        if item.type == "reasoning":
            out["reasoning"] += "".join(part.text for part in item.content or [])
        elif item.type == "function_call":
            out["calls"].append((item.name, json.loads(item.arguments)))
    return out


def create(server: ServerProcess, stream: bool, **kwargs: Any) -> Any:
    """`responses.create`, or `responses.stream` whose deltas must add up to its final response."""
    c = client(server)
    if not stream:
        return c.responses.create(model=model(server), temperature=0, **kwargs)
    text, reasoning, types = "", "", []
    with c.responses.stream(model=model(server), temperature=0, **kwargs) as events:
        for event in events:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
            elif event.type == "response.reasoning_text.delta":
                reasoning += event.delta
        final = events.get_final_response()
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    assert (text, reasoning) == (final.output_text, summary(final)["reasoning"])
    return final


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("think", [False, True])
def test_questions_answer_with_text_input_and_instructions(
    server: ServerProcess, stream: bool, think: bool
) -> None:
    q = QUESTIONS[0]
    effort = {"effort": "high" if think else "none"}
    r = create(server, stream, input=q.question, instructions=TERSE_SYSTEM, reasoning=effort)
    assert summary(r) == {
        "status": "completed",
        "text": q.answer,
        "reasoning": q.reasoning if think else "",
        "calls": [],
    }
    assert r.usage is not None and r.usage.output_tokens > 0
    reasoning_tokens = r.usage.output_tokens_details.reasoning_tokens
    assert (reasoning_tokens > 0) == think


@pytest.mark.parametrize("stream", [False, True])
def test_function_call_after_reasoning(server: ServerProcess, stream: bool) -> None:
    r = create(server, stream, input=WEATHER_QUESTION, tools=[TOOL], reasoning={"effort": "high"})
    assert summary(r) == {
        "status": "completed",
        "text": "",
        "reasoning": WEATHER_REASONING,
        "calls": [("get_weather", WEATHER_ARGUMENTS)],
    }
    assert [item.type for item in r.output] == ["reasoning", "function_call"]


@pytest.mark.parametrize("stream", [False, True])
def test_function_tool_round_trip_with_previous_response_id(server: ServerProcess, stream: bool) -> None:
    first = create(server, stream, input=WEATHER_QUESTION, tools=[TOOL])
    assert summary(first)["calls"] == [("get_weather", WEATHER_ARGUMENTS)]
    call = first.output[-1]
    result = {"type": "function_call_output", "call_id": call.call_id, "output": WEATHER_RESULT}
    second = create(server, stream, previous_response_id=first.id, input=[result], tools=[TOOL])
    assert second.output_text == WEATHER_ANSWER and second.previous_response_id == first.id
    assert client(server).responses.retrieve(second.id).output_text == WEATHER_ANSWER


def test_function_tool_round_trip_with_items_and_no_store(server: ServerProcess) -> None:
    ask = [{"role": "user", "content": WEATHER_QUESTION}]
    first = create(server, False, input=ask, tools=[TOOL], store=False)
    call = first.output[0]
    assert call.type == "function_call"
    items = [*ask, call.model_dump(exclude_none=True)]
    items.append({"type": "function_call_output", "call_id": call.call_id, "output": WEATHER_RESULT})
    second = create(server, False, input=items, tools=[TOOL], store=False)
    assert second.output_text == WEATHER_ANSWER
    with pytest.raises(openai.NotFoundError):
        client(server).responses.retrieve(first.id)


def test_delete_and_errors_in_openai_shape(server: ServerProcess) -> None:
    c = client(server)
    r = create(server, False, input=QUESTIONS[0].question)
    c.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(r.id)
    with pytest.raises(openai.BadRequestError) as bad:
        c.responses.create(model=model(server), input="x", previous_response_id=r.id)
    assert bad.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_agents_sdk_runs_an_agent_with_a_function_tool(server: ServerProcess) -> None:
    agents = pytest.importorskip("agents")
    calls: list[dict[str, Any]] = []

    async def get_weather(_ctx: Any, arguments: str) -> str:
        calls.append(json.loads(arguments))
        return WEATHER_RESULT

    tool = agents.FunctionTool(
        name=FN["name"],
        description=FN["description"],
        params_json_schema=FN["parameters"],
        on_invoke_tool=get_weather,
        strict_json_schema=False,
    )
    agents.set_tracing_disabled(True)
    sdk_client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)
    responses_model = agents.OpenAIResponsesModel(model=model(server), openai_client=sdk_client)
    agent = agents.Agent(
        name="weather",
        tools=[tool],
        model=responses_model,
        model_settings=agents.ModelSettings(temperature=0),
    )
    result = asyncio.run(agents.Runner.run(agent, WEATHER_QUESTION))
    assert calls == [WEATHER_ARGUMENTS]
    assert result.final_output == WEATHER_ANSWER
