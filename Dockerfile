# One slim image for every obpipe service (ingestor, writer, web, jobs, simulator).
# Packaging comes from pyproject.toml (setuptools>=77, fetched from PyPI by pip's build
# isolation). The dependencies are built and installed in layers of their own, read from
# pyproject.toml alone, so a change to the code rebuilds only obpipe's own wheel.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" >requirements.txt \
 && pip wheel --no-cache-dir --wheel-dir /deps -r requirements.txt
COPY README.md ./
COPY stockbit stockbit
COPY pipeline pipeline
COPY ingestor ingestor
COPY writer writer
COPY jobs jobs
COPY web web
COPY simulator simulator
COPY obpipe obpipe
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 DATA_DIR=/data
RUN useradd --create-home --uid 10001 obpipe && mkdir -p /data && chown obpipe /data
# Everything that does not depend on the code comes first, so it stays cached (on a vfs
# engine every step copies the whole file system: a code change rebuilds as few as possible).
WORKDIR /home/obpipe
VOLUME ["/data"]
ENTRYPOINT ["obpipe"]
CMD ["--help"]
COPY --from=build /deps /deps
RUN pip install --no-cache-dir --no-index /deps/*.whl && rm -rf /deps
COPY --from=build /wheels /wheels
# --no-index: every dependency is already installed above; a missing one fails the build.
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
USER obpipe
