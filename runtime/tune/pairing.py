"""The pairing check `hermesd tune` runs before it trains: the Hugging Face base it trains on and the
GGUF the adapter is written for must be one network (models/pairing.py says what that means).

Only config.json and tokenizer.json of a hub base are fetched for it (into the Hugging Face cache,
so the later weight download finds them), never the weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hermesd.models.gguf_validate import GGUFValidationError
from hermesd.models.pairing import NetworkFacts, PairingError, check_pair, gguf_facts, hf_facts_from_folder
from hermesd.runtime.tune.base import BaseSpec, TuneError

log = logging.getLogger(__name__)

PAIRING_FILES = ("config.json", "tokenizer.json")


def check_base_pairing(spec: BaseSpec) -> None:
    """Refuse, in one line, a Hugging Face base that is not the network of `spec.gguf`. A GGUF base
    is the served network itself; a base without a GGUF has nothing to pair with."""
    if spec.kind == "gguf" or spec.gguf is None:
        return
    try:
        gguf = gguf_facts(spec.gguf)
        hf = _hf_side(spec)
        check_pair(spec.gguf, gguf, spec.ref, hf)
    except (PairingError, GGUFValidationError) as exc:
        raise TuneError(str(exc)) from None
    log.info("pairing: %s is the network of %s", spec.ref, spec.gguf)


def _hf_side(spec: BaseSpec) -> NetworkFacts:
    if spec.kind == "hf-dir":
        return hf_facts_from_folder(Path(spec.ref))
    return hf_facts_from_folder(_hub_folder(spec.ref))


def _hub_folder(repo: str) -> Path:
    """A folder with the repo's config.json and tokenizer.json (from the cache when offline)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    folder: Path | None = None
    for name in PAIRING_FILES:
        try:
            folder = Path(hf_hub_download(repo, name)).parent
        except EntryNotFoundError:
            if name == "config.json":
                raise TuneError(f"--base {repo}: the repository has no config.json") from None
        except LocalEntryNotFoundError:
            raise TuneError(
                f"--base {repo}: {name} is not in the Hugging Face cache and the hub cannot be reached "
                "(offline?); connect once, or pass a local folder as --base"
            ) from None
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise TuneError(
                f"--base {repo}: the hub refused {name} (HTTP {status}): a gated or missing repository? "
                "Log in with `hf auth login` or check the id"
            ) from None
    assert folder is not None
    return folder
