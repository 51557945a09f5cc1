# syntax=docker/dockerfile:1
# One image for every gridflex service and for the operator command:
#   docker build -t gridflex .
#   docker run --rm gridflex --help
#   docker run --rm -e GRIDFLEX_KAFKA_BOOTSTRAP=kafka:9092 gridflex run telemetry
# docker-compose.yml builds and runs it, and so can the Helm chart (deploy/helm/gridflex); the local
# stack (`make up`) does not need it.

# Pinned to a patch release (bumped deliberately, never `latest`). Debian release pinned too so
# the glibc under the manylinux wheels (rocksdict, faust, asyncpg) does not change by surprise.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The application lives in /app, laid out as in the repository. The code finds its files from the
# package's own location (gridflex/__init__.py: REPO_ROOT, the directory above gridflex/): the
# program catalogue (programs/), the migrations (migrations/, `gridflex db migrate`), the Avro
# schemas and topic catalogue (schemas/), and the YAML beside the services' modules
# (services/*/openapi.yaml, services/vtn/openadr3.yaml), which pyproject.toml does not declare as
# package data. So the package is installed in editable mode from /app, where REPO_ROOT is /app,
# rather than copied into site-packages, where none of those files would be.
WORKDIR /app

# 1. Third-party dependencies first, from pyproject.toml and the pinned constraints: this layer
#    is reused as long as neither file changes, whatever happens to the code.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# 2. The application: the packages (gridflex/ and services/, with the services' YAML) and the data
#    the code reads at run time relative to REPO_ROOT. README.md* (pyproject's readme) may not
#    exist; pyproject.toml keeps that COPY non-empty.
COPY pyproject.toml README.md* ./
COPY gridflex/ gridflex/
COPY services/ services/
COPY programs/ programs/
COPY migrations/ migrations/
COPY schemas/ /app/schemas/

# 3. gridflex itself, editable (the `gridflex` command, and a finder in site-packages that maps the
#    gridflex and services packages to /app), without its dependencies (layer 1 has them). The
#    bytecode is compiled now, as root: at run time nothing is written under /app, which stays
#    root-owned and read-only to the services (PYTHONDONTWRITEBYTECODE; the chart mounts the root
#    filesystem read-only).
RUN pip install -c constraints.txt --no-deps -e . \
    && python -m compileall -q gridflex services

# 4. A non-root user (fixed uid/gid 10001, numeric so Kubernetes' runAsNonRoot can check it)
#    and the state directory it owns (Faust's RocksDB tables; compose mounts a volume here).
RUN groupadd --system --gid 10001 gridflex \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin gridflex \
    && mkdir -p /var/lib/gridflex \
    && chown 10001:10001 /var/lib/gridflex

# Container defaults: the schemas where REPO_ROOT already puts them (said explicitly, as compose
# and the chart may override it), the state directory above, and /metrics and /health reachable
# from outside the container (the settings' default, 127.0.0.1, only suits a developer's machine).
ENV GRIDFLEX_SCHEMAS_DIR=/app/schemas \
    GRIDFLEX_DATA_DIR=/var/lib/gridflex \
    GRIDFLEX_WEB_HOST=0.0.0.0 \
    GRIDFLEX_LOG_FORMAT=json

USER 10001:10001

# The services' web ports (/metrics, /health, and the HTTP APIs), each service's default
# (services/<service>/settings.py): telemetry, enrollment, dispatch, baseline, settlement, vtn.
EXPOSE 8101 8102 8103 8104 8105 8106

ENTRYPOINT ["gridflex"]
CMD ["--help"]
