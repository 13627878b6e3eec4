#!/usr/bin/env bash
# Fine-tune on N nodes x G GPUs with Slurm:
#
#     sbatch slurm/train.sh                       # settings from the EDIT block below
#     FT_EPOCHS=1 sbatch slurm/train.sh           # any FT_* variable overrides it
#     sbatch --nodes=4 slurm/train.sh             # sbatch options override the #SBATCH lines
#
# One task per node runs the job's launcher, which reads its rank from Slurm, fetches
# and tokenizes the data once for its node, and starts one training process per GPU;
# the first node of the allocation hosts the rendezvous, verifies and publishes.
# Check first:  FTJOB_CHECK=1 sbatch slurm/train.sh  runs the dry run (`python -m job check`)
# on the first node before training: the job stops there with the run's exit code if the
# settings, data, model or output would fail, and its log shows the data report, the
# planned steps and an estimate of the duration. FTJOB_CHECK=only stops after the check.
# It writes nothing to FT_OUTPUT or FT_CHECKPOINT_DIR.
#
#SBATCH --job-name=ftjob
#SBATCH --nodes=2                 # EDIT: number of nodes
#SBATCH --ntasks-per-node=1       # one launcher per node: keep at 1
#SBATCH --gpus-per-node=8         # EDIT: GPUs per node (one training process each)
#SBATCH --cpus-per-task=32        # EDIT: CPU cores per node for data loading
#SBATCH --mem=0                   # all memory of each node
#SBATCH --time=24:00:00           # EDIT: wall-clock limit
#SBATCH --output=logs/%x-%j.out   # per-job log (JSON lines); the logs/ folder must exist
#SBATCH --open-mode=append        # a requeued job keeps the log of its earlier attempts
#SBATCH --signal=B:TERM@120       # warn the job 120 s before the time limit or preemption
#SBATCH --requeue                 # preempted jobs go back to the queue

set -euo pipefail

# --- EDIT: how the job is run ---------------------------------------------------------
# A container image through pyxis/enroot (srun --container-image), or a virtualenv made
# with `make install` on a filesystem every node sees.
FTJOB_IMAGE="${FTJOB_IMAGE:-}"                       # e.g. registry.example.com/ftjob:0.1.0
FTJOB_MOUNTS="${FTJOB_MOUNTS:-}"                     # with an image: more SRC:DST[:ro],... to mount
FTJOB_VENV="${FTJOB_VENV:-$HOME/ftjob/.venv}"
FTJOB_CHECK="${FTJOB_CHECK:-0}"                     # 1: dry run first; only: just the dry run

# --- EDIT: the run --------------------------------------------------------------------
export FT_MODEL="${FT_MODEL:-bert-base-uncased}"
export FT_DATASET="${FT_DATASET:-imdb}"
export FT_OUTPUT="${FT_OUTPUT:-$HOME/ftjob/outputs}"  # or s3://bucket/prefix, hf://org/name
export FT_CACHE_DIR="${FT_CACHE_DIR:-/tmp/ftjob-cache-${USER:-$(id -un)}}"  # node-local disk is fastest
# Checkpoints must outlive the nodes: a shared filesystem or s3://bucket/prefix.
export FT_CHECKPOINT_DIR="${FT_CHECKPOINT_DIR:-$HOME/ftjob/checkpoints}"
# Every node must use the same run id; a requeued job keeps its id and its checkpoints.
export FT_RUN_ID="${FT_RUN_ID:-slurm-${SLURM_JOB_ID}}"
# Secrets (HF_TOKEN, AWS credentials) come from the submitting environment or AWS_PROFILE;
# without HF_TOKEN, the token `hf auth login` stored under HF_HOME. Hub models and datasets
# go to the standard Hugging Face cache (HF_HOME, default ~/.cache/huggingface): point it at
# a cache filled in advance, with HF_HUB_OFFLINE=1, on a cluster without internet.

# --- below here nothing needs editing ---------------------------------------------------
# The rendezvous host: the first node of the allocation. Each task's launcher reads its
# own rank (SLURM_PROCID) inside srun, so nothing rank-specific is expanded here.
FT_MASTER_ADDR="$(scontrol show hostnames "${SLURM_JOB_NODELIST}" | head -n 1)"
export FT_MASTER_ADDR
export PYTHONUNBUFFERED=1
# Since Slurm 22.05 srun no longer reads SLURM_CPUS_PER_TASK: without this, each launcher
# step asks for one CPU per task and tokenization and data loading get one core.
if [[ -n ${SLURM_CPUS_PER_TASK:-} ]]; then
    export SRUN_CPUS_PER_TASK="${SRUN_CPUS_PER_TASK:-${SLURM_CPUS_PER_TASK}}"
fi

echo "ftjob: run ${FT_RUN_ID} on ${SLURM_JOB_NUM_NODES:-1} node(s), rendezvous at ${FT_MASTER_ADDR}" >&2

# Container mode (pyxis). pyxis sets the job's environment in the container, but where the
# image sets the same variable (ours sets FT_OUTPUT=/outputs, FT_CACHE_DIR, HOME, ...) the
# image's value wins unless --container-env names it, and of the host the container sees
# only what --container-mounts binds. So every setting is named and every local path is
# mounted: a run whose FT_OUTPUT is not mounted "completes" into the container's own
# filesystem, which is discarded with it. Besides FT_*, the variables the job reads:
PASS_ENV=" HF_TOKEN HUGGING_FACE_HUB_TOKEN HF_ENDPOINT HF_HUB_OFFLINE HF_DATASETS_OFFLINE
 AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE AWS_REGION
 AWS_DEFAULT_REGION AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 AWS_CA_BUNDLE AWS_CONFIG_FILE
 AWS_SHARED_CREDENTIALS_FILE AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE MLFLOW_TRACKING_URI
 MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD MLFLOW_TRACKING_TOKEN WANDB_API_KEY
 WANDB_PROJECT WANDB_ENTITY WANDB_BASE_URL "

# A local path (not s3://, hf://) made absolute: the container starts in the image's
# WORKDIR, not in this job's directory. Prints nothing for a remote location.
local_path() {
    local value=${1#file://}
    if [[ -n ${value} && ${value} != *://* ]]; then
        realpath -m -- "${value}"
    fi
}

# Sets container_dirs, container_mounts and container_env for srun, exporting absolute
# local paths.
container_options() {
    local name path mounts=() names=()
    container_dirs=()
    # What the job writes, mounted read-write.
    for name in FT_OUTPUT FT_CHECKPOINT_DIR FT_CACHE_DIR; do
        path=$(local_path "${!name:-}")
        if [[ -n ${path} ]]; then
            export "${name}=${path}"
            container_dirs+=("${path}")
            mounts+=("${path}:${path}")
        fi
    done
    # AWS_PROFILE reads ~/.aws, but HOME in the container is the image's.
    if [[ -n ${AWS_PROFILE:-} && -z ${AWS_CONFIG_FILE:-} && -f ${HOME}/.aws/config ]]; then
        export AWS_CONFIG_FILE="${HOME}/.aws/config"
    fi
    if [[ -n ${AWS_PROFILE:-} && -z ${AWS_SHARED_CREDENTIALS_FILE:-} && -f ${HOME}/.aws/credentials ]]; then
        export AWS_SHARED_CREDENTIALS_FILE="${HOME}/.aws/credentials"
    fi
    # What it only reads, where that is a local file or folder: read-only.
    for name in FT_MODEL FT_DATASET AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE AWS_WEB_IDENTITY_TOKEN_FILE \
                AWS_CA_BUNDLE; do
        path=$(local_path "${!name:-}")
        if [[ -n ${path} && -e ${path} ]]; then
            export "${name}=${path}"
            mounts+=("${path}:${path}:ro")
        fi
    done
    if [[ -n ${FTJOB_MOUNTS} ]]; then
        mounts+=("${FTJOB_MOUNTS}")
    fi
    while read -r name; do
        if [[ ${name} == FT_* || ${PASS_ENV} == *" ${name} "* ]]; then
            names+=("${name}")
        fi
    done < <(compgen -e)
    container_mounts=$(IFS=,; echo "${mounts[*]}")
    container_env=$(IFS=,; echo "${names[*]}")
}

if [[ -n "${FTJOB_IMAGE}" ]]; then
    container_options
    echo "ftjob: in image ${FTJOB_IMAGE}, mounting ${container_mounts}" >&2
    # pyxis refuses a mount whose source is missing, and the cache is on each node's disk.
    srun --nodes="${SLURM_JOB_NUM_NODES:-1}" --ntasks="${SLURM_JOB_NUM_NODES:-1}" --ntasks-per-node=1 \
        mkdir -p -- "${container_dirs[@]}"
    in_image=(--container-image="${FTJOB_IMAGE}" --container-mounts="${container_mounts}"
              --no-container-entrypoint)
    launcher=(srun --kill-on-bad-exit=1 --wait=60 "${in_image[@]}" --container-env="${container_env}" ftjob)
    # The dry run also gets FT_NUM_NODES, which is set for it alone (below).
    checker_env=${container_env}
    if [[ ,${checker_env}, != *,FT_NUM_NODES,* ]]; then
        checker_env+=",FT_NUM_NODES"
    fi
    checker=(srun --nodes=1 --ntasks=1 "${in_image[@]}" --container-env="${checker_env}" ftjob check)
else
    launcher=(srun --kill-on-bad-exit=1 --wait=60 "${FTJOB_VENV}/bin/python" -m job)
    checker=(srun --nodes=1 --ntasks=1 "${FTJOB_VENV}/bin/python" -m job check)
fi

if [[ ${FTJOB_CHECK} != 0 ]]; then
    # One task on the first node, planning the steps for every node of the allocation
    # (or for FT_NUM_NODES: `FTJOB_CHECK=only FT_NUM_NODES=4 sbatch --nodes=1 ...`).
    FT_NUM_NODES="${FT_NUM_NODES:-${SLURM_JOB_NUM_NODES:-1}}" "${checker[@]}" || exit $?
    if [[ ${FTJOB_CHECK} == only ]]; then
        exit 0
    fi
fi

# The time-limit warning (--signal above), `scancel --signal=TERM --batch` and preemption
# send SIGTERM to this shell: pass it on to the job's tasks on every node, through Slurm.
# (srun takes a SIGTERM of its own as "kill the step now": SIGKILL, no checkpoint.) The
# job then saves a checkpoint and exits 75, and the job is requeued: it resumes under the
# same run id. Any other status is final: 0 done, 2/3 fix the settings or data (README).
"${launcher[@]}" &
srun_pid=$!
trap 'scancel --signal=TERM "${SLURM_JOB_ID}" 2>/dev/null || true' TERM
status=0
wait "${srun_pid}" || status=$?
while kill -0 "${srun_pid}" 2>/dev/null; do  # the trap ended the first wait early
    status=0
    wait "${srun_pid}" || status=$?
done
if [[ ${status} -eq 75 ]]; then
    echo "ftjob: run ${FT_RUN_ID} stopped with a checkpoint; requeueing job ${SLURM_JOB_ID}" >&2
    scontrol requeue "${SLURM_JOB_ID}"
fi
exit "${status}"
