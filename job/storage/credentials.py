"""The Hugging Face token, found the way the `hf` command line finds it: the setting
(HF_TOKEN or FT_HF_TOKEN) first, then huggingface_hub's own lookup (HF_TOKEN, the file at
HF_TOKEN_PATH, or the one `hf auth login` stored under HF_HOME). One lookup, so that the
token the job sends is also the one it masks in its logs.
"""

from __future__ import annotations

from job.errors import ConfigError
from job.settings import Settings

# What a missing or refused token's error tells the user to do.
TOKEN_HINT = "set HF_TOKEN, or log in once with `hf auth login` (the token file under HF_HOME or HF_TOKEN_PATH)"


def hub_token(settings: Settings) -> str | None:
    """The token to send to the Hub; None when there is none anywhere."""
    if settings.hf_token is not None:
        return settings.hf_token.get_secret_value()
    from huggingface_hub import get_token

    try:
        return get_token()
    except Exception as exc:  # an OIDC exchange (HF_OIDC_RESOURCE) that failed; a broken token file
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(
            f"cannot read the Hugging Face token ({reason}); check HF_TOKEN, HF_TOKEN_PATH and HF_OIDC_RESOURCE"
        ) from None


def stored_token() -> str | None:
    """The token huggingface_hub would use, for masking only: a lookup that fails masks nothing
    and is reported where the token is needed."""
    from huggingface_hub import get_token

    try:
        return get_token()
    except Exception:
        return None
