# One image for the API and the GPU workers (docker-compose.yml runs both from it).
# torch from PyPI brings its own CUDA libraries, so the host only needs the NVIDIA driver and the
# container toolkit; the API process never touches CUDA.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine engine
COPY api api
COPY workers workers
COPY models models
COPY migrations migrations
COPY cli cli
COPY tokentree tokentree
RUN pip install ".[quant]" \
    && useradd --create-home --uid 1000 tokentree \
    && mkdir -p /cache/huggingface && chown tokentree /cache/huggingface

USER tokentree
EXPOSE 8000
CMD ["tokentree", "serve", "--host", "0.0.0.0", "--port", "8000"]
