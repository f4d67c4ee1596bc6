"""A fake vLLM OpenAI server that records what it is sent, for the vLLM-specific calls of
`hermesd serve --upstream` (runtime LoRA loading, the grammar field) only: vLLM itself cannot run on
these machines, and the real upstreams of the e2e tests are hermesd and llama-server. It answers the few
endpoints the remote engine uses, in vLLM's shapes: /v1/models (owned_by vllm, max_model_len),
/version, /tokenize, /health, /v1/completions (streamed) and /v1/{load,unload}_lora_adapter."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "NousResearch/Hermes-4-14B"
REPLY = ["Hello", " there", "."]


@dataclass
class Recorder:
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    loras: set[str] = field(default_factory=set)
    auth: set[str | None] = field(default_factory=set)  # the Authorization headers seen

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in self.calls if p == path]


def _handler(rec: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _json(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            rec.calls.append((self.path, {}))
            rec.auth.add(self.headers.get("authorization"))
            if self.path == "/v1/models":
                data = [{"id": MODEL, "object": "model", "owned_by": "vllm", "max_model_len": 4096}]
                data += [{"id": n, "object": "model", "owned_by": "vllm", "parent": MODEL} for n in rec.loras]
                self._json(200, {"object": "list", "data": data})
            elif self.path == "/version":
                self._json(200, {"version": "0.11.0"})
            elif self.path == "/health":
                self._json(200, {})
            else:
                self._json(404, {"detail": "Not Found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            rec.calls.append((self.path, body))
            rec.auth.add(self.headers.get("authorization"))
            if self.path == "/tokenize":
                n = len(body.get("prompt", "").split())
                self._json(200, {"count": n, "max_model_len": 4096, "tokens": list(range(n))})
            elif self.path == "/v1/load_lora_adapter":
                if body.get("lora_name") in rec.loras:
                    self._json(400, {"object": "error", "message": "already loaded", "code": 400})
                    return
                rec.loras.add(body["lora_name"])
                self._reply_text("Success: LoRA adapter loaded")
            elif self.path == "/v1/unload_lora_adapter":
                rec.loras.discard(body.get("lora_name"))
                self._reply_text("Success: LoRA adapter unloaded")
            elif self.path == "/v1/completions":
                if body["model"] not in {MODEL, *rec.loras}:
                    self._json(404, {"object": "error", "message": f"model {body['model']} not found"})
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                chunks = [{"choices": [{"index": 0, "text": t, "finish_reason": None}]} for t in REPLY]
                chunks.append({"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]})
                chunks.append({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}})
                for c in chunks:
                    self.wfile.write(f"data: {json.dumps(c)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
            else:
                self._json(404, {"detail": "Not Found"})

        def _reply_text(self, text: str) -> None:
            data = text.encode()
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextmanager
def fake_vllm() -> Iterator[tuple[str, Recorder]]:
    rec = Recorder()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(rec))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
