# One slim image for every obpipe service (ingestor, writer, web, jobs, simulator).
# Packaging comes from pyproject.toml (setuptools>=77, fetched from PyPI by pip's build
# isolation: the build needs the network, hence `network: host` in docker-compose.yml).
# Steps are ordered so that a change to the code rebuilds as little as possible: on a vfs
# engine (the CI's) every step of an image copies that image's whole file system.

# The sources, gathered in an empty stage: these layers hold nothing but the code.
FROM scratch AS src
WORKDIR /src
COPY pyproject.toml README.md ./
COPY stockbit stockbit
COPY pipeline pipeline
COPY ingestor ingestor
COPY writer writer
COPY jobs jobs
COPY web web
COPY simulator simulator
COPY obpipe obpipe

# Wheels of the dependencies, read from pyproject.toml alone (cached until they change).
FROM python:3.11-slim AS deps
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" >requirements.txt \
 && pip wheel --no-cache-dir --wheel-dir /deps -r requirements.txt

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 DATA_DIR=/data
# /tokens: the token store's folder. A fresh named volume mounted there takes this owner and
# mode, so the non-root ingestor can create and rotate the file (0600) in it.
RUN useradd --create-home --uid 10001 obpipe && mkdir -p /data /tokens \
 && chown obpipe /data /tokens && chmod 700 /tokens
WORKDIR /home/obpipe
VOLUME ["/data"]
ENTRYPOINT ["obpipe"]
CMD ["--help"]
# --no-index: the dependencies come from the wheels built above, nothing else.
COPY --from=deps /deps /deps
RUN pip install --no-cache-dir --no-index /deps/*.whl && rm -rf /deps
# obpipe itself, built from pyproject.toml; --no-deps: every dependency is installed above.
COPY --from=src /src /tmp/obpipe
RUN pip install --no-cache-dir --no-deps /tmp/obpipe && rm -rf /tmp/obpipe
USER obpipe
