# One image for both roles: `shardkeeper operator` and `shardkeeper shard`.
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir "uv==0.13.9"
COPY requirements.lock ./
RUN uv venv /opt/shardkeeper && uv pip install --python /opt/shardkeeper/bin/python --no-cache -r requirements.lock
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN uv pip install --python /opt/shardkeeper/bin/python --no-cache --no-deps .

FROM python:3.11-slim
COPY --from=build /opt/shardkeeper /opt/shardkeeper
ENV PATH=/opt/shardkeeper/bin:$PATH PYTHONUNBUFFERED=1
RUN useradd --uid 65532 --no-create-home shardkeeper
USER 65532
ENTRYPOINT ["shardkeeper"]
CMD ["--help"]
