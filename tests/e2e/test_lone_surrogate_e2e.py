"""A lone UTF-16 surrogate against the real daemon (llama.cpp's tokenizer behind it): a 400 naming the
field for each endpoint, streamed or not, and the daemon answers the next request.
(tests/serving/test_lone_surrogates.py spoils every text field over the serving layer.)"""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.server_process import ServerProcess

pytestmark = pytest.mark.e2e

# written by hand: json.dumps would escape it the same way, this shows exactly what goes on the wire
CHAT = '{"model": "%s", "messages": [{"role": "user", "content": "hi \\ud800"}], "max_tokens": 4%s}'
COMPLETION = '{"model": "%s", "prompt": "once \\udfff upon", "max_tokens": 4%s}'


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(
    ("path", "template", "param"),
    [("/v1/chat/completions", CHAT, "messages[0].content"), ("/v1/completions", COMPLETION, "prompt")],
    ids=["chat", "completions"],
)
def test_lone_surrogate_is_refused_and_the_daemon_serves_on(
    server: ServerProcess, path: str, template: str, param: str, stream: bool
) -> None:
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)
    model = client.models.list().data[0].id
    body = template % (model, ', "stream": true' if stream else "")
    r = httpx.post(server.base_url + path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert server.proc.poll() is None
