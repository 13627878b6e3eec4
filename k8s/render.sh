#!/usr/bin/env bash
# Render a manifest for one run: the Job renamed to the run id, its ConfigMap to
# <run id>-settings and its Service to <run id>-workers, the instance label set to the
# run id, the image set. The run id becomes FT_RUN_ID inside the pods, so outputs of
# different runs never collide, and a retried pod of one run never reads the settings
# of a run applied after it.
#
#     k8s/render.sh RUN_ID IMAGE [MANIFEST] > job.yaml && kubectl apply -f job.yaml
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
    echo "usage: $0 RUN_ID IMAGE [k8s/job.yaml|k8s/multinode.yaml]" >&2
    exit 2
fi
run_id=$1
image=$2
manifest=${3:-k8s/job.yaml}

# A Job name: lowercase letters, digits and '-', at most 52 characters so that the
# pod names Kubernetes derives from it (and <run id>-workers) stay under 63.
if [[ ! ${run_id} =~ ^[a-z0-9]([a-z0-9-]{0,50}[a-z0-9])?$ ]]; then
    echo "$0: RUN_ID '${run_id}' is not a valid Job name (lowercase letters, digits, '-', at most 52)" >&2
    exit 2
fi
if [[ ! -f ${manifest} ]]; then
    echo "$0: no manifest at '${manifest}'" >&2
    exit 2
fi

# The ConfigMaps are named <Job name>-settings, so the Job names' rules rename them too.
sed -e "s/\bftjob-train\b/${run_id}/g" \
    -e "s/\bftjob-multinode\b/${run_id}/g" \
    -e "s/\bftjob-workers\b/${run_id}-workers/g" \
    -e "s|image: ghcr.io/example/ftjob:0.1.0|image: ${image}|" \
    "${manifest}"
