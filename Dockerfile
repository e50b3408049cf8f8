# One slim image for every obpipe service (ingestor, writer, web, jobs, simulator).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY stockbit stockbit
COPY pipeline pipeline
COPY ingestor ingestor
COPY writer writer
COPY jobs jobs
COPY web web
COPY simulator simulator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 DATA_DIR=/data
RUN useradd --create-home --uid 10001 obpipe && mkdir -p /data && chown obpipe /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER obpipe
WORKDIR /home/obpipe
VOLUME ["/data"]
ENTRYPOINT ["obpipe"]
CMD ["--help"]
