"""Build docker/Dockerfile with podman on a stand-in base image and run the job in it:
non-root, read-only root filesystem, no capabilities, caches and outputs on volumes.

No base image can be pulled here, so the base is Debian bookworm (with python3) made by
debootstrap and imported into podman; torch is the CPU wheel from local disk instead of
the image's default CUDA build. Everything else is the real Dockerfile.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import rows, write

ROOT = Path(__file__).resolve().parents[1]
TORCH_WHEELS = sorted(Path("/opt/wheels").glob("torch-2.13.0+cpu-*.whl"))
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")  # TLS-intercepting proxies sign with it

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(
        not (shutil.which("podman") and shutil.which("debootstrap") and os.geteuid() == 0 and TORCH_WHEELS),
        reason="needs root, podman, debootstrap and the CPU torch wheel in /opt/wheels; .ci/run installs the tools",
    ),
]


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("podman")
    (root / "containers.conf").write_text(
        '[containers]\nnetns = "host"\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
        '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n'
    )
    (root / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\nrunroot = "{root}/run"\ngraphroot = "{root}/graph"\n'
    )
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(root / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
    }

    def run(*args: str, timeout: int = 1800, **kwargs) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )

    yield run
    run("system", "reset", "--force", timeout=300)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def image(podman, tmp_path_factory: pytest.TempPathFactory) -> str:
    rootfs = tmp_path_factory.mktemp("rootfs")
    try:  # the stand-in base's files (a few hundred MB) go whatever happens
        boot = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates", "bookworm",
             str(rootfs), "http://deb.debian.org/debian"],
            capture_output=True, text=True, timeout=1200, check=False,
        )  # fmt: skip
        assert boot.returncode == 0, boot.stdout[-2000:] + boot.stderr[-2000:]
        rootfs.chmod(0o755)  # pytest makes its folders 0700: "/" would shut out the non-root user
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        # Like a registry's base image, the stand-in declares PATH (a bare import has none).
        path = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        imported = podman("import", "--change", path, "-", "localhost/ftjob-base:stand-in", stdin=tar.stdout)
        tar.wait()
        assert imported.returncode == 0, imported.stderr
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)

    build_args = {
        "BASE_IMAGE": "localhost/ftjob-base:stand-in",
        "TORCH_SPEC": "torch==2.13.0+cpu",
        "PIP_FIND_LINKS": "/wheels",
        "PIP_CERT": "/host-ca.crt",
    }
    built = podman(
        "build", "-f", "docker/Dockerfile", "-t", "localhost/ftjob:test",
        *(f"--build-arg={k}={v}" for k, v in build_args.items()),
        "-v", f"{TORCH_WHEELS[0].parent}:/wheels:ro", "-v", f"{HOST_CA}:/host-ca.crt:ro", ".",
        cwd=ROOT,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    return "localhost/ftjob:test"


def test_image_runs_the_job_as_non_root_on_a_read_only_filesystem(
    podman, image: str, tmp_path: Path, tiny_model: Path
) -> None:
    model, data, cache, outputs = (tmp_path / n for n in ("model", "data", "cache", "outputs"))
    shutil.copytree(tiny_model, model)
    model.chmod(0o755)  # pytest's folders are 0700; the container user is not root
    for path in model.iterdir():
        path.chmod(0o644)  # and safetensors writes 0600
    write(data / "train.jsonl", rows("binary", 120))
    for folder in (cache, outputs):
        folder.mkdir()
        os.chown(folder, 10001, 10001)

    user = podman("run", "--rm", "--entrypoint", "id", image)
    assert user.stdout.startswith("uid=10001(ftjob)"), user.stdout + user.stderr
    result = podman(
        "run", "--rm", "--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges",
        "-v", f"{model}:/model:ro", "-v", f"{data}:/data:ro", "-v", f"{cache}:/cache", "-v", f"{outputs}:/outputs",
        "-e", "FT_MODEL=/model", "-e", "FT_DATASET=/data", "-e", "FT_EPOCHS=2", "-e", "FT_RUN_ID=in-image",
        "-e", "HF_HUB_OFFLINE=1",
        image,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    events = [json.loads(line) for line in result.stdout.splitlines()]  # JSON by default in the image
    assert events[-1]["event"] == "run.completed" and events[-1]["location"] == "/outputs/in-image"
    assert (outputs / "in-image" / "_COMPLETE.json").is_file()
    assert (cache / "ftjob" / "prepared").is_dir()  # caches went to the volume, not the image
