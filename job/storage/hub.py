"""Publishing to a Hugging Face Hub model repository: one commit per run.

The commit message names the run id and the headline metric; finding a commit
with this run id's marker means the run was already published. The commit also deletes
every file of the branch that this run did not write (an earlier run's search trials or
TensorBoard events), so the branch holds exactly one run. The endpoint is the standard
HF_ENDPOINT (default huggingface.co), the token HF_TOKEN or the one `hf auth login`
stored (storage.credentials).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from job.errors import StorageError
from job.files import file_listing, write_json
from job.logs import get_logger
from job.settings import Settings
from job.storage.credentials import TOKEN_HINT, hub_token
from job.storage.folder import COMPLETE
from job.storage.locations import Location
from job.storage.outputs import completion_manifest

log = get_logger("job.storage.hub")


def commit_marker(run_id: str) -> str:
    return f"ftjob run {run_id}:"


class HubOutput:
    def __init__(self, location: Location, settings: Settings) -> None:
        self.repo_id = location.ref
        self.revision = settings.hub_revision
        self.private = settings.hub_private
        self.run_id = settings.run_id
        self.token = hub_token(settings)
        self.endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
        self.location = f"hf://{self.repo_id}" + (f"@{self.revision}" if self.revision else "")
        self.model_ref = self.repo_id
        self.model_revision = self.revision
        self._api: Any = None

    @property
    def api(self) -> Any:
        if self._api is None:
            from huggingface_hub import HfApi

            self._api = HfApi(endpoint=self.endpoint, token=self.token)
        return self._api

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        from huggingface_hub.errors import HfHubHTTPError

        try:
            yield
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            detail = (exc.server_message or str(exc)).strip().splitlines()[0][:200]
            if status == 401:
                raise StorageError(
                    f"FT_OUTPUT={self.location}: the Hugging Face token was rejected by {self.endpoint} ({detail}); "
                    "create a token with write access"
                ) from None
            if status == 403:
                raise StorageError(
                    f"FT_OUTPUT={self.location}: the Hugging Face token may not write to {self.repo_id} ({detail}); "
                    f"use a token with write access to '{self.repo_id.split('/')[0]}'"
                ) from None
            raise StorageError(f"FT_OUTPUT={self.location}: the Hub answered {status}: {detail}") from None
        except OSError as exc:  # connection refused, DNS, TLS
            raise StorageError(
                f"FT_OUTPUT={self.location}: cannot reach {self.endpoint} ({exc}); check HF_ENDPOINT and the network"
            ) from None

    def check_writable(self, *, dry_run: bool = False) -> None:
        if not self.token:
            raise StorageError(
                f"FT_OUTPUT={self.location}: publishing to the Hub needs a token with write access; {TOKEN_HINT}"
            )
        with self._translated():
            me = self.api.whoami()
            if dry_run:  # creating the repo or branch would leave them behind
                self._check_rights(me)
                return
            self.api.create_repo(self.repo_id, private=self.private, exist_ok=True, repo_type="model")
            if self.revision:
                self.api.create_branch(self.repo_id, branch=self.revision, exist_ok=True)

    def _check_rights(self, me: dict[str, Any]) -> None:
        """What creating the repo would refuse, read from the token's own description.
        Fine-grained tokens list their rights per repo: those are left to the real run."""
        role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
        namespace = self.repo_id.split("/")[0]
        members = {me.get("name"), *(org.get("name") for org in me.get("orgs") or [])}
        if role == "read" or (role == "write" and namespace not in members):
            reason = "a read-only token" if role == "read" else f"the token's user is not a member of '{namespace}'"
            raise StorageError(
                f"FT_OUTPUT={self.location}: the Hugging Face token may not write to {self.repo_id} ({reason}); "
                f"use a token with write access to '{namespace}'"
            )

    def is_complete(self) -> bool:
        from huggingface_hub.errors import HfHubHTTPError

        with self._translated():
            try:
                commits = self.api.list_repo_commits(self.repo_id, revision=self.revision or "main")
            except HfHubHTTPError as exc:
                if exc.response is not None and exc.response.status_code == 404:
                    return False  # no repo or branch yet (a dry run does not create them): nothing published
                raise
        return any(c.title.startswith(commit_marker(self.run_id)) for c in commits)

    def publish(self, staging: Path, *, message: str) -> str:
        files = file_listing(staging)
        # The commit is atomic, but the listing still lets a reader check every byte.
        write_json(staging / COMPLETE, completion_manifest(files, message=message))
        with self._translated():
            info = self.api.upload_folder(
                repo_id=self.repo_id,
                folder_path=str(staging),
                revision=self.revision,
                # Remote files not in this upload go in the same commit; huggingface_hub keeps
                # .gitattributes, which the Hub needs for LFS.
                delete_patterns="*",
                commit_message=f"{commit_marker(self.run_id)} {message}",
                commit_description=f"Published by ftjob. Files: {len(files)}; see {COMPLETE} for sizes and sha256.",
            )
        log.info("hub.published", location=self.location, commit=getattr(info, "oid", None), files=len(files) + 1)
        return self.location

    def read_published(self, name: str) -> bytes | None:
        return None  # the Hub has no promotion pointer to finish

    def read_latest(self) -> dict[str, Any] | None:
        return None  # on the Hub the head of the branch is the latest; no promotion gate here

    def write_latest(self, pointer: dict[str, Any]) -> None:
        return None
