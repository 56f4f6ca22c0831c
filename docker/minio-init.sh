#!/bin/sh
# Create the two buckets in MinIO and set who may read them (service `minio-init`).
#
# Runs once per `docker compose up`, after MinIO reports healthy; every step is idempotent.
#   primary bucket: private (pristine originals; the app hands out signed, expiring URLs)
#   public bucket:  anonymous read of objects ("download": GetObject only, no listing), as
#                   the CDN origin; only the app's credentials can write to it.
set -eu

: "${MINIO_ENDPOINT:?}" "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}"
: "${PIPELINE_PRIMARY_BUCKET:?}" "${PIPELINE_PUBLIC_BUCKET:?}"

mc alias set pipeline "$MINIO_ENDPOINT" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"

mc mb --ignore-existing "pipeline/$PIPELINE_PRIMARY_BUCKET"
mc mb --ignore-existing "pipeline/$PIPELINE_PUBLIC_BUCKET"

# Explicitly private, so a policy someone set by hand does not survive a restart.
mc anonymous set none "pipeline/$PIPELINE_PRIMARY_BUCKET"
mc anonymous set download "pipeline/$PIPELINE_PUBLIC_BUCKET"

mc anonymous get "pipeline/$PIPELINE_PRIMARY_BUCKET"
mc anonymous get "pipeline/$PIPELINE_PUBLIC_BUCKET"
