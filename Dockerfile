# llmctl serve in a container, on CPU. The model is not in the image: mount a run directory (or a folder made by
# `llmctl compress`) at /model when the container starts.
#
#   docker build -t llmctl .
#   docker run --rm -p 8000:8000 -v "$PWD/runs/summarization:/model:ro" llmctl
#
# Any other command works too: docker run --rm llmctl llmctl --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    TOKENIZERS_PARALLELISM=false

# The CPU build of torch first, so that the dependency range of llmctl does not pull a multi-GB CUDA build.
# TORCH_INDEX is the package index that holds the CPU wheels (PyTorch publishes one); pass it at build time:
#   docker build --build-arg TORCH_INDEX=<the CPU wheel index> -t llmctl .
# Left empty, pip's configured index is used.
ARG TORCH_INDEX=""
RUN if [ -n "$TORCH_INDEX" ]; then pip install "torch==2.13.0" --index-url "$TORCH_INDEX"; \
    else pip install "torch==2.13.0"; fi

WORKDIR /opt/llmctl
COPY pyproject.toml README.md ./
COPY llmctl ./llmctl
RUN pip install . && useradd --create-home --uid 1000 llmctl

USER llmctl
WORKDIR /home/llmctl
EXPOSE 8000
# SIGTERM (docker stop) finishes the requests in flight, then exits.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
CMD ["llmctl", "serve", "/model", "--host", "0.0.0.0", "--port", "8000"]
