"""Every setting of the daemon, in one typed object.

Resolution order, highest first: command-line flags, `HERMESD_*` environment variables, the config
file (`--config FILE` or `HERMESD_CONFIG`, TOML), then the defaults below. The CLI builds one
`Settings` and hands it down; nothing else reads the environment.
"""

from __future__ import annotations

import logging
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from hermesd.runtime.engine.context_settings import KVType, kv_type_problem
from hermesd.runtime.engine.speculation import SpeculationSettings

log = logging.getLogger(__name__)

# the engine's speculation defaults are the settings' defaults: one place to change them
SPEC_DEFAULTS = SpeculationSettings()
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class Settings(BaseSettings):
    # env_ignore_empty: an uncommented `HERMESD_X=` line in the env file means "not set"
    model_config = SettingsConfigDict(
        env_prefix="HERMESD_", extra="forbid", validate_default=True, env_ignore_empty=True
    )

    # -- the model
    model: Path | None = Field(None, description="GGUF file to serve (first shard of a split file)")
    served_model_name: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="ids clients may use"
    )
    model_alias: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="PATTERN=ID: requests for a model matching the glob PATTERN go to the served ID "
        "(repeatable, e.g. 'claude-*=hermes-4-70b')",
    )
    chat_format: str | None = Field(None, description="override the detected prompt format")
    hardware: Path | None = Field(None, description="hardware profile JSON used instead of discovery")
    variant: str | None = Field(None, description="Hermes 4 variant to plan for (e.g. hermes-4-14b)")
    quant: str | None = Field(None, description="quantization to plan for (e.g. Q4_K_M)")
    prefer: Literal["quality", "speed"] = Field("quality", description="what the planner optimises")
    offline: bool = Field(False, description="never contact the Hugging Face hub")
    # Without it, serve refuses to start when NVML sees GPUs that the installed llama.cpp cannot use
    # (a CPU-only build): a plan for the GPUs run from RAM is a fraction of the speed, or an OOM kill.
    allow_cpu: bool = Field(
        False, description="serve a CPU-sized plan even though the engine cannot use this machine's GPUs"
    )

    # -- an upstream server instead of a local model (runtime/engine/upstream.py)
    upstream: str | None = Field(
        None,
        description="generate on this OpenAI-compatible server (vLLM, SGLang, llama-server, hermesd) "
        "instead of loading a model here; hermesd still renders prompts and parses output",
    )
    # a secret: from HERMESD_UPSTREAM_KEY or the config file, never a flag (ps would show it)
    upstream_key: SecretStr | None = Field(None, description="the upstream's API key")
    upstream_key_file: Path | None = Field(None, description="file holding the upstream's API key")
    upstream_model: str | None = Field(None, description="the upstream's model id (default: its first)")
    upstream_timeout: float = Field(
        300.0, gt=0, le=86400, description="seconds to wait for the upstream's next bytes (first token too)"
    )
    upstream_connect_timeout: float = Field(10.0, gt=0, le=600, description="seconds to connect to it")
    upstream_adapter_root: str | None = Field(
        None,
        description="the adapter store (<state-dir>/adapters) as the upstream's hosts see it, when they "
        "mount it elsewhere",
    )

    # -- llama.cpp
    ctx: int = Field(8192, ge=256, le=1 << 20, description="context tokens per sequence")
    min_ctx: int | None = Field(
        None,
        ge=256,
        le=1 << 20,
        description="plan at least this many context tokens per sequence (fewer slots, q8_0 KV or a "
        "smaller quant before refusing; never beyond the model's trained context)",
    )
    parallel: int = Field(4, ge=1, le=64, description="sequences decoded together")
    threads: int | None = Field(None, ge=1, le=1024)
    threads_batch: int | None = Field(None, ge=1, le=1024)
    gpu_layers: int = Field(-1, ge=-1, description="-1 offloads every layer a GPU build can take")
    tensor_split: Annotated[list[float], NoDecode] = Field(default_factory=list)
    batch_size: int = Field(512, ge=16, le=65536)
    kv_type: KVType = "f16"
    # None leaves it to llama.cpp ("auto": on where the backend supports it), as llama-server does,
    # so the two run the same attention kernels
    flash_attn: bool | None = Field(None, description="flash attention (default: llama.cpp's auto)")
    # llama.cpp's CPU "extra buffer types" (weight repacking and AMX). None: on, as llama-server has
    # them, unless the CPU reports AMX, which traps in many VMs and kills the process with SIGILL on
    # the first quantized matmul (runtime/hardware.extra_buffers_by_default)
    cpu_extra_buffers: bool | None = None
    # llama.cpp RPC workers (`hermesd worker` on other hosts) that hold some of the layers
    worker: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="HOST:PORT of a `hermesd worker` lending its devices (repeatable; a private network "
        "or a tunnel only)",
    )
    # speculative decoding by prompt lookup (runtime/engine/speculation.py): drafts the continuation
    # of the latest earlier occurrence of the last tokens; output is the same with it on or off
    ngram_lookup: bool = Field(
        False, description="speculative decoding by n-gram lookup in the prompt and output"
    )
    # speculative decoding by a small model that shares the vocabulary (runtime/engine/draft_model.py)
    draft_model: str | None = Field(
        None,
        description="draft model for speculative decoding: a GGUF sharing the model's vocabulary, "
        "or 'auto' (the catalog's draft for the served model, fetched like the model)",
    )
    spec_max_draft: int = Field(
        SPEC_DEFAULTS.max_draft, ge=1, le=64, description="most tokens drafted per stream and step"
    )
    spec_max_streams: int = Field(
        SPEC_DEFAULTS.max_streams,
        ge=1,
        le=1024,
        description="a step that decodes more streams than this is crowded: only streams copying "
        "text draft there",
    )
    spec_crowded_match: int = Field(
        SPEC_DEFAULTS.crowded_match,
        ge=0,
        le=256,
        description="in a crowded step, draft only where the last this many tokens occurred before "
        "(0: no drafts in a crowded step)",
    )
    spec_pool_match: int = Field(
        SPEC_DEFAULTS.pool_match,
        ge=0,
        le=256,
        description="lookup also drafts from earlier requests' text where the last this many tokens "
        "occurred there (0: only the request's own text)",
    )
    spec_priced: bool = Field(
        SPEC_DEFAULTS.priced,
        description="verify only the drafted tokens that this machine's measured step times and "
        "acceptance say pay for themselves (off: every draft the adaptive length allows)",
    )

    # -- reasoning
    think: bool = Field(False, description="reasoning on by default (Hermes 4's default is off)")
    reasoning_budget: int | None = Field(None, ge=0, description="max reasoning tokens per request")
    reasoning_field: Literal["reasoning_content", "reasoning", "both"] = Field(
        "reasoning_content", description="the chat completions field(s) that carry the reasoning"
    )

    # -- HTTP
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    api_key_file: Path | None = None
    admin_api_key: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    insecure_no_auth: bool = False
    cors_origin: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    ui: bool = Field(True, description="serve the chat page at / (--no-ui: no page, / is a 404)")

    # -- limits
    max_queue: int = Field(64, ge=0, le=100_000)
    max_tokens_limit: int = Field(32768, ge=1)
    max_body_bytes: int = Field(8 << 20, ge=1024)
    max_messages: int = Field(1024, ge=1)
    max_stop: int = Field(16, ge=0)
    max_tools: int = Field(128, ge=0)
    drain_timeout: float = Field(30.0, ge=0)

    # -- storage
    state_dir: Path = Field(default_factory=lambda: _default_state_dir())
    log_level: str = "info"

    @field_validator(
        "served_model_name", "cors_origin", "allowed_hosts", "tensor_split", "worker", mode="before"
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("model_alias", mode="before")
    @classmethod
    def _split_aliases(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        for item in value:
            pattern, sep, target = str(item).partition("=")
            if not sep or not pattern.strip() or not target.strip():
                raise ValueError(f"model alias {item!r} is not PATTERN=ID")
        return value

    @field_validator("api_key", "admin_api_key", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _upstream_alone(self) -> Settings:
        if self.upstream is None:
            return self
        if not self.upstream.startswith(("http://", "https://")):
            raise ValueError(f"--upstream {self.upstream!r} is not an http:// or https:// URL")
        if self.model is not None:
            raise ValueError("--upstream and --model exclude each other: the upstream runs the model")
        return self

    def upstream_api_key(self) -> str | None:
        """HERMESD_UPSTREAM_KEY (or the config file's), else the first line of --upstream-key-file."""
        if self.upstream_key is not None:
            return self.upstream_key.get_secret_value()
        if self.upstream_key_file is None:
            return None
        for line in self.upstream_key_file.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                return line.strip()
        raise ValueError(f"{self.upstream_key_file}: no key in the file")

    @model_validator(mode="after")
    def _kv_type_runs(self) -> Settings:
        problem = kv_type_problem(self.kv_type, self.flash_attn)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _ctx_at_least_min_ctx(self) -> Settings:
        if self.min_ctx is not None and self.ctx < self.min_ctx:
            if "ctx" in self.model_fields_set:
                raise ValueError(f"--ctx {self.ctx} is smaller than --min-ctx {self.min_ctx}")
            self.__dict__["ctx"] = self.min_ctx  # not marked as set: the planner still chooses it
        return self

    def model_aliases(self) -> list[tuple[str, str]]:
        """--model-alias as (glob pattern, served id) pairs, in the order given."""
        pairs = (a.partition("=") for a in self.model_alias)
        return [(p.strip(), t.strip()) for p, _, t in pairs]

    def all_api_keys(self) -> list[str]:
        """User keys: the configured ones plus those in api_key_file (one per line, # comments)."""
        keys = [k.get_secret_value() for k in self.api_key]
        if self.api_key_file is not None:
            for line in self.api_key_file.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    keys.append(line)
        return keys

    def admin_keys(self) -> list[str]:
        return [k.get_secret_value() for k in self.admin_api_key]

    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")

    def redacted(self) -> dict[str, Any]:
        """The settings that differ from the defaults, secrets masked, for the start-up log."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if name in self.model_fields_set:
                if name in ("api_key", "admin_api_key"):
                    value = ["***"] * len(value)
                elif name == "upstream_key":
                    value = "***"
                out[name] = str(value) if isinstance(value, Path) else value
        return out


def _default_state_dir() -> Path:
    # systemd's StateDirectory= sets STATE_DIRECTORY; elsewhere follow XDG.
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "hermesd"


class ConfigFileError(ValueError):
    pass


def load_settings(flags: dict[str, Any], config_file: Path | None = None) -> Settings:
    """Resolve flags > environment > config file > defaults into one Settings."""
    file_values: dict[str, Any] = {}
    path = config_file or (Path(os.environ["HERMESD_CONFIG"]) if os.environ.get("HERMESD_CONFIG") else None)
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigFileError(f"{path}: cannot read config file: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigFileError(f"{path}: {exc}") from exc
        file_values = {k.replace("-", "_"): v for k, v in raw.items()}
        unknown = sorted(set(file_values) - set(Settings.model_fields))
        if unknown:
            raise ConfigFileError(f"{path}: unknown setting(s): {', '.join(unknown)}")
    env_names = {n for n in Settings.model_fields if f"HERMESD_{n.upper()}" in os.environ}
    # The environment beats the file: drop file values the environment sets, then let
    # pydantic-settings read the environment; flags are passed as init values, which win.
    merged = {k: v for k, v in file_values.items() if k not in env_names}
    merged.update({k: v for k, v in flags.items() if v is not None and v != () and v != []})
    return Settings(**merged)
