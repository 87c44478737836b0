# keyledger: a slim image that runs `keyledger serve` as a non-root user.
# `keyledger serve` applies the database migrations on start, so no separate step is needed.

# The build stage makes the wheel with its hot paths compiled (KEYLEDGER_COMPILE=1: README,
# "A compiled build"); it needs a C compiler, which the image it builds does not carry.
FROM python:3.12 AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Only what the package needs (the embedded servers of `keyledger dev` are not installed:
# in a container, PostgreSQL and NATS are services of their own).
COPY pyproject.toml setup.py README.md /src/
COPY keyledger_client /src/keyledger_client
COPY events /src/events
COPY service /src/service
COPY projections /src/projections
RUN KEYLEDGER_COMPILE=1 pip wheel --no-deps --wheel-dir /wheels /src

FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin keyledger

USER 10001:10001
WORKDIR /tmp
ENV KEYLEDGER_HOST=0.0.0.0 \
    KEYLEDGER_PORT=8080
EXPOSE 8080

HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('KEYLEDGER_PORT', '8080'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status == 200 else 1)"]

# SIGTERM: stop accepting, finish in-flight requests, publish, flush, close (see service/http/app.py).
STOPSIGNAL SIGTERM
CMD ["keyledger", "serve"]
