"""A stand-in for pyxis, NVIDIA's Slurm plugin that runs srun steps in containers, so that
slurm/train.sh's container mode can be tested where pyxis and enroot cannot run.
`tests/pyxis_srun/srun` calls it; a test puts that folder first on PATH inside the batch
job, in front of the real srun.

It reproduces the rules of pyxis (README, `srun --help`, its tests/env.bats) that decide
whether a containerised step keeps its settings and its outputs:

1. Environment. Every variable of the step's environment is set in the container, but
   where the image sets the same name, the image's value wins ("their existing values in
   the image take precedence"), unless --container-env=NAME[,NAME...] lists the name: the
   listed names keep the host's value. (A listed name that is not set on the host keeps
   the image's value here; slurm/train.sh lists only names that are set.)
2. Filesystem. The step sees the image's files and, of the host's, only what
   --container-mounts=SRC:DST[:FLAGS][,SRC:DST...] binds (flags joined by "+"; "ro" is
   honoured, the others are accepted and ignored). A source that does not exist fails the
   step; a missing destination is created. Anything written elsewhere stays in the
   container's own filesystem and is gone when the step ends.
3. Working directory: --container-workdir, else the image's WORKDIR, not the job's cwd.
4. A step without --container-image is an ordinary srun step.

Not reproduced: pulling and caching images, --container-name and --container-save,
entrypoints (steps run their command as with --no-container-entrypoint), remapping the
user (steps keep the submitting user), PYXIS_CONTAINER_* variables, enroot's hooks.

The image: --container-image names a JSON file {"dockerfile": PATH, "stage": NAME or null,
"files": {PATH_IN_CONTAINER: HOST_PATH}}. The ENV, WORKDIR and VOLUME lines of that stage
of the Dockerfile (the last one by default) are the image's environment, working directory
and folders; "files" are host paths bound read-only as the image's own files (the job's
Python and virtualenv). The operating system (/usr, /etc, ...) is the host's, read-only.

srun's own options go to the real srun unchanged. Write them as --name=value: a value in
the next argument would be taken for the command.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
SHIM = HERE.parent / "pyxis_srun"
# What a registry's base image declares before the Dockerfile adds to it: Docker's PATH.
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
SYSTEM = ("usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
WITH_VALUE = {"image", "mounts", "workdir", "env", "name", "save"}


def main(argv: list[str]) -> None:
    if argv[:1] == ["--task"]:
        return enter(json.loads(argv[1]), argv[3:])
    pyxis, options, command = split_arguments(argv)
    srun = real_srun()
    if "image" not in pyxis:
        os.execv(srun, [srun, *options, *command])
    # Like pyxis, the container is set up inside each task, after Slurm has set its variables.
    inner = ["unshare", "--mount", "--propagation", "private", sys.executable, str(HERE), "--task"]
    os.execv(srun, [srun, *options, *inner, json.dumps(pyxis), "--", *command])


def split_arguments(argv: list[str]) -> tuple[dict[str, Any], list[str], list[str]]:
    """pyxis' options, srun's own options, and the command."""
    pyxis: dict[str, Any] = {"env": [], "mounts": []}
    options: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--":
            return pyxis, options, list(args)
        if not arg.startswith("-"):
            return pyxis, options, [arg, *args]
        name, has_value, value = arg.partition("=")
        if not name.startswith(("--container-", "--no-container-")):
            options.append(arg)
            continue
        key = name.removeprefix("--container-")
        if key not in WITH_VALUE:
            continue  # a flag such as --no-container-entrypoint: what the stand-in does anyway
        if not has_value:
            value = next(args)
        if key in ("env", "mounts"):
            pyxis[key] += [item for item in value.split(",") if item]
        else:
            pyxis[key] = value
    raise SystemExit("pyxis stand-in: srun was given no command")


def real_srun() -> str:
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != SHIM]
    found = shutil.which("srun", path=os.pathsep.join(path))
    if not found:
        raise SystemExit("pyxis stand-in: no srun on PATH besides the stand-in")
    return found


def load_image(path: Path) -> dict[str, Any]:
    spec = json.loads(path.read_text())
    env, workdir, folders = dockerfile_stage(Path(spec["dockerfile"]), spec.get("stage"))
    return {"env": env, "workdir": workdir, "folders": folders, "files": spec.get("files", {})}


def dockerfile_stage(dockerfile: Path, stage: str | None = None) -> tuple[dict[str, str], str, list[str]]:
    """The environment, working directory and VOLUME folders of one stage of a Dockerfile."""
    stages: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for keyword, rest in instructions(dockerfile.read_text()):
        if keyword == "FROM":
            words = rest.split()
            parent = stages.get(words[0])  # FROM <earlier stage> inherits its environment
            current = json.loads(json.dumps(parent)) if parent else {"env": dict(BASE_ENV), "workdir": "/", "vol": []}
            named = len(words) >= 3 and words[1].upper() == "AS"
            stages[words[2] if named else f"#{len(stages)}"] = current
        elif current is None:
            continue  # ARG lines before the first FROM
        elif keyword == "ENV":
            current["env"].update(env_pairs(rest, current["env"]))
        elif keyword == "WORKDIR":
            current["workdir"] = posixpath.join(current["workdir"], expand(rest.strip(), current["env"]))
        elif keyword == "VOLUME":
            current["vol"] += json.loads(rest) if rest.lstrip().startswith("[") else rest.split()
    if current is None:
        raise SystemExit(f"pyxis stand-in: {dockerfile} has no FROM")
    chosen = stages[stage] if stage else current
    return chosen["env"], chosen["workdir"], chosen["vol"]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        found.append((keyword.upper(), rest.strip()))
        pending = ""
    return found


def env_pairs(rest: str, env: dict[str, str]) -> dict[str, str]:
    """`ENV a=1 b=$a` or the legacy `ENV a 1`; values expand against the environment before
    the instruction, as Docker does."""
    words = shlex.split(rest)
    if "=" not in words[0]:
        return {words[0]: expand(rest.split(None, 1)[1], env)}
    return {name: expand(value, env) for name, _, value in (word.partition("=") for word in words)}


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", lambda m: env.get(m.group(1) or m.group(2), ""), value)


def container_environment(host: dict[str, str], image: dict[str, str], names: list[str]) -> dict[str, str]:
    """Rule 1: the image's values win, except for the names given to --container-env."""
    env = {**host, **image}
    env.update({name: host[name] for name in names if name in host})
    return env


def enter(pyxis: dict[str, Any], command: list[str]) -> None:
    """In one task, inside its own mount namespace: build the container's filesystem on a
    tmpfs, enter it and run the command there."""
    image_file = Path(pyxis["image"])
    image = load_image(image_file)
    task = "-".join(os.environ.get(v, "0") for v in ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_PROCID"))
    root = image_file.parent / f"rootfs-{task}"  # an empty mount point, left in the image's folder
    root.mkdir(exist_ok=True)
    mount("-t", "tmpfs", "-o", "mode=755", "pyxis-standin", str(root))
    for name in SYSTEM:
        host = Path("/", name)
        if host.is_symlink():
            (root / name).symlink_to(host.readlink())
        elif host.is_dir():
            bind(host, root / name, readonly=True)
    for name in ("dev", "proc", "sys"):
        bind(Path("/", name), root / name, readonly=False)
    for name in ("tmp", "var/tmp"):
        (root / name).mkdir(parents=True)
        (root / name).chmod(0o1777)
    for target, source in image["files"].items():
        bind(Path(source), inside(root, target), readonly=True)
    for folder in (image["workdir"], *image["folders"]):
        inside(root, folder).mkdir(parents=True, exist_ok=True)
    for entry in pyxis["mounts"]:
        source, _, rest = entry.partition(":")
        target, _, flags = rest.partition(":")
        if not Path(source).exists():
            sys.exit(f"pyxis stand-in: --container-mounts source {source} does not exist")
        bind(Path(source), inside(root, target or source), readonly="ro" in flags.split("+"))
    env = container_environment(dict(os.environ), image["env"], pyxis["env"])
    os.chroot(root)
    os.chdir(pyxis.get("workdir") or image["workdir"])
    os.execvpe(command[0], command, env)


def inside(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def bind(source: Path, target: Path, *, readonly: bool) -> None:
    if source.is_dir():
        target.mkdir(parents=True, exist_ok=True)
    elif not target.exists():  # it may exist already, in a read-only part of the image
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    mount("--rbind", str(source), str(target))
    if readonly:
        mount("-o", "remount,bind,ro", str(target))


def mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"pyxis stand-in: mount {' '.join(args)}: {done.stderr.strip()}")


if __name__ == "__main__":
    main(sys.argv[1:])
