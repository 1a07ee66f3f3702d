# Image for both processes: the API (default command) and the worker
# (`python -m worker`). See docker-compose.yml for the full stack.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Pinned dependencies first: this layer is reused until the lock file changes.
COPY requirements.lock ./
RUN pip install -r requirements.lock

# The project itself, without re-resolving dependencies. The source tree stays in
# /app because migrations/ is read from beside the packages at startup.
COPY . .
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && useradd --system --uid 10001 --user-group --home-dir /app --no-create-home engine \
    && mkdir -p .data \
    && chown engine:engine .data

USER engine

# Containers must listen on every interface to be reachable through a published port.
ENV HOST=0.0.0.0 \
    PORT=3000

EXPOSE 3000

CMD ["python", "-m", "app"]
