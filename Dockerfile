# syntax=docker/dockerfile:1
# One image for every gridflex service and for the operator command:
#   docker build -t gridflex .
#   docker run --rm gridflex --help
#   docker run --rm -e GRIDFLEX_KAFKA_BOOTSTRAP=kafka:9092 gridflex run telemetry
# docker-compose.yml builds and runs it; the local stack (`make up`) does not need it.

# Pinned to a patch release (bumped deliberately, never `latest`). Debian release pinned too so
# the glibc under the manylinux wheels (rocksdict, faust, asyncpg) does not change by surprise.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The build happens in /src, which is deleted once installed: at run time the code lives only in
# site-packages (so `import gridflex` never picks up a stray source copy from the working dir).
WORKDIR /src

# 1. Third-party dependencies first, from pyproject.toml and the pinned constraints: this layer
#    is reused as long as neither file changes, whatever happens to the code.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# 2. The gridflex packages themselves (gridflex/ and services/), as a regular, non-editable install.
#    README.md* (pyproject's readme) may not exist yet; pyproject.toml keeps the COPY non-empty.
COPY pyproject.toml README.md* ./
COPY gridflex/ gridflex/
COPY services/ services/
RUN pip install -c constraints.txt . \
    && cd / && rm -rf /src

WORKDIR /app

# 3. The Avro schemas and the topic catalogue. The package finds them through
#    GRIDFLEX_SCHEMAS_DIR: its default (the repo root's schemas/, computed from the package
#    location) would point next to site-packages in an installed copy.
COPY schemas/ /app/schemas/

# 4. A non-root user (fixed uid/gid 10001, numeric so Kubernetes' runAsNonRoot can check it)
#    and the state directory it owns (Faust's RocksDB tables; compose mounts a volume here).
RUN groupadd --system --gid 10001 gridflex \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin gridflex \
    && mkdir -p /var/lib/gridflex \
    && chown 10001:10001 /var/lib/gridflex

# Container defaults: schemas and state as above; /metrics and /health reachable from outside
# the container (the settings' default, 127.0.0.1, only suits a developer's machine).
ENV GRIDFLEX_SCHEMAS_DIR=/app/schemas \
    GRIDFLEX_DATA_DIR=/var/lib/gridflex \
    GRIDFLEX_WEB_HOST=0.0.0.0 \
    GRIDFLEX_LOG_FORMAT=json

USER 10001:10001

# telemetry's web port (/metrics, /health); later services publish their own.
EXPOSE 8101

ENTRYPOINT ["gridflex"]
CMD ["--help"]
