"""Templates are code: schema-valid manifests, linted scripts and Dockerfile, and every
variable they set is a real setting."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from job.errors import ExitCode
from job.settings import ENV_PREFIX, Settings, env_name

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MANIFESTS = [ROOT / "k8s" / "job.yaml", ROOT / "k8s" / "multinode.yaml"]
SCRIPTS = [
    ROOT / "slurm" / "train.sh",
    ROOT / "k8s" / "render.sh",
    ROOT / ".ci" / "run",
    ROOT / "tests" / "pyxis_srun" / "srun",
]
KNOWN = {env_name(name) for name in Settings.model_fields}
# "Another live process owns this run id (its lease is held)": added to job/errors.py by
# the Python side; the manifests and the README decide its fate already.
LEASE_HELD = 8
# Which exit codes fail the Job at once, which retry without counting, which count
# against backoffLimit: the README's reasons, the manifests' podFailurePolicy.
FAIL_AT_ONCE = sorted(
    int(c)
    for c in (
        ExitCode.CONFIG,
        ExitCode.DATA,
        ExitCode.TRAINING,
        ExitCode.VERIFICATION,
        ExitCode.NOT_PROMOTED,
        ExitCode.INTERRUPTED,
    )
)
RETRIED_UNCOUNTED = [int(ExitCode.PREEMPTED)]
RETRIED_COUNTED = [int(ExitCode.INTERNAL), int(ExitCode.STORAGE), LEASE_HELD, 137]


def tool(name: str) -> str:
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    assert path, f"{name} is not installed (make install puts it in .venv)"
    return str(path)


def run(*command: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, input=stdin, capture_output=True, text=True, check=False, cwd=ROOT, timeout=120)


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_manifests_match_the_kubernetes_schema(manifest: Path) -> None:
    result = run(tool("kubernetes-validate"), "--strict", str(manifest))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendered_manifests_are_valid_and_renamed() -> None:
    for manifest in MANIFESTS:
        rendered = run(str(ROOT / "k8s" / "render.sh"), "retrain-20261123-1", "registry.example/ftjob:9", str(manifest))
        assert rendered.returncode == 0, rendered.stderr
        check = run(tool("kubernetes-validate"), "--strict", "-", stdin=rendered.stdout)
        assert check.returncode == 0, check.stdout + check.stderr
        docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
        job = next(d for d in docs if d["kind"] == "Job")
        assert job["metadata"]["name"] == "retrain-20261123-1"
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/ftjob:9"
        assert "ftjob-train" not in rendered.stdout and "ftjob-multinode" not in rendered.stdout
    bad = run(str(ROOT / "k8s" / "render.sh"), "Bad_Name", "img")
    assert bad.returncode == 2 and "is not a valid Job name" in bad.stderr


def render(run_id: str, manifest: Path, image: str = "registry.example/ftjob:9") -> list[dict]:
    rendered = run(str(ROOT / "k8s" / "render.sh"), run_id, image, str(manifest))
    assert rendered.returncode == 0, rendered.stderr
    return [d for d in yaml.safe_load_all(rendered.stdout) if d]


def strictly_valid(doc: dict) -> None:
    """Raises (kubernetes_validate.ValidationError) on a schema violation or unknown field."""
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_every_run_gets_its_own_settings(manifest: Path) -> None:
    """Two runs applied one after the other: each Job reads its own ConfigMap, named after
    the run, from the same file (multinode.yaml stands on its own), so applying run B
    never changes what a retried pod of run A reads."""
    settings = {}
    for run_id in ("retrain-a", "retrain-b"):
        docs = render(run_id, manifest)
        for doc in docs:
            strictly_valid(doc)
            assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == run_id
        (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
        assert config["metadata"]["name"] == f"{run_id}-settings"
        job = next(d for d in docs if d["kind"] == "Job")
        pod = job["spec"]["template"]
        assert pod["metadata"]["labels"]["app.kubernetes.io/instance"] == run_id
        refs = [source["configMapRef"]["name"] for c in pod["spec"]["containers"] for source in c["envFrom"]]
        assert refs == [config["metadata"]["name"]]
        settings[run_id] = config["metadata"]["name"]
    assert settings["retrain-a"] != settings["retrain-b"]
    with pytest.raises(kubernetes_validate.ValidationError):  # strict: a misspelt field fails
        strictly_valid({**job, "spec": {**job["spec"], "backofLimit": 3}})


def test_jobs_fail_fast_on_the_documented_codes_and_run_hardened() -> None:
    permanent = sorted(int(c) for c in (ExitCode.CONFIG, ExitCode.DATA, ExitCode.VERIFICATION))
    assert set(permanent) <= set(FAIL_AT_ONCE)
    for manifest in MANIFESTS:
        job = next(d for d in documents(manifest) if d["kind"] == "Job")
        spec = job["spec"]
        rules = spec["podFailurePolicy"]["rules"]
        assert rules[0] == {
            "action": "FailJob",
            "onExitCodes": {"containerName": "train", "operator": "In", "values": FAIL_AT_ONCE},
        }
        assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules
        assert spec["activeDeadlineSeconds"] and spec["ttlSecondsAfterFinished"]
        pod = spec["template"]["spec"]
        assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"]
        container = pod["containers"][0]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert container["resources"]["limits"]["nvidia.com/gpu"]
        shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"]["medium"] == "Memory"
        secrets = {e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
        assert secrets == {"HF_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def with_options(manifest: Path, folder: Path) -> Path:
    """The manifest with its commented-out options switched on. An option starts with YAML
    flush against the "#" (prose has "# "); its nested lines follow as "#  ..." (two spaces
    or more). Deleting the "#" is all it takes, as the manifests' headers say."""
    lines, in_option = [], False
    for line in manifest.read_text().splitlines():
        comment = re.match(r"^(\s*)#(.*)$", line)
        body = comment.group(2) if comment else ""
        in_option = bool(comment) and (bool(re.match(r"[^\s#]", body)) or (in_option and body.startswith("  ")))
        lines.append(comment.group(1) + body if in_option else line)
    switched_on = folder / manifest.name
    switched_on.write_text("\n".join(lines) + "\n")
    return switched_on


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_cluster_options_are_valid_when_switched_on(manifest: Path, tmp_path: Path) -> None:
    """Off by default, each commented option is a valid manifest once uncommented: GPU
    taint toleration, service account, ephemeral-storage, Kueue queue (and job.yaml's PVC
    for FT_OUTPUT=/outputs). No service account token is mounted either way."""
    default = next(d for d in documents(manifest) if d["kind"] == "Job")
    docs = render("retrain-a", with_options(manifest, tmp_path))
    for doc in docs:
        strictly_valid(doc)
    job = next(d for d in docs if d["kind"] == "Job")
    for spec in (default["spec"]["template"]["spec"], job["spec"]["template"]["spec"]):
        assert spec["automountServiceAccountToken"] is False  # nothing in the job calls the API server
    assert "tolerations" not in default["spec"]["template"]["spec"]
    assert "kueue.x-k8s.io/queue-name" not in default["metadata"]["labels"]
    pod = job["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["serviceAccountName"]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"]
    resources = pod["containers"][0]["resources"]
    assert resources["requests"]["ephemeral-storage"] and resources["limits"]["ephemeral-storage"]
    cache = next(v for v in pod["volumes"] if v["name"] == "cache")
    requested = int(resources["requests"]["ephemeral-storage"].removesuffix("Gi"))
    assert requested >= int(cache["emptyDir"]["sizeLimit"].removesuffix("Gi"))  # the cache fits


def test_outputs_is_suggested_only_with_storage_that_outlives_the_pod(tmp_path: Path) -> None:
    """The root filesystem is read-only and a pod's emptyDir dies with it: FT_OUTPUT=/outputs
    comes with a PersistentVolumeClaim mounted there (commented out, like the suggestion)."""
    job_yaml = ROOT / "k8s" / "job.yaml"
    suggestion = next(line for line in job_yaml.read_text().splitlines() if line.strip().startswith("FT_OUTPUT:"))
    assert "/outputs" in suggestion and "PVC" in suggestion
    default = next(d for d in documents(job_yaml) if d["kind"] == "Job")
    assert all(
        m["mountPath"] != "/outputs" for m in default["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    )
    job = next(d for d in render("retrain-a", with_options(job_yaml, tmp_path)) if d["kind"] == "Job")
    pod = job["spec"]["template"]["spec"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/outputs"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["persistentVolumeClaim"]["claimName"]
    multinode = (ROOT / "k8s" / "multinode.yaml").read_text()
    assert "/outputs" not in multinode  # only the first pod publishes: S3 or the Hub there


def fate(rules: list[dict], code: int) -> str:
    """What Kubernetes does with a pod whose train container exited with `code` (and no
    disruption condition): the first matching rule's action, else "Count" (backoffLimit)."""
    for rule in rules:
        codes = rule.get("onExitCodes")
        if codes and codes.get("containerName", "train") == "train":
            listed = code in codes["values"]
            if listed == (codes["operator"] == "In"):
                return rule["action"]
    return "Count"


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_every_exit_code_has_one_fate_in_one_place(manifest: Path) -> None:
    job = next(d for d in documents(manifest) if d["kind"] == "Job")
    rules = job["spec"]["podFailurePolicy"]["rules"]
    expected = {
        **dict.fromkeys(FAIL_AT_ONCE, "FailJob"),
        **dict.fromkeys(RETRIED_UNCOUNTED, "Ignore"),
        **dict.fromkeys(RETRIED_COUNTED, "Count"),
    }
    assert {code: fate(rules, code) for code in expected} == expected
    assert {int(c) for c in ExitCode} - {0} <= set(expected)  # every code the job exits with is decided
    # One rule per action on exit codes: the policy is read in one place, not pieced together.
    actions = [r["action"] for r in rules if "onExitCodes" in r]
    assert sorted(actions) == ["FailJob", "Ignore"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules


def readme_section(title: str) -> str:
    return (ROOT / "README.md").read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def table_rows(text: str, columns: int) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()]
    return [r for r in rows if len(r) == columns and not set(r[0]) <= {"-", ":"}]


def test_readme_failure_modes_match_the_pod_failure_policy() -> None:
    """The Kubernetes column of the README's failure-modes table says what podFailurePolicy
    does with each code, for every code the manifests decide. (The codes table above it
    lists exactly job/errors.py's codes, tests/test_docs.py; 8 joins both there.)"""
    section = readme_section("Exit codes and failure modes")
    phrases = {
        r"fails (the Job )?at once": "FailJob",
        "without spending `backoffLimit`": "Ignore",
        "retried up to": "Count",
    }
    job = next(d for d in documents(MANIFESTS[0]) if d["kind"] == "Job")
    rules = job["spec"]["podFailurePolicy"]["rules"]
    seen = set()
    for cause, _, code, kubernetes, _ in table_rows(section, 5):
        if not code.isdigit():
            continue
        said = {action for phrase, action in phrases.items() if re.search(phrase, kubernetes)}
        assert said == {fate(rules, int(code))}, f"README row {cause!r} (code {code}): {kubernetes!r}"
        seen.add(int(code))
    assert seen == {*FAIL_AT_ONCE, *RETRIED_UNCOUNTED, *RETRIED_COUNTED}


def manifest_variables() -> set[str]:
    names: set[str] = set()
    for manifest in MANIFESTS:
        for doc in documents(manifest):
            if doc["kind"] == "ConfigMap":
                names |= set(doc["data"])
            if doc["kind"] == "Job":
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    names |= {e["name"] for e in container.get("env", [])}
    return names


def script_variables(path: Path) -> set[str]:
    return set(re.findall(r"\b(FT_[A-Z0-9_]+)\b", path.read_text()))


def test_every_ft_variable_in_the_templates_is_a_setting() -> None:
    used = manifest_variables() | script_variables(ROOT / "slurm" / "train.sh")
    used |= set(re.findall(r"\b(FT_[A-Z0-9_]+)=", (ROOT / "docker" / "Dockerfile").read_text()))
    prefixed = {name for name in used if name.startswith(ENV_PREFIX)}
    assert prefixed - KNOWN == set()
    assert {"FT_RUN_ID", "FT_MODEL", "FT_DATASET", "FT_OUTPUT", "FT_NUM_NODES", "FT_K8S_SERVICE"} <= prefixed
    assert "HF_TOKEN" in KNOWN  # the one unprefixed setting the manifests pass


def test_dockerfile_is_hadolint_clean() -> None:
    result = run(tool("hadolint"), "docker/Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_workflow_is_actionlint_clean() -> None:
    # With shellcheck named, actionlint also checks every `run:` script.
    result = run(tool("actionlint"), "-shellcheck", tool("shellcheck"), "k8s/ci/retrain.yml")
    assert result.returncode == 0, result.stdout + result.stderr


WORKFLOW = ROOT / "k8s" / "ci" / "retrain.yml"


def workflow_steps() -> tuple[dict, dict[str, dict]]:
    flow = yaml.safe_load(WORKFLOW.read_text())
    job = flow["jobs"]["retrain"]
    return {**flow, "job": job}, {step.get("id") or step.get("name") or step["uses"]: step for step in job["steps"]}


def test_ci_workflow_fits_its_runner_and_deletes_a_cancelled_run() -> None:
    flow, steps = workflow_steps()
    job = flow["job"]
    # GitHub-hosted runners end a job after 360 minutes; the run's deadline comes first.
    assert job["runs-on"] == "ubuntu-latest" and "GitHub-hosted" in WORKFLOW.read_text()
    assert int(flow["env"]["DEADLINE_MINUTES"]) < job["timeout-minutes"] <= 360
    cleanup = [s for s in steps.values() if "cancelled()" in str(s.get("if", ""))]
    assert len(cleanup) == 1 and "kubectl delete job,configmap" in cleanup[0]["run"]
    assert "app.kubernetes.io/instance=${RUN_ID}" in cleanup[0]["run"]


def test_ci_render_step_sets_the_deadline_and_labels_the_run(tmp_path: Path) -> None:
    """The workflow's render step, run as it is: a strictly valid Job under the run id it
    reports, with the workflow's deadline, and the label the cleanup step deletes by."""
    flow, steps = workflow_steps()
    env = {**os.environ, **{k: str(v) for k, v in flow["env"].items()}}
    env.update(RUNNER_TEMP=str(tmp_path), GITHUB_OUTPUT=str(tmp_path / "output"), GITHUB_RUN_ATTEMPT="2")
    done = subprocess.run(["bash", "-eo", "pipefail", "-c", steps["render"]["run"]], env=env, cwd=ROOT,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    run_id = (tmp_path / "output").read_text().strip().removeprefix("run_id=")
    assert re.fullmatch(r"retrain-\d{8}-\d{4}-2", run_id)
    docs = [d for d in yaml.safe_load_all((tmp_path / "job.yaml").read_text()) if d]
    for doc in docs:
        strictly_valid(doc)
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == run_id
    job = next(d for d in docs if d["kind"] == "Job")
    assert job["metadata"]["name"] == run_id
    assert job["spec"]["activeDeadlineSeconds"] == int(flow["env"]["DEADLINE_MINUTES"]) * 60


FAKE_KUBECTL = """#!/usr/bin/env bash
# kubectl for the wait step: `get job` answers the next state in $STATES ("error": the
# request fails); `get pods` answers $CODE only when asked for the newest pod's train container.
set -u
if [[ $2 == job ]]; then
    calls=$(( $(cat "$CALLS" 2>/dev/null || echo 0) + 1 )); echo "$calls" > "$CALLS"
    state=$(echo "$STATES" | cut -d' ' -f"$calls")
    [[ $state == error ]] && { echo "connection refused" >&2; exit 1; }
    echo "$state "
elif [[ " $* " == *" --sort-by=.metadata.creationTimestamp "* && $* == *'{.items[-1:]'*'@.name=="train"'* ]]; then
    echo "$CODE"
else
    echo "oldest-pod"
fi
"""


@pytest.mark.parametrize(
    ("states", "code", "returncode", "says"),
    [
        ("error Complete", "", 0, "completed"),
        ("error Failed", "7", 0, "not promoted"),
        ("Failed", "4", 1, "failed (exit code 4)"),
    ],
    ids=["complete-after-a-failed-request", "not-promoted", "failed"],
)
def test_ci_wait_step_reads_the_newest_pod(tmp_path: Path, states: str, code: str, returncode: int, says: str) -> None:
    _, steps = workflow_steps()
    fakes = tmp_path / "bin"
    fakes.mkdir()
    (fakes / "kubectl").write_text(FAKE_KUBECTL)
    (fakes / "sleep").write_text("#!/bin/sh\n")
    for fake in fakes.iterdir():
        fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fakes}:{os.environ['PATH']}", "RUN_ID": "retrain-x", "NAMESPACE": "ml"}
    env.update(DEADLINE_MINUTES="330", STATES=states, CODE=code, CALLS=str(tmp_path / "calls"))
    done = subprocess.run(["bash", "-eo", "pipefail", "-c", steps["Wait for the Job to complete or fail"]["run"]],
                          env=env, capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert done.returncode == returncode and says in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_and_pass_shellcheck(script: Path) -> None:
    assert run("bash", "-n", str(script)).returncode == 0
    result = run(tool("shellcheck"), str(script))
    assert result.returncode == 0, result.stdout


def test_the_dry_run_variant_of_the_job_is_valid() -> None:
    """k8s/job.yaml's header shows how to run `check` first: the same Job with its
    commented `args` line switched on, by the sed command given there."""
    rendered = run(str(ROOT / "k8s" / "render.sh"), "ftjob-check", "registry.example/ftjob:9")
    assert rendered.returncode == 0, rendered.stderr
    dry = run("sed", r's/# args: \["check"\]/args: ["check"]/', stdin=rendered.stdout)
    assert dry.returncode == 0, dry.stderr
    valid = run(tool("kubernetes-validate"), "--strict", "-", stdin=dry.stdout)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    job = next(d for d in yaml.safe_load_all(dry.stdout) if d and d["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["check"]
    assert "args" not in documents(ROOT / "k8s" / "job.yaml")[1]["spec"]["template"]["spec"]["containers"][0]


def sbatch_options(path: Path) -> list[str]:
    return [line.split()[1] for line in path.read_text().splitlines() if line.startswith("#SBATCH ")]


def test_sbatch_template_keeps_requeued_logs_and_hands_its_cpus_to_srun() -> None:
    """Static half of tests/test_slurm.py (which needs slurm-wlm): a requeued job appends
    to its log, steps get the job's --cpus-per-task (srun ignores SLURM_CPUS_PER_TASK
    since Slurm 22.05), and SIGTERM reaches the tasks through Slurm, not through srun."""
    script = ROOT / "slurm" / "train.sh"
    options = sbatch_options(script)
    assert {"--requeue", "--open-mode=append"} <= set(options)
    assert any(o.startswith("--signal=B:TERM@") for o in options)
    text = script.read_text()
    assert 'export SRUN_CPUS_PER_TASK="${SRUN_CPUS_PER_TASK:-${SLURM_CPUS_PER_TASK}}"' in text
    assert 'trap \'scancel --signal=TERM "${SLURM_JOB_ID}"' in text
