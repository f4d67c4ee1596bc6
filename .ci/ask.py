"""Wait until a `hermesd serve` on 127.0.0.1:PORT is healthy, then ask it one chat completion.

Usage: python3 .ci/ask.py PORT PID. Only the standard library: it runs in the user's environment.
"""

import json
import os
import sys
import time
import urllib.request

port, pid = sys.argv[1], int(sys.argv[2])
base = f"http://127.0.0.1:{port}"
deadline = time.monotonic() + 180
while True:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("hermesd serve exited before it was healthy")
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
            if r.status == 200:
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("hermesd serve was not healthy within 180 s")
    time.sleep(0.5)
# the chat page comes from the installed package's data files (pyproject's package-data)
with urllib.request.urlopen(f"{base}/", timeout=30) as r:
    assert "script-src 'self'" in r.headers["content-security-policy"], r.headers
    assert b'src="/ui/app.js"' in r.read()
for name in ("app.js", "api.js", "markdown.js", "store.js", "style.css"):
    with urllib.request.urlopen(f"{base}/ui/{name}", timeout=30) as r:
        assert r.status == 200 and r.read(), name
with urllib.request.urlopen(f"{base}/v1/models", timeout=30) as r:
    model = json.load(r)["data"][0]["id"]
body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16}
request = urllib.request.Request(
    f"{base}/v1/chat/completions", json.dumps(body).encode(), {"content-type": "application/json"}
)
with urllib.request.urlopen(request, timeout=120) as r:
    reply = json.load(r)
assert reply["usage"]["completion_tokens"] > 0, reply
print(f"{model} answered: {reply['choices'][0]['message']['content']!r}")
