# One image for every Bazar process (docs/contract.md §5): compose.yaml runs it five times, each
# container
# running `bazar serve SERVICE --config /etc/bazar/cluster.toml --name NAME` from the one
# cluster file in deploy/. Dependencies come from requirements.lock, hash-checked, wheels only
# (the slim image has no compiler), exactly as `make` installs them.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps --only-binary=:all: -r requirements.lock
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-deps --no-build-isolation . && rm -rf build src/*.egg-info

# Not root. /data is each process's data dir (a volume per container); the front end rewrites
# its cluster file when replicas are added or removed at runtime, so its directory is ours.
RUN useradd --system --uid 10001 --home-dir /data bazar \
    && mkdir -p /data /etc/bazar \
    && chown bazar:bazar /data /etc/bazar
COPY --chown=bazar:bazar deploy/cluster.toml /etc/bazar/cluster.toml
USER bazar
VOLUME ["/data"]
EXPOSE 8001 8002 8003 8004 8005

# The front end by default; compose.yaml gives each service its own command.
CMD ["bazar", "serve", "frontend", "--config", "/etc/bazar/cluster.toml", "--name", "frontend", "--host", "0.0.0.0"]
