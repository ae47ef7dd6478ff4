# The pipeline's scripts in one image. The entrypoint is Python; the command is a script:
#
#   docker build -t ecom-pipeline .
#   docker run IMAGE order_data_consumer.py --log-format json      (the default command)
#   docker run IMAGE ingest_in_fact_table.py
#   docker run IMAGE replay_dlq_payments.py
#   docker run IMAGE -m ecom_pipeline.admin setup
#
# Configuration comes from the environment, as on a laptop (README, "Configuration"). The image
# runs as UID 10001 and writes nothing outside /tmp, so it runs with a read-only root filesystem
# (Kubernetes: readOnlyRootFilesystem with an emptyDir at /tmp; docker: --read-only --tmpfs /tmp).
# tests/unit/test_dockerfile.py holds this file to those facts; `make lint` runs hadolint on it.

# Build stage: the runtime requirements (requirements.txt only, never the dev tools) in a venv.
# Wheels only: every pinned package and its dependencies publish manylinux wheels for CPython
# 3.11 (x86_64 and arm64), so no compiler is needed, and a missing wheel fails the build here.
FROM python:3.11.17-slim-bookworm AS build
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --only-binary=:all: \
        -r /tmp/requirements.txt

# Runtime stage: the same base, the venv, and only what runs.
FROM python:3.11.17-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
RUN groupadd --gid 10001 pipeline \
    && useradd --uid 10001 --gid 10001 --no-log-init --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin pipeline
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# the admin command reads schema.cql beside the package (ecom_pipeline/../schema.cql). Owned by root and
# read-only to the pipeline's user.
COPY schema.cql order_data_producer.py payments_data_producer.py order_data_consumer.py \
     ingest_in_fact_table.py replay_dlq_payments.py ./
COPY ecom_pipeline/ ecom_pipeline/
# Byte code compiled now, as root, since the running image may not write it (read-only, and
# PYTHONDONTWRITEBYTECODE): the package starts without compiling itself each time.
RUN python -m compileall -q ecom_pipeline
USER 10001:10001
# Exec form: Python is PID 1 and receives SIGTERM itself (a stop settles what is held within
# --stop-grace); with one process per container there are no children to reap.
ENTRYPOINT ["python"]
CMD ["order_data_consumer.py"]
