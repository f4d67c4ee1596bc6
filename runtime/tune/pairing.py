"""The pairing check `hermesd tune` runs before it trains: the Hugging Face base it trains on and the
GGUF the adapter is written for must be one network (models/pairing.py says what that means).

Only config.json and tokenizer.json of a hub base are fetched for it (into the Hugging Face cache,
through models/hub.py like every download, so the later weight download finds them), never the
weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hermesd.models.gguf_validate import GGUFValidationError
from hermesd.models.hub import HubEnv, HubError, ensure_repo_files
from hermesd.models.pairing import NetworkFacts, PairingError, check_pair, gguf_facts, hf_facts_from_folder
from hermesd.runtime.tune.base import BaseSpec, TuneError

log = logging.getLogger(__name__)

PAIRING_FILES = ("config.json", "tokenizer.json")


def check_base_pairing(spec: BaseSpec, env: HubEnv | None = None) -> None:
    """Refuse, in one line, a Hugging Face base that is not the network of `spec.gguf`. A GGUF base
    is the served network itself; a base without a GGUF has nothing to pair with."""
    if spec.kind == "gguf" or spec.gguf is None:
        return
    try:
        gguf = gguf_facts(spec.gguf)
        hf = _hf_side(spec, env or HubEnv.from_environ())
        check_pair(spec.gguf, gguf, spec.ref, hf)
    except (PairingError, GGUFValidationError) as exc:
        raise TuneError(str(exc)) from None
    log.info("pairing: %s is the network of %s", spec.ref, spec.gguf)


def _hf_side(spec: BaseSpec, env: HubEnv) -> NetworkFacts:
    if spec.kind == "hf-dir":
        return hf_facts_from_folder(Path(spec.ref))
    try:
        folder = ensure_repo_files(spec.ref, env, PAIRING_FILES, required=("config.json",))
    except HubError as exc:
        raise TuneError(f"--base {spec.ref}: {exc}") from None
    return hf_facts_from_folder(folder)
