"""A small local stand-in for the Hugging Face Hub API, enough for huggingface_hub's
whoami, create_repo, create_branch, upload_folder (with delete_patterns), list_repo_tree
/ list_repo_files and list_repo_commits to really run, and for snapshot_download of a
model (repo info, tree listing, file resolve).

Repos live in memory. Like the Hub, a new repo starts with one commit holding
`.gitattributes`. Tokens: `hf_writer` may write to the `acme` namespace and its own user;
`hf_reader` is valid but read-only; anything else is unauthorized. A private repo is
shown only with a valid token; without one the Hub answers 401 "repository not found",
as the real one does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

# What the Hub writes into a new repo's first commit (abridged: the LFS rules for weights).
GITATTRIBUTES = b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"

TOKENS = {
    "hf_writer": {"name": "writer", "orgs": ["acme"], "role": "write"},
    "hf_reader": {"name": "reader", "orgs": ["acme"], "role": "read"},
}


@dataclass
class Repo:
    private: bool
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {".gitattributes": GITATTRIBUTES}})
    commits: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"main": [_commit_entry(hashlib.sha1(GITATTRIBUTES).hexdigest(), "initial commit")]}
    )
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit id -> files

    def head(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        """The commit id and files of a branch or a commit id."""
        if revision in self.snapshots:
            return revision, self.snapshots[revision]
        if revision in self.branches and self.commits.get(revision):
            oid = self.commits[revision][-1]["id"]
            return oid, self.snapshots.get(oid, self.branches[revision])
        return None


def _commit_entry(oid: str, title: str, message: str = "", author: str | None = None) -> dict[str, Any]:
    """One commit as GET /api/models/{repo}/commits/{rev} lists it."""
    return {
        "id": oid,
        "title": title,
        "message": message,
        "authors": [{"user": author}] if author else [],
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }


def _blob_oid(content: bytes) -> str:
    """The git blob id the Hub reports as a file's `oid`."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _tree(files: dict[str, bytes], folder: str, *, recursive: bool) -> list[dict[str, Any]] | None:
    """GET /api/models/{repo}/tree/{rev}/{folder}: the folder's files and subfolders (with
    `recursive`, everything below it); None when nothing lies under `folder`."""
    prefix = f"{folder}/" if folder else ""
    below = sorted(path for path in files if path.startswith(prefix))
    if folder and not below:
        return None
    entries: dict[str, dict[str, Any]] = {}
    for path in below:
        parts = path[len(prefix) :].split("/")
        # Without `recursive` only the folder's own children: a deeper file shows as its first folder.
        folders = len(parts) - 1 if recursive else min(1, len(parts) - 1)
        for i in range(1, folders + 1):
            sub = prefix + "/".join(parts[:i])
            inside = "".join(p for p in below if p.startswith(sub + "/")).encode()
            entries.setdefault(
                sub, {"type": "directory", "oid": hashlib.sha1(inside).hexdigest(), "size": 0, "path": sub}
            )
        if recursive or len(parts) == 1:
            entries[path] = {"type": "file", "oid": _blob_oid(files[path]), "size": len(files[path]), "path": path}
    return list(entries.values())


@dataclass
class HubState:
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    state: HubState
    lock: threading.Lock

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # --- helpers --------------------------------------------------------------------
    def _user(self) -> dict[str, Any] | None:
        header = self.headers.get("Authorization", "")
        return TOKENS.get(header.removeprefix("Bearer ").strip())

    def _send(self, status: int, payload: Any = None, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload if payload is not None else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, *, code: str | None = None) -> None:
        headers = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {})}
        self._send(status, {"error": message}, headers)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _can_write(self, repo_id: str) -> bool:
        user = self._user()
        if user is None or user["role"] != "write":
            return False
        namespace = repo_id.split("/", maxsplit=1)[0]
        return namespace == user["name"] or namespace in user["orgs"]

    def _readable(self, repo_id: str) -> Repo | None:
        """The repo when this request may see it; else answers 401 "repository not found" (a
        missing repo and a private one without a valid token look alike) and returns None."""
        repo = self.state.repos.get(repo_id)
        if repo is None or (repo.private and self._user() is None):
            self._send(401, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            return None
        return repo

    def _files(self, path: str, *, body: bool) -> bool:
        """Model repo routes that snapshot_download uses; False when `path` is none of them."""
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "revision":
            repo = self._readable(f"{parts[2]}/{parts[3]}")
            if repo is None:
                return True
            found = repo.head(parts[5])
            if found is None:
                self._send(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
                return True
            oid, files = found
            siblings = [{"rfilename": name} for name in sorted(files)]
            self._send(200, {"id": f"{parts[2]}/{parts[3]}", "sha": oid, "private": repo.private, "siblings": siblings})
            return True
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = self._readable(f"{parts[0]}/{parts[1]}")
            if repo is None:
                return True
            found = repo.head(parts[3])
            name = "/".join(parts[4:])
            if found is None or name not in found[1]:
                self._send(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
                return True
            oid, files = found
            data = files[name]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", oid)
            self.end_headers()
            if body:
                self.wfile.write(data)
            return True
        return False

    # --- routes ---------------------------------------------------------------------
    def do_HEAD(self) -> None:
        path = unquote(urlparse(self.path).path)
        self.state.requests.append(f"HEAD {path}")
        if not self._files(path, body=False):
            self.state.unknown.append(f"HEAD {self.path}")
            self._error(404, f"stand-in: no route for HEAD {path}")

    def do_GET(self) -> None:
        path = unquote(urlparse(self.path).path)
        self.state.requests.append(f"GET {path}")
        if self._files(path, body=True):
            return None
        if path == "/api/whoami-v2":
            user = self._user()
            if user is None:
                return self._error(401, "Invalid credentials in Authorization header")
            return self._send(
                200,
                {
                    "type": "user",
                    "name": user["name"],
                    "orgs": [{"name": o} for o in user["orgs"]],
                    "auth": {"type": "access_token", "accessToken": {"displayName": "t", "role": user["role"]}},
                },
            )
        parts = path.strip("/").split("/")
        if len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] == "tree":
            return self._list_tree()
        # /api/models/{ns}/{name}/commits/{rev}
        if len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] == "commits":
            repo = self.state.repos.get(f"{parts[2]}/{parts[3]}")
            if repo is None:
                return self._error(404, "Repository not found", code="RepoNotFound")
            revision = "/".join(parts[5:])
            if revision not in repo.commits:
                return self._error(404, "Revision not found", code="RevisionNotFound")
            return self._send(200, list(reversed(repo.commits[revision])))
        self.state.unknown.append(f"GET {self.path}")
        return self._error(404, f"stand-in: no route for GET {path}")

    def _list_tree(self) -> None:
        """/api/models/{ns}/{name}/tree/{rev}[/{folder}]?recursive=...: huggingface_hub quotes the
        revision as one segment (`a%2Fb`), so it is split off before unquoting. One page: the
        Hub pages at 1000 entries, more than these repos hold."""
        url = urlparse(self.path)
        raw = url.path.strip("/").split("/")
        repo = self._readable(f"{unquote(raw[2])}/{unquote(raw[3])}")
        if repo is None:
            return None
        revision, folder = unquote(raw[5]), unquote("/".join(raw[6:]))
        found = repo.head(revision)  # a branch or a commit id (snapshot_download asks by commit)
        if found is None:
            return self._error(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        recursive = parse_qs(url.query).get("recursive", ["false"])[0].lower() == "true"
        entries = _tree(found[1], folder, recursive=recursive)
        if entries is None:
            return self._error(404, f"{folder} does not exist on {revision}", code="EntryNotFound")
        return self._send(200, entries)

    def do_POST(self) -> None:
        path = unquote(urlparse(self.path).path)
        self.state.requests.append(f"POST {path}")
        body = self._body()
        if path == "/api/repos/create":
            data = json.loads(body)
            repo_id = f"{data.get('organization') or (self._user() or {}).get('name')}/{data['name']}"
            if self._user() is None:
                return self._error(401, "Invalid credentials")
            if not self._can_write(repo_id):
                return self._error(403, "You don't have the rights to create a model under this namespace")
            with self.lock:
                if repo_id in self.state.repos:
                    message = "You already created this model repo"
                    url = f"http://{self.headers['Host']}/{repo_id}"
                    return self._send(409, {"error": message, "url": url}, {"X-Error-Message": message})
                private = data.get("visibility") == "private" or bool(data.get("private"))
                self.state.repos[repo_id] = Repo(private=private)
            return self._send(200, {"url": f"http://{self.headers['Host']}/{repo_id}", "name": repo_id})
        if path == "/api/validate-yaml":
            return self._send(200, {})
        parts = path.strip("/").split("/")
        if len(parts) < 6 or parts[:2] != ["api", "models"]:
            self.state.unknown.append(f"POST {self.path}")
            return self._error(404, f"stand-in: no route for POST {path}")
        repo_id, action, revision = f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
        repo = self.state.repos.get(repo_id)
        if repo is None:
            return self._error(404, "Repository not found")
        if not self._can_write(repo_id):
            return self._error(403, "You don't have write access to this repo")
        if action == "preupload":
            files = json.loads(body)["files"]
            return self._send(
                200,
                {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
            )
        if action == "branch":
            with self.lock:
                repo.branches.setdefault(revision, dict(repo.branches["main"]))
                repo.commits.setdefault(revision, list(repo.commits["main"]))
            return self._send(200, {})
        if action == "commit":
            return self._commit(repo, repo_id, revision, body)
        self.state.unknown.append(f"POST {self.path}")
        return self._error(404, f"stand-in: no route for POST {path}")

    def _commit(self, repo: Repo, repo_id: str, revision: str, body: bytes) -> None:
        if revision not in repo.branches:
            return self._error(404, f"Revision {revision} not found")
        header: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        deleted: list[tuple[str, bool]] = []
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            if item["key"] == "header":
                header = item["value"]
            elif item["key"] == "file":
                value = item["value"]
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] in ("deletedFile", "deletedFolder"):
                deleted.append((item["value"]["path"].rstrip("/"), item["key"] == "deletedFolder"))
            else:
                return self._error(400, f"stand-in: unsupported commit operation {item['key']}")
        oid = hashlib.sha1(body).hexdigest()
        with self.lock:
            # One commit: every deletion and addition lands together, or (a missing path) none.
            tree = dict(repo.branches[revision])
            for name, folder in deleted:
                gone = [p for p in tree if p.startswith(name + "/")] if folder else [name] if name in tree else []
                if not gone:
                    return self._error(404, f"{name} does not exist on {revision}", code="EntryNotFound")
                for path in gone:
                    del tree[path]
            tree.update(files)
            repo.snapshots[oid] = dict(tree)
            repo.branches[revision] = tree
            author = (self._user() or {}).get("name")
            repo.commits[revision].append(
                _commit_entry(oid, header.get("summary", ""), header.get("description", ""), author)
            )
        return self._send(200, {"commitUrl": f"http://{self.headers['Host']}/{repo_id}/commit/{oid}", "commitOid": oid})


class HubStandIn:
    """Runs the stand-in on 127.0.0.1 in a background thread."""

    def __init__(self) -> None:
        self.state = HubState()
        handler = type("Handler", (_Handler,), {"state": self.state, "lock": threading.Lock()})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add_model(self, repo_id: str, folder: Path, *, private: bool) -> None:
        """A model repo holding the files of `folder` in one commit on main."""
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        oid = hashlib.sha1(b"".join(name.encode() + data for name, data in files.items())).hexdigest()
        repo = Repo(private=private, branches={"main": files}, snapshots={oid: dict(files)})
        repo.commits["main"].append({"id": oid, "title": "initial", "message": "", "authors": [], "date": ""})
        self.state.repos[repo_id] = repo

    def __enter__(self) -> HubStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
