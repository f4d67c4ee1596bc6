"""Stored responses of POST /v1/responses (`store`, `previous_response_id`, GET and DELETE by id).

In memory only, one store per API key (a key never sees another key's responses; without
configured keys everyone shares one), each bounded in count and in bytes: the oldest responses are
dropped first, and a response bigger than the whole byte budget is not stored at all.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

MAX_RESPONSES_PER_KEY = 1024
MAX_BYTES_PER_KEY = 64 * 1024 * 1024


@dataclass(frozen=True)
class StoredResponse:
    response: dict[str, Any]  # the Response object, as GET returns it
    history: tuple[dict[str, Any], ...]  # the conversation so far, as chat messages, with this reply
    size: int


class ResponseStore:
    def __init__(self, max_count: int = MAX_RESPONSES_PER_KEY, max_bytes: int = MAX_BYTES_PER_KEY) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._by_key: dict[str, OrderedDict[str, StoredResponse]] = {}
        self._bytes: dict[str, int] = {}

    def put(self, key: str, response: dict[str, Any], history: list[dict[str, Any]]) -> bool:
        size = len(json.dumps([response, history], ensure_ascii=False).encode())
        if size > self.max_bytes:
            return False
        entries = self._by_key.setdefault(key, OrderedDict())
        self.delete(key, response["id"])
        entries[response["id"]] = StoredResponse(response, tuple(history), size)
        self._bytes[key] = self._bytes.get(key, 0) + size
        while len(entries) > self.max_count or self._bytes[key] > self.max_bytes:
            _, dropped = entries.popitem(last=False)
            self._bytes[key] -= dropped.size
        return True

    def get(self, key: str, response_id: str) -> StoredResponse | None:
        return self._by_key.get(key, OrderedDict()).get(response_id)

    def delete(self, key: str, response_id: str) -> bool:
        entries = self._by_key.get(key)
        dropped = entries.pop(response_id, None) if entries is not None else None
        if dropped is None:
            return False
        self._bytes[key] -= dropped.size
        return True
