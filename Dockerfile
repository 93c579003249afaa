# One image for both roles: `shardkeeper operator` and `shardkeeper shard`.
# BASE is any image with Python 3.11 as `python3` and its venv module: the public
# python:3.11-slim by default, or the bookworm base `make image` makes (docs/image.md).
# `make image` runs these same steps without an engine; keep the two in step.
ARG BASE=python:3.11-slim
FROM ${BASE} AS build
ARG UV_VERSION=0.13.9
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
COPY requirements.lock ./
RUN python3 -m venv --without-pip /opt/shardkeeper \
 && /opt/uv/bin/uv pip install --python /opt/shardkeeper/bin/python --no-cache -r requirements.lock
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/uv/bin/uv pip install --python /opt/shardkeeper/bin/python --no-cache --no-deps .

FROM ${BASE}
COPY --from=build /opt/shardkeeper /opt/shardkeeper
# explicit PATH: a base made by mmdebstrap sets none, and an empty $PATH would put "" on it
ENV PATH=/opt/shardkeeper/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1
# written directly, not with useradd: the mmdebstrap base has no passwd package
RUN echo "shardkeeper:x:65532:65532::/nonexistent:/usr/sbin/nologin" >> /etc/passwd \
 && echo "shardkeeper:x:65532:" >> /etc/group
USER 65532:65532
ENTRYPOINT ["shardkeeper"]
CMD ["--help"]
